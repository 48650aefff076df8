# Spack recipe for rankfarm. Not yet built by Spack: its syntax, variants and CMake options
# are checked by tests/packaging/recipes.py against the CMakeLists.txt options. Use it from a
# Spack repository of your own, with a source tree you have (docs/install.md):
#   spack repo create myrepo && mkdir -p myrepo/packages/rankfarm
#   cp packaging/spack/package.py myrepo/packages/rankfarm/ && spack repo add myrepo
#   spack dev-build -d . rankfarm@0.1.0 +ofi ~verbs ^openmpi

from spack.package import *


class Rankfarm(CMakePackage):
    """A task farm and HPC kernels over MPI: many tasks (kernels, parameter sweeps, shell
    commands) on the ranks of an MPI job, every attempt journalled in SQLite so that a killed
    job resumes, results in HDF5; MPI+OpenMP kernels (stencil, CG, transpose, dgemm) as a
    library."""

    # No public release address yet: build from a source tree (spack dev-build / spack develop).
    version("0.1.0")

    # One variant per CMake option of CMakeLists.txt that a site chooses.
    variant("ofi", default=True, description="libfabric (ofi) transport backend (RANKFARM_ENABLE_OFI)")
    variant("verbs", default=True, description="verbs transport backend, rdma-core (RANKFARM_ENABLE_VERBS)")
    variant("tests", default=False, description="build the tests: GoogleTest and real mpirun runs (RANKFARM_ENABLE_TESTING)")

    depends_on("c", type="build")
    depends_on("cxx", type="build")
    depends_on("cmake@3.25:", type="build")
    depends_on("pkgconfig", type="build")

    depends_on("mpi")
    depends_on("hdf5+mpi")  # the results file; the parallel build, as with the MPI above
    depends_on("sqlite@3.35:")  # the journal
    depends_on("cli11@2.1:")
    depends_on("tomlplusplus@3:")
    depends_on("nlohmann-json@3.10:")
    depends_on("fmt@9:")
    depends_on("random123")
    depends_on("openblas")  # found with pkg-config openblas (the dgemm kernel's local products)
    depends_on("libpng")
    depends_on("hwloc@2:")
    depends_on("libfabric@1.9:", when="+ofi")
    depends_on("rdma-core", when="+verbs")
    depends_on("googletest", type=("build", "test"), when="+tests")

    def cmake_args(self):
        return [
            self.define_from_variant("RANKFARM_ENABLE_OFI", "ofi"),
            self.define_from_variant("RANKFARM_ENABLE_VERBS", "verbs"),
            self.define_from_variant("RANKFARM_ENABLE_TESTING", "tests"),
            # The Lmod module file asks for no MPI module: Spack's own modules carry that.
            self.define("RANKFARM_MODULE_MPI", ""),
        ]

    @run_after("install")
    @on_package_attributes(run_tests=True)
    def check_install(self):
        rankfarm = Executable(self.prefix.bin.rankfarm)
        rankfarm("--version")
        rankfarm("kernels")
