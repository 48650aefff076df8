// Stands for the config.hpp of another rankfarm release: a kernel library built with it is
// refused by this one (tests/kernel_libraries).
#pragma once
#define RANKFARM_VERSION "0.0.9"
#define RANKFARM_GIT_REVISION "old"
