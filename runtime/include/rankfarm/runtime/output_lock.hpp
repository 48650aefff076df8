// rankfarm/runtime/output_lock.hpp — one live run per output directory.
//
//   auto lock = OutputLock::acquire(dir, lease_s, &note);   // rank 0, before the journal
//   ... run; every lease_s / 4 a thread renews the lease ...
//   if (lock->lost()) stop();          // another run took the directory (see below)
//   lock.reset();                      // released: the holder record is removed
//
//   OutputLock::check_free(dir, lease_s);   // `rankfarm run` before launch: throws if held
//
// Two files in the output directory:
//   .rankfarm.lock          never replaced; the holder keeps flock(LOCK_EX) on it for the run
//                           (released by the kernel when the process dies, even by kill -9)
//   .rankfarm.lock.holder   who holds it: host, boot id, pid, the pid's start time, start and
//                           renewal times (UTC epoch seconds), Slurm job id, and a random token
//                           that every rank reads to prove it sees the same directory
// A second run is refused when the flock is held, or when the holder record names a live
// holder: on this host (same host name and boot id) a process with that pid and start time;
// on another host a lease renewed less than `lease_s` seconds ago (clocks are assumed to agree
// to well under the lease, as NTP gives). A record left by a run that died (its process gone
// on this host, or its lease expired) is taken over. The record is created with link(2), which
// is atomic on local file systems, NFS and Lustre, so two starters never both write one.
// Where flock is not supported (Lustre without -o flock: ENOSYS) the lease alone guards the
// directory; where flock is node-local (Lustre -o localflock, NFS -o nolock) the record's
// lease guards it across nodes. A holder that finds the record is no longer its own (another
// run took the directory after its lease lapsed: the holder was stopped or cut off for longer
// than the lease) reports lost() and must stop dispatching.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

namespace rankfarm::runtime {

/// The holder of an output directory, as its record says.
struct LockHolder {
  std::string host;            ///< gethostname() of the holder
  std::string boot_id;         ///< /proc/sys/kernel/random/boot_id of the holder's host
  long pid = 0;                ///< the holding process (rank 0 of the run)
  std::uint64_t pid_start = 0; ///< its start time, clock ticks after boot (/proc/PID/stat field 22)
  double started_at = 0;       ///< when it took the lock, epoch seconds
  double renewed_at = 0;       ///< last lease renewal, epoch seconds
  std::string slurm_job;       ///< SLURM_JOB_ID of the holder, "" outside Slurm
  std::string token;           ///< random, per run: ranks compare it with rank 0's
};

/// "host n1, pid 1234, started 2026-12-01T06:00:00Z, Slurm job 77".
std::string describe(const LockHolder& holder);

/// Default lease, seconds: RANKFARM_LOCK_LEASE when set (checked by check_environment), else 60.
double lock_lease_from_env();

class OutputLock {
 public:
  /// Takes the lock of the existing directory `dir` for this process and starts renewing its
  /// lease every lease_s / 4. A live holder is waited for up to 3 s (one killed a moment ago
  /// may not have exited yet) before the refusal. Throws InputError(dir, 0, "--output", "another run holds ...")
  /// naming the holder when a live run holds it, std::runtime_error for file-system errors.
  /// `note` (may be null) is set to a sentence when a stale lock was taken over or when flock
  /// is not supported here, else cleared.
  static std::unique_ptr<OutputLock> acquire(const std::string& dir, double lease_s, std::string* note);
  /// Who holds `dir` now, changing nothing: nullopt when a run could take it (no record, or
  /// a stale one). For `rankfarm status`.
  static std::optional<LockHolder> probe(const std::string& dir, double lease_s);
  /// Throws the InputError of acquire() when probe() finds a live holder, after waiting for it
  /// up to 3 s as acquire() does. For checks before launch.
  static void check_free(const std::string& dir, double lease_s);
  /// The holder record of `dir` as written, live or stale; nullopt when there is none.
  static std::optional<LockHolder> read_holder(const std::string& dir);
  /// Path of the holder record in `dir`.
  static std::string holder_path(const std::string& dir);

  ~OutputLock();  ///< stops renewing, removes the record (if still ours), drops the flock
  OutputLock(const OutputLock&) = delete;
  OutputLock& operator=(const OutputLock&) = delete;

  /// This run's record as first written (renewals change only the file's renewed_at).
  const LockHolder& holder() const { return me_; }
  /// True once a renewal found the record missing or naming another holder.
  bool lost() const { return lost_.load(); }
  /// Why lost() is true (empty otherwise).
  std::string lost_reason() const;

 private:
  OutputLock(std::string dir, int fd, double lease_s, LockHolder me);
  static std::unique_ptr<OutputLock> acquire_once(const std::string& dir, double lease_s, std::string* note);
  void renew_loop();
  std::string dir_;
  int fd_ = -1;
  double lease_s_;
  LockHolder me_;
  std::atomic<bool> lost_{false};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::string lost_reason_;
  std::thread renewer_;
};

}  // namespace rankfarm::runtime
