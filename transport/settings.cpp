#include "settings.hpp"

#include <fmt/format.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <stdexcept>

#include "rankfarm/transport/probe.hpp"
#include "rankfarm/transport/status.hpp"

namespace rankfarm::transport {
namespace detail {
namespace {

constexpr double kMaxCount = 4611686018427387904.0;  // 2^62

// The choice of backend, and where ranks are.
const SettingSpec kCommon[] = {
    {"RANKFARM_TRANSPORT", "", SettingKind::Text, "auto", nullptr, 0, 0, "",
     "auto, or force one backend: verbs, ofi, tcp, shm (a forced backend never falls back)"},
    {"RANKFARM_NODE_NAME", "", SettingKind::Text, "", "the host name", 0, 0, "",
     "which ranks share a node (for shm); set it where containers share a host name"},
};

const SettingSpec kVerbs[] = {
    {"RANKFARM_VERBS_DEVICE", "verbs", SettingKind::Text, "", "the device serving the first usable address", 0, 0, "",
     "RDMA device for verbs, e.g. mlx5_0"},
    {"RANKFARM_VERBS_ADDR", "verbs", SettingKind::Text, "",
     "the first address (IPv4, then IPv6; loopback last) of an up interface whose RDMA port is ACTIVE", 0, 0, "",
     "address (IPv4 or IPv6) rdma_cm listens on for verbs"},
    {"RANKFARM_VERBS_TOS", "verbs", SettingKind::Count, "106", nullptr, 0, 255, "a type of service from 0 to 255",
     "IP type of service of verbs connections on RoCE (106: DSCP 26, ECN capable)"},
    {"RANKFARM_VERBS_ODP", "verbs", SettingKind::Count, "0", nullptr, 0, 1, "0 or 1",
     "1: register all memory once with implicit on-demand paging (devices with implicit ODP, e.g. mlx5); buffers outside "
     "registered regions then need no registration per transfer"},
    {"RANKFARM_VERBS_CONNECT_TIMEOUT", "verbs", SettingKind::Seconds, "30", nullptr, 0, 3600,
     "seconds, more than 0 and at most 3600", "how long a verbs connection is retried (with back-off) before its work fails"},
};

const SettingSpec kOfi[] = {
    {"RANKFARM_OFI_PROVIDER", "ofi", SettingKind::Text, "", "best of verbs;ofi_rxm, efa, cxi, psm3, opx, tcp;ofi_rxm, shm, udp;ofi_rxd",
     0, 0, "", "force one libfabric provider for ofi"},
    {"RANKFARM_OFI_TAG_BITS", "ofi", SettingKind::Count, "64", "what the provider's mem_tag_format allows", 1, 64, "1 to 64",
     "use at most this many tag bits (tests; a provider that misreports its tag format)"},
};

const SettingSpec kTcp[] = {
    {"RANKFARM_TCP_ADDR", "tcp", SettingKind::Text, "", "127.0.0.1 on one node, else the first up non-loopback interface", 0, 0, "",
     "IPv4 address tcp listens on"},
    {"RANKFARM_TCP_IF", "tcp", SettingKind::Text, "", "(see RANKFARM_TCP_ADDR)", 0, 0, "", "interface whose IPv4 address tcp listens on"},
    {"RANKFARM_TCP_MAX_MESSAGE", "tcp", SettingKind::Count, "1073741824", nullptr, 1, kMaxCount, "a number of bytes from 1 to 2^62",
     "largest message or put/get in bytes tcp accepts in one frame"},
    {"RANKFARM_TCP_MAX_UNEXPECTED", "tcp", SettingKind::Count, "1073741824", nullptr, 1, kMaxCount, "a number of bytes from 1 to 2^62",
     "bytes of not yet received messages tcp keeps per rank"},
};

template <std::size_t N>
void append(std::vector<SettingSpec>& out, const SettingSpec (&table)[N]) {
  for (const auto& s : table) out.push_back(s);
}

std::vector<SettingSpec> all() {
  std::vector<SettingSpec> out;
  out.reserve(16);
  append(out, kCommon);
  append(out, kVerbs);
  append(out, kOfi);
  append(out, kTcp);
  return out;
}

const char* raw(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : nullptr;
}

[[noreturn]] void bad(const SettingSpec& s, const std::string& value) {
  throw TransportError(fmt::format("{}: {}: {}", *s.backend ? s.backend : "transport", s.name, setting_problem(s, value)));
}

}  // namespace

const std::vector<SettingSpec>& settings() {
  static const std::vector<SettingSpec> table = all();
  return table;
}

const SettingSpec& setting_spec(const char* name) {
  for (const auto& s : settings())
    if (std::string(s.name) == name) return s;
  throw std::logic_error(fmt::format("transport setting {} is not in the table", name));
}

std::string setting_problem(const SettingSpec& spec, const std::string& value) {
  if (spec.kind == SettingKind::Text) return {};
  std::string why = fmt::format("'{}': expected {}", value, spec.expected);
  char* end = nullptr;
  errno = 0;
  const double x = std::strtod(value.c_str(), &end);
  if (value.empty() || *end != '\0' || errno != 0 || std::isnan(x)) return why;
  if (spec.kind == SettingKind::Count && (x != std::floor(x) || x < spec.lo || x > spec.hi)) return why;
  if (spec.kind == SettingKind::Seconds && (x <= spec.lo || x > spec.hi)) return why;
  return {};
}

std::string setting_text(const char* name) {
  const SettingSpec& s = setting_spec(name);
  const char* v = raw(name);
  return v ? v : s.default_value;
}

std::uint64_t setting_count(const char* name) {
  const SettingSpec& s = setting_spec(name);
  const std::string v = setting_text(name);
  if (!setting_problem(s, v).empty()) bad(s, v);
  return std::strtoull(v.c_str(), nullptr, 10);
}

double setting_seconds(const char* name) {
  const SettingSpec& s = setting_spec(name);
  const std::string v = setting_text(name);
  if (!setting_problem(s, v).empty()) bad(s, v);
  return std::strtod(v.c_str(), nullptr);
}

}  // namespace detail

std::vector<TransportSetting> transport_settings() {
  std::vector<TransportSetting> out;
  for (const auto& s : detail::settings()) {
    const char* v = std::getenv(s.name);
    out.push_back({s.name, v ? v : "", s.default_text ? s.default_text : s.default_value, s.meaning});
  }
  return out;
}

std::pair<std::string, std::string> first_bad_transport_setting() {
  for (const auto& s : detail::settings()) {
    const char* v = std::getenv(s.name);
    if (v == nullptr || *v == '\0') continue;
    if (std::string why = detail::setting_problem(s, v); !why.empty()) return {s.name, why};
  }
  return {};
}

}  // namespace rankfarm::transport
