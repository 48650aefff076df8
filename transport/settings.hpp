// Private: every RANKFARM_* variable the transport reads, as one declarative table per backend
// (after UCX's uct_tcp_iface_config_table). The same entries parse the values (backends),
// check them before a run starts (the runtime, through probe.hpp) and list them (`rankfarm
// probe`), so a default or a range is written once.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace rankfarm::transport::detail {

enum class SettingKind {
  Text,     ///< any string
  Count,    ///< a whole number in [lo, hi]
  Seconds,  ///< a number of seconds in (lo, hi]
};

struct SettingSpec {
  const char* name;           ///< e.g. "RANKFARM_VERBS_TOS"
  const char* backend;        ///< "verbs", "ofi", "tcp", or "" (the choice of backend)
  SettingKind kind;
  const char* default_value;  ///< what applies when unset ("" for none; numbers parse it)
  const char* default_text;   ///< the default as `probe` describes it (nullptr: default_value)
  double lo, hi;              ///< numbers: the allowed range
  const char* expected;       ///< numbers: what a valid value is, for errors
  const char* meaning;
};

/// The tables of all backends, in `probe` order.
const std::vector<SettingSpec>& settings();

/// The entry for `name`; throws std::logic_error for a name not in the tables.
const SettingSpec& setting_spec(const char* name);

/// Why `value` is not a valid value of `spec`: "'VALUE': expected ...", or "" when it is.
std::string setting_problem(const SettingSpec& spec, const std::string& value);

/// The variable's value, or its default when unset or empty.
std::string setting_text(const char* name);

/// A Count variable's value (or default); throws TransportError "BACKEND: NAME: 'VALUE':
/// expected ..." when malformed.
std::uint64_t setting_count(const char* name);

/// A Seconds variable's value (or default), checked as setting_count().
double setting_seconds(const char* name);

}  // namespace rankfarm::transport::detail
