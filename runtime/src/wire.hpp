// Private: a little-endian byte encoding for the farm's MPI messages. Every read is checked
// against the buffer, so a short or forged message gives a WireError, never an overread.
#pragma once

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace rankfarm::runtime::detail {

struct WireError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class WireWriter {
 public:
  template <class T>
  void put(T v) {
    static_assert(std::is_trivially_copyable_v<T>);
    append(&v, sizeof v);
  }
  void put_str(const std::string& s) {
    put<std::uint32_t>(static_cast<std::uint32_t>(s.size()));
    append(s.data(), s.size());
  }
  const std::vector<char>& bytes() const { return buf_; }
  std::vector<char>& bytes() { return buf_; }
  void clear() { buf_.clear(); }

 private:
  void append(const void* p, std::size_t n) {
    const std::size_t at = buf_.size();
    buf_.resize(at + n);
    if (n) std::memcpy(buf_.data() + at, p, n);
  }
  std::vector<char> buf_;
};

class WireReader {
 public:
  WireReader(const char* p, std::size_t n) : p_(p), n_(n) {}
  template <class T>
  T get() {
    need(sizeof(T));
    T v;
    std::memcpy(&v, p_ + off_, sizeof(T));
    off_ += sizeof(T);
    return v;
  }
  std::string get_str() {
    const auto len = get<std::uint32_t>();
    need(len);
    std::string s(p_ + off_, len);
    off_ += len;
    return s;
  }
  void skip(std::size_t k) {
    need(k);
    off_ += k;
  }
  bool done() const { return off_ == n_; }
  std::size_t remaining() const { return n_ - off_; }

 private:
  void need(std::size_t k) const {
    if (k > n_ - off_) throw WireError("truncated message");
  }
  const char* p_;
  std::size_t n_;
  std::size_t off_ = 0;
};

}  // namespace rankfarm::runtime::detail
