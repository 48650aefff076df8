// The stencil's one-sided halo exchange over rankfarm::transport: see put_halo.hpp.
#include "rankfarm/halo/put_halo.hpp"

#include <cstdint>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "rankfarm/transport/bootstrap.hpp"
#include "rankfarm/transport/transport.hpp"

namespace rankfarm::halo {
namespace {

namespace tp = rankfarm::transport;


// Halo exchange by transport puts (see stencil.hpp). Neighbour ranks are in the Cartesian
// communicator; a missing neighbour is MPI_PROC_NULL.
class TransportPutHalo final : public kernels::PutHaloExchanger {
 public:
  // Notice tags: 4 * step + where the data landed at the receiver.
  enum Where : std::uint64_t { kTopHalo = 0, kBottomHalo = 1, kLeftZone = 2, kRightZone = 3 };

  explicit TransportPutHalo(const kernels::PutHaloSetup& s)
      : boot_(s.cart), b_(s.block), up_rows_(s.up_rows), up_(s.up), down_(s.down), left_(s.left), right_(s.right) {
    std::vector<double>& u = *s.u;
    std::vector<double>& next = *s.next;
    t_ = tp::open_transport(boot_, s.transport);
    puts_.reserve(2);  // Requests must not move while in flight
    const std::size_t cells = u.size() * sizeof(double);
    field_[0] = u.data();
    field_[1] = next.data();
    const std::size_t col = static_cast<std::size_t>(b_.rows + 2);
    zone_.assign(4 * col, 0.0);  // [parity][left-in, right-in][rows + 2]
    pack_.assign(2 * col, 0.0);  // [to left, to right][rows + 2]
    for (int k = 0; k < 2; ++k) mr_[k] = t_->register_memory(field_[k], cells);
    mr_zone_ = t_->register_memory(zone_.data(), zone_.size() * sizeof(double));
    mr_pack_ = t_->register_memory(pack_.data(), pack_.size() * sizeof(double));
    for (int k = 0; k < 2; ++k) remote_field_[k] = tp::exchange(boot_, mr_[k].remote());
    remote_zone_ = tp::exchange(boot_, mr_zone_.remote());
  }
  ~TransportPutHalo() override {
    // No neighbour may still write into our regions. (When unwinding from an error, other ranks
    // may never arrive: skip the barrier; the job is failing anyway.)
    if (std::uncaught_exceptions() == 0) boot_.barrier();
    for (auto* mr : {&mr_[0], &mr_[1], &mr_zone_, &mr_pack_}) t_->deregister_memory(*mr);
  }
  std::string backend() const override { return t_->name(); }

  // Phase 1: my first and last owned rows into my neighbours' halo rows (of the buffer in use,
  // the same parity on every rank), then notices. Returns with the puts in flight.
  void start_rows(const std::vector<double>& u, int step) override {
    step_ = step;
    parity_ = u.data() == field_[0] ? 0 : 1;
    const std::size_t row = static_cast<std::size_t>(b_.cols) * sizeof(double);
    puts_.clear();
    if (up_ != MPI_PROC_NULL)  // into up's bottom halo row (its row up_rows_)
      put(up_, &u[static_cast<std::size_t>(1 * b_.stride + 1)], row, remote_field_[parity_][up_],
          static_cast<std::uint64_t>((up_rows_ + 1) * b_.stride + 1) * sizeof(double), kBottomHalo);
    if (down_ != MPI_PROC_NULL)  // into down's top halo row (its row -1)
      put(down_, &u[static_cast<std::size_t>(b_.rows * b_.stride + 1)], row, remote_field_[parity_][down_],
          sizeof(double), kTopHalo);
  }
  void finish_rows() override {
    complete_puts();
    wait_notices({{up_, kTopHalo}, {down_, kBottomHalo}});
  }
  // Phase 2: whole-height edge columns, packed, into the neighbours' landing zones; then my
  // zones unpacked into my halo columns.
  void columns(std::vector<double>& u) override {
    const std::size_t col = static_cast<std::size_t>(b_.rows + 2);
    const std::size_t bytes = col * sizeof(double);
    const std::uint64_t zone = static_cast<std::uint64_t>(parity_) * 2 * bytes;
    puts_.clear();
    if (left_ != MPI_PROC_NULL) {
      for (std::size_t i = 0; i < col; ++i) pack_[i] = u[i * static_cast<std::size_t>(b_.stride) + 1];
      put(left_, pack_.data(), bytes, remote_zone_[left_], zone + bytes, kRightZone);
    }
    if (right_ != MPI_PROC_NULL) {
      for (std::size_t i = 0; i < col; ++i) pack_[col + i] = u[i * static_cast<std::size_t>(b_.stride) + static_cast<std::size_t>(b_.cols)];
      put(right_, pack_.data() + col, bytes, remote_zone_[right_], zone, kLeftZone);
    }
    complete_puts();
    wait_notices({{left_, kLeftZone}, {right_, kRightZone}});
    const double* in = zone_.data() + static_cast<std::size_t>(parity_) * 2 * col;
    if (left_ != MPI_PROC_NULL)
      for (std::size_t i = 0; i < col; ++i) u[i * static_cast<std::size_t>(b_.stride)] = in[i];
    if (right_ != MPI_PROC_NULL)
      for (std::size_t i = 0; i < col; ++i) u[i * static_cast<std::size_t>(b_.stride) + static_cast<std::size_t>(b_.cols) + 1] = in[col + i];
  }

