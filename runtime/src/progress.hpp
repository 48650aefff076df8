// Private: the coordinator's progress display. On a terminal: a bar redrawn in place (stderr);
// otherwise (batch logs): one plain line every `interval` seconds. Under mpirun a rank's stderr
// is a pipe even when the user sits at a terminal, so RANKFARM_PROGRESS=bar|lines decides
// (rankfarm sets it to "bar" when it launches mpirun from a terminal).
#pragma once

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fmt/format.h>
#include <string>

namespace rankfarm::runtime::detail {

class Progress {
 public:
  Progress(std::size_t total, double interval_s) : total_(total), tty_(isatty(2) != 0) {
    if (const char* mode = std::getenv("RANKFARM_PROGRESS")) tty_ = std::string(mode) == "bar";
    interval_ = interval_s > 0 ? interval_s : (tty_ ? 0.2 : 10.0);
  }

  /// finished: tasks in a final state (done/failed/skipped, all runs); ran: done in this run.
  void tick(std::size_t finished, std::size_t ran, std::size_t failed, double elapsed_s, bool final) {
    if (!final && elapsed_s - last_ < interval_) return;
    last_ = elapsed_s;
    const double rate = elapsed_s > 0 ? static_cast<double>(ran) / elapsed_s : 0.0;
    const std::size_t left = total_ - finished;
    std::string eta = rate > 0 ? clock(static_cast<double>(left) / rate) : "--:--:--";
    if (tty_) {
      constexpr int kWidth = 30;
      const int fill = total_ ? static_cast<int>(kWidth * finished / total_) : kWidth;
      std::fprintf(stderr, "\r[%s%s] %zu/%zu  %zu failed  %.1f tasks/s  ETA %s ", std::string(fill, '#').c_str(),
                   std::string(kWidth - fill, '.').c_str(), finished, total_, failed, rate, eta.c_str());
      if (final) std::fputc('\n', stderr);
      drawn_ = !final;
    } else {
      std::fprintf(stderr, "rankfarm: progress %zu/%zu finished, %zu failed, %.1f tasks/s, elapsed %s, ETA %s\n", finished,
                   total_, failed, rate, clock(elapsed_s).c_str(), final ? "00:00:00" : eta.c_str());
    }
    std::fflush(stderr);
  }

  /// Prints a one-line event (clearing the bar first on a terminal).
  void note(const std::string& line) {
    if (tty_ && drawn_) std::fputs("\r\033[K", stderr);
    std::fprintf(stderr, "rankfarm: %s\n", line.c_str());
    std::fflush(stderr);
  }

 private:
  static std::string clock(double s) {
    const long t = std::lround(s);
    return fmt::format("{:02}:{:02}:{:02}", t / 3600, (t / 60) % 60, t % 60);
  }
  std::size_t total_;
  bool tty_;
  double interval_ = 10.0;
  double last_ = -1e9;
  bool drawn_ = false;
};

}  // namespace rankfarm::runtime::detail
