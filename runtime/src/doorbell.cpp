#include "doorbell.hpp"

#include <fcntl.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fmt/format.h>
#include <random>

namespace rankfarm::runtime::detail {
namespace {

static_assert(sizeof(std::atomic<std::uint32_t>) == 4 && std::atomic<std::uint32_t>::is_always_lock_free,
              "futex(2) needs a plain 32-bit word");
constexpr std::size_t kMapBytes = 4096;

std::uint32_t* word(std::atomic<std::uint32_t>& a) { return reinterpret_cast<std::uint32_t*>(&a); }

std::string bell_name(std::uint64_t token, int rank) { return fmt::format("/rankfarm-bell-{:016x}-{}", token, rank); }

void* map_bell(const std::string& name, bool create) {
  const int fd = ::shm_open(name.c_str(), create ? (O_CREAT | O_EXCL | O_RDWR) : O_RDWR, 0600);
  if (fd < 0) return nullptr;
  if (create && ::ftruncate(fd, kMapBytes) != 0) {
    ::close(fd);
    ::shm_unlink(name.c_str());
    return nullptr;
  }
  void* p = ::mmap(nullptr, kMapBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) {
    if (create) ::shm_unlink(name.c_str());
    return nullptr;
  }
  return p;
}

}  // namespace

Doorbell::Doorbell(MPI_Comm comm, int rank, int size, const std::vector<int>& parent) : peers_(static_cast<std::size_t>(size), nullptr) {
  const char* env = std::getenv("RANKFARM_DOORBELL");
  std::int32_t on = env != nullptr && std::string(env) == "0" ? 0 : 1;
  std::uint64_t token = 0;
  if (rank == 0) token = std::random_device{}() | (std::uint64_t{std::random_device{}()} << 32);
  MPI_Bcast(&on, 1, MPI_INT32_T, 0, comm);
  MPI_Bcast(&token, 1, MPI_UINT64_T, 0, comm);
  if (on == 0 || size < 2) {
    note_ = on == 0 ? "off (RANKFARM_DOORBELL=0): idle ranks poll with a timed back-off" : "";
    return;
  }
  // Every rank makes its bell; then maps those of the ranks it talks to: its parent and its
  // children (the relation is symmetric, so each pair agrees below on who can ring whom).
  if (void* p = map_bell(bell_name(token, rank), true)) {
    maps_.push_back(p);
    mine_ = new (p) Bell();
  }
  MPI_Barrier(comm);
  std::vector<int> talk;
  if (rank != 0) talk.push_back(parent[static_cast<std::size_t>(rank)]);
  for (int r = 1; r < size; ++r)
    if (parent[static_cast<std::size_t>(r)] == rank) talk.push_back(r);
  std::vector<std::int32_t> mapped(talk.size(), 0), theirs(talk.size(), 0);
  for (std::size_t i = 0; i < talk.size(); ++i)
    if (void* p = map_bell(bell_name(token, talk[i]), false)) {
      maps_.push_back(p);
      peers_[static_cast<std::size_t>(talk[i])] = static_cast<Bell*>(p);
      mapped[i] = 1;
    }
  // This rank is wakeable when every rank that posts to it can ring it.
  std::vector<MPI_Request> reqs(2 * talk.size());
  for (std::size_t i = 0; i < talk.size(); ++i) {
    MPI_Irecv(&theirs[i], 1, MPI_INT32_T, talk[i], 77, comm, &reqs[2 * i]);
    MPI_Isend(&mapped[i], 1, MPI_INT32_T, talk[i], 77, comm, &reqs[2 * i + 1]);
  }
  MPI_Waitall(static_cast<int>(reqs.size()), reqs.data(), MPI_STATUSES_IGNORE);
  wakeable_ = mine_ != nullptr && std::all_of(theirs.begin(), theirs.end(), [](std::int32_t v) { return v != 0; });
  std::int32_t w = wakeable_ ? 1 : 0, wakeable_ranks = 0;
  MPI_Reduce(&w, &wakeable_ranks, 1, MPI_INT32_T, MPI_SUM, 0, comm);
  MPI_Barrier(comm);  // every bell that can be mapped is: the names can go
  if (mine_ != nullptr) ::shm_unlink(bell_name(token, rank).c_str());
  if (rank == 0)
    note_ = wakeable_ranks == size
                ? fmt::format("futex doorbells: every rank wakes when a message is posted to it")
                : fmt::format("futex doorbells on {} of {} ranks (the others share no host with a rank that posts to them, or "
                              "could not make one: they poll with a timed back-off)",
                              wakeable_ranks, size);
}

Doorbell::~Doorbell() {
  for (void* p : maps_) ::munmap(p, kMapBytes);
}

void Doorbell::posted(int peer, bool wake) {
  Bell* b = peers_[static_cast<std::size_t>(peer)];
  if (b == nullptr) return;
  b->posted.fetch_add(1, std::memory_order_seq_cst);
  if (!wake) return;
  std::atomic_thread_fence(std::memory_order_seq_cst);  // the count before the flag's load
  if (b->sleeping.load(std::memory_order_seq_cst) == 0 || b->sleeping.exchange(0, std::memory_order_seq_cst) == 0) return;
  b->seq.fetch_add(1, std::memory_order_seq_cst);
  ::syscall(SYS_futex, word(b->seq), FUTEX_WAKE, 1, nullptr, nullptr, 0);
}

bool Doorbell::sleep(std::chrono::nanoseconds timeout) {
  if (!wakeable_) return false;
  const std::uint32_t seen = mine_->seq.load(std::memory_order_seq_cst);
  mine_->sleeping.store(1, std::memory_order_seq_cst);
  std::atomic_thread_fence(std::memory_order_seq_cst);  // the flag before the count's load
  if (pending()) {
    mine_->sleeping.store(0, std::memory_order_relaxed);
    return true;
  }
  const auto ns = std::max<std::int64_t>(timeout.count(), 1000);
  timespec ts{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
  // Returns at a ring, at the timeout, at a signal (EINTR: stop signals are seen at once), or
  // at once when a ring came between the load of `seen` and here (EAGAIN).
  ::syscall(SYS_futex, word(mine_->seq), FUTEX_WAIT, seen, &ts, nullptr, 0);
  mine_->sleeping.store(0, std::memory_order_relaxed);
  return true;
}

void post(const std::vector<char>& bytes, int dest, int tag, MPI_Comm comm, Doorbell* bell, bool wake) {
  MPI_Request req;
  MPI_Isend(bytes.data(), static_cast<int>(bytes.size()), MPI_BYTE, dest, tag, comm, &req);
  if (bell != nullptr) bell->posted(dest, wake);
  MPI_Wait(&req, MPI_STATUS_IGNORE);
}

}  // namespace rankfarm::runtime::detail
