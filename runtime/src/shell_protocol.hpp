// Private: the messages between a rank and its rankfarm-shepherd, over a SOCK_SEQPACKET socket
// (one message per send, boundaries kept), encoded and decoded here for both sides. Header
// only, with no dependency but libc, because the shepherd is small on purpose.
//
//   RUN     u32 kRun, then strings (u32 length + bytes): the command, then "NAME=value" for each
//           task variable; with three file descriptors (SCM_RIGHTS): stdin, stdout, stderr
//   RUNCPU  u32 kRunCpus, u32 n, n x u32 CPU, then as RUN: the command runs with that CPU
//           affinity (a task's cores)
//   SIGNAL  Signal{kSignal, N}: signal the running task's process group with N
//   DONE    Done{kDone, 0, wait status, errno of a failed start (0: started)}
#pragma once

#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace rankfarm::runtime::shell_protocol {

constexpr std::uint32_t kRun = 0x4e555246;     // "FRUN"
constexpr std::uint32_t kRunCpus = 0x43555246; // "FRUC"
constexpr std::uint32_t kSignal = 0x47495346;  // "FSIG"
constexpr std::uint32_t kDone = 0x4e4f4446;    // "FDON"
/// The largest RUN message: a single argument of execve(2) may not exceed 128 KiB
/// (MAX_ARG_STRLEN) anyway; the task's variables fit in the rest.
constexpr std::size_t kMaxMessage = std::size_t{192} * 1024;

struct Signal {
  std::uint32_t op;
  std::int32_t signal;
};

struct Done {
  std::uint32_t op;
  std::uint32_t reserved;
  std::int32_t wait_status;  ///< as waitpid(2) gives it
  std::int32_t spawn_errno;  ///< 0, or why /bin/sh could not be started
};

inline void encode_string(const std::string& s, std::vector<char>* out) {
  const auto n = static_cast<std::uint32_t>(s.size());
  const char* p = reinterpret_cast<const char*>(&n);
  out->insert(out->end(), p, p + sizeof n);
  out->insert(out->end(), s.begin(), s.end());
}

/// Strings encoded one after the other by encode_string; false when `size` bytes are not that.
inline bool decode_strings(const char* data, std::size_t size, std::vector<std::string>* out) {
  std::size_t at = 0;
  while (at < size) {
    std::uint32_t n = 0;
    if (size - at < sizeof n) return false;
    std::memcpy(&n, data + at, sizeof n);
    at += sizeof n;
    if (size - at < n) return false;
    out->emplace_back(data + at, n);
    at += n;
  }
  return true;
}

/// sendmsg(2) of one message with `nfds` descriptors attached (0 for none).
inline ssize_t send_with_fds(int sock, const void* data, std::size_t size, const int* fds, int nfds) {
  iovec iov{const_cast<void*>(data), size};
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 3)] = {};
  if (nfds > 0) {
    m.msg_control = control;
    m.msg_controllen = CMSG_SPACE(sizeof(int) * static_cast<std::size_t>(nfds));
    cmsghdr* c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * static_cast<std::size_t>(nfds));
    std::memcpy(CMSG_DATA(c), fds, sizeof(int) * static_cast<std::size_t>(nfds));
  }
  ssize_t n;
  while ((n = sendmsg(sock, &m, MSG_NOSIGNAL)) < 0 && errno == EINTR) {
  }
  return n;
}

/// recvmsg(2) of one message; descriptors that came with it are stored in `fds` (up to
/// `max_fds`, the rest closed), received close-on-exec.
inline ssize_t recv_with_fds(int sock, void* data, std::size_t size, int* fds, int max_fds) {
  iovec iov{data, size};
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 8)] = {};
  m.msg_control = control;
  m.msg_controllen = sizeof control;
  const ssize_t n = recvmsg(sock, &m, MSG_CMSG_CLOEXEC);
  if (n < 0) return n;
  for (cmsghdr* c = CMSG_FIRSTHDR(&m); c != nullptr; c = CMSG_NXTHDR(&m, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < count; ++i) {
      int fd = -1;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      if (static_cast<int>(i) < max_fds) fds[i] = fd;
      else ::close(fd);
    }
  }
  return n;
}

}  // namespace rankfarm::runtime::shell_protocol