 private:
  struct Pending {
    int peer;
    Where where;
    tp::Request req;
    std::uint64_t notice = 0;  // the step, sent once the put is complete
  };
  std::uint64_t tag(Where w) const { return 4 * static_cast<std::uint64_t>(step_) + w; }
  void put(int peer, const void* src, std::size_t len, const tp::RemoteRegion& dst, std::uint64_t offset, Where w) {
    puts_.push_back(Pending{peer, w, {}});
    check(t_->put(peer, src, len, dst, offset, &puts_.back().req), puts_.back().req, "put");
  }
  void complete_puts() {
    for (auto& p : puts_) check(t_->wait(p.req), p.req, "put");
    // The data is in place at each neighbour: tell it (8 bytes: the step).
    for (auto& p : puts_) {
      p.notice = static_cast<std::uint64_t>(step_);
      p.req = {};
      check(t_->send(p.peer, tag(p.where), &p.notice, sizeof p.notice, &p.req), p.req, "notice");
    }
    for (auto& p : puts_) check(t_->wait(p.req), p.req, "notice");
  }
  void wait_notices(std::initializer_list<std::pair<int, Where>> from) {
    tp::Request r[2];
    std::uint64_t got[2] = {0, 0};
    int k = 0;
    for (const auto& [peer, where] : from) {
      if (peer != MPI_PROC_NULL)
        check(t_->recv(peer, tag(where), &got[k], sizeof got[k], &r[k]), r[k], "notice");
      ++k;
    }
    k = 0;
    for (const auto& [peer, where] : from) {
      if (peer != MPI_PROC_NULL) {
        check(t_->wait(r[k]), r[k], "notice");
        if (got[k] != static_cast<std::uint64_t>(step_))
          throw std::runtime_error("stencil: halo notice from rank " + std::to_string(peer) + " for step " +
                                   std::to_string(got[k]) + ", expected " + std::to_string(step_));
      }
      ++k;
    }
  }
  void check(tp::Status s, const tp::Request& r, const char* what) const {
    if (s == tp::Status::Ok || s == tp::Status::InProgress) return;
    throw std::runtime_error(std::string("stencil: halo ") + what + " through " + t_->name() + " failed: " +
                             (r.error.empty() ? tp::to_string(s) : r.error));
  }

  tp::MpiBootstrap boot_;
  std::unique_ptr<tp::Transport> t_;
  kernels::HaloBlock b_;
  std::int64_t up_rows_;
  int up_, down_, left_, right_;
  double* field_[2] = {nullptr, nullptr};
  std::vector<double> zone_, pack_;
  tp::MemoryRegion mr_[2], mr_zone_, mr_pack_;
  std::vector<tp::RemoteRegion> remote_field_[2], remote_zone_;
  std::vector<Pending> puts_;
  int step_ = 0, parity_ = 0;
};

}  // namespace

kernels::PutHaloFactory transport_put_halo() {
  return [](const kernels::PutHaloSetup& s) -> std::unique_ptr<kernels::PutHaloExchanger> {
    return std::make_unique<TransportPutHalo>(s);
  };
}

void install_transport_put_halo() {
  if (!kernels::default_put_halo()) kernels::set_default_put_halo(transport_put_halo());
}

}  // namespace rankfarm::halo
