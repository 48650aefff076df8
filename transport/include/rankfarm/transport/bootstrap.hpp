// rankfarm/transport/bootstrap.hpp — the control plane a transport uses to set itself up.
//
// Backends exchange addresses and agree on choices through this interface and never spawn
// processes or call MPI themselves (the split of GASNet-EX's spawner table). MpiBootstrap
// implements it over an MPI communicator.
//
//   rankfarm::transport::MpiBootstrap boot(MPI_COMM_WORLD);
//   std::vector<std::string> all = boot.allgather(my_address_blob);   // all[r]: rank r's blob
#pragma once

#include <mpi.h>

#include <memory>
#include <string>
#include <vector>

namespace rankfarm::transport {

class Bootstrap {
 public:
  virtual ~Bootstrap() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  /// Every rank's blob, indexed by rank (collective; blobs may differ in length).
  virtual std::vector<std::string> allgather(const std::string& mine) = 0;
  /// Rank `root`'s value on every rank (collective).
  virtual std::string broadcast(const std::string& value, int root) = 0;
  /// The minimum of `value` over all ranks (collective): how ranks agree on a choice.
  virtual int allreduce_min(int value) = 0;
  virtual void barrier() = 0;
  /// Collective: the ranks that pass the same `color` form a new bootstrap, ranked in the
  /// order of their ranks here.
  virtual std::unique_ptr<Bootstrap> split(int color) = 0;
  /// Host name of every rank, indexed by rank (collective); ranks with equal names share a node.
  /// RANKFARM_NODE_NAME, when set, replaces this rank's host name: for containers that share one
  /// name, and for tests that make one machine look like several nodes.
  std::vector<std::string> host_names();
};

class MpiBootstrap final : public Bootstrap {
 public:
  /// Uses (does not duplicate or free) `comm`, which must outlive this object.
  explicit MpiBootstrap(MPI_Comm comm);
  ~MpiBootstrap() override;
  MpiBootstrap(const MpiBootstrap&) = delete;
  MpiBootstrap& operator=(const MpiBootstrap&) = delete;
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::vector<std::string> allgather(const std::string& mine) override;
  std::string broadcast(const std::string& value, int root) override;
  int allreduce_min(int value) override;
  void barrier() override;
  /// MPI_Comm_split; the new bootstrap owns (and frees) its communicator.
  std::unique_ptr<Bootstrap> split(int color) override;

 private:
  MPI_Comm comm_;
  bool owned_ = false;
  int rank_ = 0, size_ = 1;
};

}  // namespace rankfarm::transport
