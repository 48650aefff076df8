// rankfarm/kernels/mandelbrot.hpp — one frame of a Mandelbrot zoom, rendered to PNG (a render
// farm task: the frames are independent).
//
//   rankfarm::kernels::MandelbrotFrame f;  f.frame = 12;  f.output_dir = "frames";
//   rankfarm::kernels::MandelbrotResult r = rankfarm::kernels::render_mandelbrot(f);
//   // r.path = "frames/frame_00012.png", r.checksum, r.analytic_mismatch == 0, r.png_verified
//
// Frame k shows the square-pixel window of width scale0 * zoom^k (complex-plane units) centred
// on (center_x, center_y); pixel (row, col) samples c = center + ((col - (W-1)/2) - i (row -
// (H-1)/2)) * width / W, row 0 at the top. Each pixel iterates z <- z^2 + c from z = 0 until
// |z|^2 > 4 or max_iter iterations (escape-time algorithm, double precision), OpenMP over rows.
// Escaped pixels are coloured by an integer palette of their iteration count, pixels that never
// escape black. The image is written with libpng (8-bit RGB, via PATH.tmp and rename) and read
// back.
//
// Self-validation: c strictly inside the main cardioid, q (q + x - 1/4) < y^2 / 4 with
// q = (x - 1/4)^2 + y^2, or the period-2 bulb, (x + 1)^2 + y^2 < 1/16, never escapes (these are
// closed-form regions of the set; Peitgen and Richter, "The Beauty of Fractals", 1986). Every
// such pixel must have run to max_iter (`analytic_mismatch` counts those that did not), and
// the PNG read back must hold exactly the rendered pixels (`png_verified`).
#pragma once

#include <cstdint>
#include <string>

#include "rankfarm/kernels/registry.hpp"

namespace rankfarm::kernels {

struct MandelbrotFrame {
  std::int64_t frame = 0;        ///< k >= 0
  std::int64_t width = 640;      ///< pixels, 16..16384
  std::int64_t height = 360;     ///< pixels, 16..16384
  std::int64_t max_iter = 1000;  ///< iterations before a pixel counts as inside, 1..10^7
  double center_x = -0.743643887037151;  ///< the zoom's centre (Seahorse Valley)
  double center_y = 0.131825904205330;
  double scale0 = 3.0;           ///< width of frame 0 in complex-plane units (> 0)
  double zoom = 0.85;            ///< width factor per frame, (0, 1]
  std::string output_dir;        ///< where frame_%05d.png goes (created); empty: no file
};

struct MandelbrotResult {
  std::string path;                 ///< the PNG written ("" when output_dir is empty)
  std::uint64_t checksum = 0;       ///< FNV-1a 64 of the RGB bytes, row-major, masked to 53 bits
  std::int64_t inside = 0;          ///< pixels that reached max_iter
  std::int64_t analytic_inside = 0; ///< pixels in the cardioid or the period-2 bulb
  std::int64_t analytic_mismatch = 0;  ///< of those, pixels that escaped (must be 0)
  bool png_verified = false;        ///< the file read back equals the rendered pixels (true when no file)
  std::int64_t png_bytes = 0;
  double seconds = 0;               ///< rendering + writing + reading back
};

/// Renders one frame. Throws std::invalid_argument for parameters out of range,
/// std::runtime_error naming the file when the PNG cannot be written or read back, and
/// TaskTimeout (between blocks of rows) when ctx's deadline passes.
MandelbrotResult render_mandelbrot(const MandelbrotFrame& frame, const TaskContext& ctx = {});

/// The farm kernel "mandelbrot_frame": parameters as MandelbrotFrame (output_dir is "output"),
/// outputs checksum, inside_fraction, analytic_inside, analytic_mismatch, png_verified,
/// png_bytes, seconds; check: analytic_mismatch == 0 and png_verified == 1.
KernelSpec mandelbrot_frame_kernel();

}  // namespace rankfarm::kernels
