#include "process_watch.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

namespace rankfarm::runtime::detail {

std::string host_key() {
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  char ns[128] = {0};
  const ssize_t n = ::readlink("/proc/self/ns/pid", ns, sizeof ns - 1);
  if (n <= 0) return {};
  return std::string(host) + "/" + std::string(ns, static_cast<std::size_t>(n));
}

ProcessWatch::ProcessWatch(MPI_Comm comm, const Topology& topo, int rank) {
  constexpr int kTag = 79;
  constexpr std::size_t kKey = 192;
  const std::string mine = host_key();
  // pid (as text) and host key in one fixed-size record.
  auto record = [&](int pid, const std::string& key) {
    std::vector<char> r(kKey + 16, '\0');
    std::memcpy(r.data(), &pid, sizeof pid);
    std::memcpy(r.data() + 16, key.data(), std::min(key.size(), kKey - 1));
    return r;
  };
  const std::vector<int> children = topo.children(rank);
  std::vector<std::vector<char>> got(children.size(), std::vector<char>(kKey + 16, '\0'));
  std::vector<MPI_Request> reqs;
  for (std::size_t i = 0; i < children.size(); ++i) {
    reqs.emplace_back();
    MPI_Irecv(got[i].data(), static_cast<int>(kKey + 16), MPI_BYTE, children[i], kTag, comm, &reqs.back());
  }
  std::vector<char> out = record(static_cast<int>(::getpid()), mine);
  std::vector<char> from_parent(kKey + 16, '\0');
  const int parent = rank == 0 ? -1 : topo.parent[static_cast<std::size_t>(rank)];
  if (parent >= 0) {
    reqs.emplace_back();
    MPI_Isend(out.data(), static_cast<int>(out.size()), MPI_BYTE, parent, kTag, comm, &reqs.back());
    reqs.emplace_back();
    MPI_Irecv(from_parent.data(), static_cast<int>(from_parent.size()), MPI_BYTE, parent, kTag + 1, comm, &reqs.back());
  }
  for (int c : children) {
    reqs.emplace_back();
    MPI_Isend(out.data(), static_cast<int>(out.size()), MPI_BYTE, c, kTag + 1, comm, &reqs.back());
  }
  MPI_Waitall(static_cast<int>(reqs.size()), reqs.data(), MPI_STATUSES_IGNORE);
  if (parent >= 0 && !mine.empty() && std::string(from_parent.data() + 16) == mine) {
    std::memcpy(&parent_pid_, from_parent.data(), sizeof parent_pid_);
    parent_rank_ = parent;
  }
  for (std::size_t i = 0; i < children.size(); ++i) {
    int pid = 0;
    std::memcpy(&pid, got[i].data(), sizeof pid);
    const std::string key(got[i].data() + 16);
    if (mine.empty() || key != mine || pid <= 0) continue;
    rank_.push_back(children[i]);
    pid_.push_back(pid);
    ended_.push_back(0);
  }
}

bool ProcessWatch::parent_ended() {
  if (parent_pid_ <= 0) return false;
  const auto now = std::chrono::steady_clock::now();
  if (now - parent_last_ < std::chrono::milliseconds(200)) return parent_gone_;
  parent_last_ = now;
  parent_gone_ = parent_gone_ || (::kill(parent_pid_, 0) != 0 && errno == ESRCH);
  return parent_gone_;
}

bool ProcessWatch::watched(int child) const { return std::find(rank_.begin(), rank_.end(), child) != rank_.end(); }

std::vector<int> ProcessWatch::ended() {
  std::vector<int> out;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_ < std::chrono::milliseconds(100)) return out;
  last_ = now;
  for (std::size_t i = 0; i < pid_.size(); ++i) {
    if (ended_[i] || ::kill(pid_[i], 0) == 0 || errno != ESRCH) continue;
    ended_[i] = 1;
    out.push_back(rank_[i]);
  }
  return out;
}

}  // namespace rankfarm::runtime::detail
