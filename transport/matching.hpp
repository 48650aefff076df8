// Private: the receive side and the rendezvous state that every backend shares, kept once
// above the backends (as libfabric's prov/tcp/src/xnet_srx.c and UCX's src/ucp/tag/ do); the
// backends only move bytes.
//
// Matching rule (transport.hpp): a receive for (peer or kAnyRank, tag) takes the oldest message
// from that peer with that tag; a message takes the oldest receive that wants it. Messages
// from one peer with one tag therefore complete in order.
#pragma once

#include <cstdint>
#include <deque>
#include <list>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>

#include "backend.hpp"

namespace rankfarm::transport::detail {

/// Receives posted and not yet matched, and messages that arrived before their receive, each
/// oldest first. `Arrived` is what a backend keeps of an unmatched message (its bytes, or where
/// to fetch them); it has `int peer` and `std::uint64_t tag` members.
template <class Arrived>
class TagMatcher {
 public:
  using iterator = typename std::list<Arrived>::iterator;

  /// The oldest unmatched message that a receive for (want_peer, want_tag) takes, among those
  /// `usable(a)` accepts, or arrived_end(). It stays queued until take() or erase().
  template <class Usable>
  iterator find_arrived(int want_peer, std::uint64_t want_tag, Usable&& usable) {
    for (auto it = arrived_.begin(); it != arrived_.end(); ++it)
      if (matches(want_peer, want_tag, it->peer, it->tag) && usable(*it)) return it;
    return arrived_.end();
  }
  iterator find_arrived(int want_peer, std::uint64_t want_tag) {
    return find_arrived(want_peer, want_tag, [](const Arrived&) { return true; });
  }
  iterator arrived_end() { return arrived_.end(); }

  /// Removes an unmatched message and returns it.
  Arrived take(iterator it) {
    Arrived a = std::move(*it);
    arrived_.erase(it);
    return a;
  }
  void erase(iterator it) { arrived_.erase(it); }

  /// Keeps a message that no receive took; the iterator stays valid until it is taken or erased.
  iterator keep(Arrived a) { return arrived_.insert(arrived_.end(), std::move(a)); }

  /// Drops unmatched messages for which `pred(a)` holds (e.g. rendezvous announcements of a
  /// peer that is gone, whose data can no longer be fetched).
  template <class Pred>
  void drop_arrived_if(Pred&& pred) {
    for (auto it = arrived_.begin(); it != arrived_.end();) it = pred(*it) ? arrived_.erase(it) : std::next(it);
  }

  /// A message from `peer` with `tag` arrives: the oldest posted receive that takes it
  /// (removed), or nothing.
  std::optional<PostedRecv> take_posted(int peer, std::uint64_t tag) {
    for (auto it = posted_.begin(); it != posted_.end(); ++it)
      if (matches(it->peer, it->tag, peer, tag)) {
        PostedRecv p = *it;
        posted_.erase(it);
        return p;
      }
    return std::nullopt;
  }

  /// Keeps a receive that found no message.
  void post(const PostedRecv& r) { posted_.push_back(r); }

  /// Fails every receive posted for `peer` (not those for any rank) with `s` and `why`.
  void fail_posted(int peer, Status s, const std::string& why) {
    for (auto it = posted_.begin(); it != posted_.end();) {
      if (it->peer == peer) {
        complete(it->req, s, why);
        it = posted_.erase(it);
      } else {
        ++it;
      }
    }
  }

  /// Fails every posted receive (the backend itself failed).
  void fail_all_posted(Status s, const std::string& why) {
    for (auto& p : posted_) complete(p.req, s, why);
    posted_.clear();
  }

  /// Whether a receive posted for exactly `peer` waits.
  bool waits_on(int peer) const {
    for (const auto& p : posted_)
      if (p.peer == peer) return true;
    return false;
  }

  /// Calls `f(receive)` on each posted receive, oldest first.
  template <class F>
  void for_each_posted(F&& f) const {
    for (const auto& p : posted_) f(p);
  }

 private:
  std::deque<PostedRecv> posted_;  // no allocation per receive
  std::list<Arrived> arrived_;     // stable iterators: a backend may hold one while bytes arrive
};

/// Nothing kept beside a rendezvous send.
struct NoExtra {};

/// Rendezvous sends waiting for the receiver's finish record, by id (from 1). `Extra` is what a
/// backend keeps with one (a temporary registration, say).
template <class Extra = NoExtra>
class RendezvousTable {
 public:
  struct Entry {
    Request* req;
    int peer;
    Extra extra;
  };

  std::uint64_t add(Request* req, int peer, Extra extra) {
    const std::uint64_t id = next_++;
    map_.emplace(id, Entry{req, peer, std::move(extra)});
    return id;
  }

  /// The entry `id`, removed, when it exists and belongs to `peer` (a finish record from any
  /// other rank is ignored).
  std::optional<Entry> take(std::uint64_t id, int peer) {
    auto it = map_.find(id);
    if (it == map_.end() || it->second.peer != peer) return std::nullopt;
    Entry e = std::move(it->second);
    map_.erase(it);
    return e;
  }

  /// Removes every entry of `peer`, calling `drop(entry)` on each (to fail its request).
  template <class Drop>
  void drop_peer(int peer, Drop&& drop) {
    for (auto it = map_.begin(); it != map_.end();) {
      if (it->second.peer == peer) {
        drop(it->second);
        it = map_.erase(it);
      } else {
        ++it;
      }
    }
  }

  /// Removes every entry, calling `drop(entry)` on each.
  template <class Drop>
  void drop_all(Drop&& drop) {
    for (auto& [id, e] : map_) drop(e);
    map_.clear();
  }

  bool waits_on(int peer) const {
    for (const auto& [id, e] : map_)
      if (e.peer == peer) return true;
    return false;
  }

  /// Calls `f(entry)` on each entry.
  template <class F>
  void for_each(F&& f) const {
    for (const auto& [id, e] : map_) f(e);
  }

 private:
  std::unordered_map<std::uint64_t, Entry> map_;
  std::uint64_t next_ = 1;
};

}  // namespace rankfarm::transport::detail
