// Mandelbrot zoom frame to PNG: see rankfarm/kernels/mandelbrot.hpp.
#include "rankfarm/kernels/mandelbrot.hpp"

#include <omp.h>
#include <png.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

namespace rankfarm::kernels {
namespace {

constexpr std::int64_t kRowsPerBlock = 16;  // deadline checks between blocks of rows

bool analytically_inside(double x, double y) {
  const double xq = x - 0.25;
  const double q = xq * xq + y * y;
  // A relative margin keeps points that rounding could put on the boundary out of the test.
  if (q * (q + xq) < 0.25 * y * y * (1.0 - 1e-9)) return true;
  return (x + 1.0) * (x + 1.0) + y * y < 0.0625 * (1.0 - 1e-9);
}

void colour(std::int64_t n, std::int64_t max_iter, unsigned char* rgb) {
  if (n >= max_iter) {
    rgb[0] = rgb[1] = rgb[2] = 0;
    return;
  }
  const auto k = static_cast<unsigned>(n);
  rgb[0] = static_cast<unsigned char>((k * 9u) & 0xffu);
  rgb[1] = static_cast<unsigned char>((k * 5u + 64u) & 0xffu);
  rgb[2] = static_cast<unsigned char>(255u - ((k * 3u) & 0x7fu));
}

std::uint64_t fnv1a(const std::vector<unsigned char>& bytes) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char b : bytes) {
    h ^= b;
    h *= 0x100000001b3ULL;
  }
  return h & ((1ULL << 53) - 1);
}

void check_range(const char* name, double v, double lo, double hi) {
  if (!(v >= lo && v <= hi))
    throw std::invalid_argument(std::string("mandelbrot: ") + name + " = " + std::to_string(v) + " is out of range [" +
                                std::to_string(lo) + ", " + std::to_string(hi) + "]");
}

}  // namespace

MandelbrotResult render_mandelbrot(const MandelbrotFrame& f, const TaskContext& ctx) {
  check_range("frame", static_cast<double>(f.frame), 0, 1e6);
  check_range("width", static_cast<double>(f.width), 16, 16384);
  check_range("height", static_cast<double>(f.height), 16, 16384);
  check_range("max_iter", static_cast<double>(f.max_iter), 1, 1e7);
  if (!(f.scale0 > 0) || !std::isfinite(f.scale0)) throw std::invalid_argument("mandelbrot: scale0 must be > 0");
  if (!(f.zoom > 0 && f.zoom <= 1)) throw std::invalid_argument("mandelbrot: zoom must be in (0, 1]");
  const double t0 = omp_get_wtime();
  const std::int64_t W = f.width, H = f.height;
  const double span = f.scale0 * std::pow(f.zoom, static_cast<double>(f.frame));
  const double step = span / static_cast<double>(W);
  std::vector<unsigned char> rgb(static_cast<std::size_t>(W * H * 3));
  std::int64_t inside = 0, analytic = 0, mismatch = 0;
  for (std::int64_t r0 = 0; r0 < H; r0 += kRowsPerBlock) {
    ctx.check_deadline();
    const std::int64_t r1 = std::min(H, r0 + kRowsPerBlock);
#pragma omp parallel for schedule(dynamic, 1) reduction(+ : inside, analytic, mismatch)
    for (std::int64_t row = r0; row < r1; ++row) {
      const double y = f.center_y - (static_cast<double>(row) - static_cast<double>(H - 1) / 2) * step;
      for (std::int64_t col = 0; col < W; ++col) {
        const double x = f.center_x + (static_cast<double>(col) - static_cast<double>(W - 1) / 2) * step;
        double zr = 0, zi = 0, zr2 = 0, zi2 = 0;
        std::int64_t n = 0;
        while (n < f.max_iter && zr2 + zi2 <= 4.0) {
          zi = 2.0 * zr * zi + y;
          zr = zr2 - zi2 + x;
          zr2 = zr * zr;
          zi2 = zi * zi;
          ++n;
        }
        if (n >= f.max_iter) ++inside;
        if (analytically_inside(x, y)) {
          ++analytic;
          if (n < f.max_iter) ++mismatch;
        }
        colour(n, f.max_iter, &rgb[static_cast<std::size_t>((row * W + col) * 3)]);
      }
    }
  }
  MandelbrotResult res;
  res.checksum = fnv1a(rgb);
  res.inside = inside;
  res.analytic_inside = analytic;
  res.analytic_mismatch = mismatch;
  res.png_verified = true;
  if (!f.output_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(f.output_dir, ec);
    if (ec) throw std::runtime_error(f.output_dir + ": cannot create the directory: " + ec.message());
    char name[32];
    std::snprintf(name, sizeof name, "frame_%05lld.png", static_cast<long long>(f.frame));
    res.path = (std::filesystem::path(f.output_dir) / name).string();
    const std::string tmp = res.path + ".tmp";
    png_image image{};
    image.version = PNG_IMAGE_VERSION;
    image.width = static_cast<png_uint_32>(W);
    image.height = static_cast<png_uint_32>(H);
    image.format = PNG_FORMAT_RGB;
    if (!png_image_write_to_file(&image, tmp.c_str(), 0, rgb.data(), 0, nullptr)) {
      const std::string why = image.message;
      png_image_free(&image);
      std::filesystem::remove(tmp, ec);
      throw std::runtime_error(tmp + ": cannot write the PNG: " + why);
    }
    std::filesystem::rename(tmp, res.path, ec);
    if (ec) throw std::runtime_error(res.path + ": cannot rename the finished PNG into place: " + ec.message());
    res.png_bytes = static_cast<std::int64_t>(std::filesystem::file_size(res.path, ec));
    // Read back and compare.
    png_image back{};
    back.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&back, res.path.c_str()))
      throw std::runtime_error(res.path + ": cannot read the PNG back: " + back.message);
    back.format = PNG_FORMAT_RGB;
    std::vector<unsigned char> again(PNG_IMAGE_SIZE(back));
    if (!png_image_finish_read(&back, nullptr, again.data(), 0, nullptr))
      throw std::runtime_error(res.path + ": cannot decode the PNG read back: " + back.message);
    res.png_verified = back.width == static_cast<png_uint_32>(W) && back.height == static_cast<png_uint_32>(H) && again == rgb;
  }
  res.seconds = omp_get_wtime() - t0;
  return res;
}

KernelSpec mandelbrot_frame_kernel() {
  const MandelbrotFrame d;
  KernelSpec k;
  k.name = "mandelbrot_frame";
  k.summary = "one frame of a Mandelbrot zoom, escape-time, rendered to PNG";
  k.params = {
      {"frame", ParamType::Int, "", "frame number k: the view is scale0 * zoom^k wide", 0.0, 1e6, {}, {}},
      {"width", ParamType::Int, "pixels", "image width", 16.0, 16384.0, {}, d.width},
      {"height", ParamType::Int, "pixels", "image height", 16.0, 16384.0, {}, d.height},
      {"max_iter", ParamType::Int, "", "iterations before a pixel counts as inside", 1.0, 1e7, {}, d.max_iter},
      {"center_x", ParamType::Double, "", "real part of the zoom's centre", -4.0, 4.0, {}, d.center_x},
      {"center_y", ParamType::Double, "", "imaginary part of the zoom's centre", -4.0, 4.0, {}, d.center_y},
      {"scale0", ParamType::Double, "", "width of frame 0 in the complex plane", 1e-300, 16.0, {}, d.scale0},
      {"zoom", ParamType::Double, "", "width factor from one frame to the next", 1e-6, 1.0, {}, d.zoom},
      {"output", ParamType::String, "", "directory for frame_NNNNN.png (created; \"\" writes no file)", {}, {}, {},
       std::string("frames")},
  };
  k.outputs = {{"checksum", "", "FNV-1a 64 of the RGB pixels, low 53 bits"},
               {"inside_fraction", "", "fraction of pixels that reached max_iter"},
               {"analytic_inside", "pixels", "pixels in the main cardioid or the period-2 bulb"},
               {"analytic_mismatch", "pixels", "of those, pixels that escaped (0 when correct)"},
               {"png_verified", "", "1 when the PNG read back equals the rendered pixels"},
               {"png_bytes", "bytes", "size of the PNG file"},
               {"seconds", "s", "render + write + read back", true}};
  k.run = [](const Params& p, const TaskContext& ctx) {
    MandelbrotFrame f;
    f.frame = p.get_int("frame");
    f.width = p.get_int("width");
    f.height = p.get_int("height");
    f.max_iter = p.get_int("max_iter");
    f.center_x = p.get_double("center_x");
    f.center_y = p.get_double("center_y");
    f.scale0 = p.get_double("scale0");
    f.zoom = p.get_double("zoom");
    f.output_dir = p.get_string("output");
    omp_set_num_threads(ctx.threads);
    const MandelbrotResult m = render_mandelbrot(f, ctx);
    KernelResult r;
    r.valid = m.analytic_mismatch == 0 && m.png_verified;
    r.seconds = m.seconds;
    r.unit = "Mpixels/s";
    r.rate = m.seconds > 0 ? static_cast<double>(f.width * f.height) / m.seconds / 1e6 : 0.0;
    r.set("checksum", static_cast<double>(m.checksum))
        .set("inside_fraction", static_cast<double>(m.inside) / static_cast<double>(f.width * f.height))
        .set("analytic_inside", static_cast<double>(m.analytic_inside))
        .set("analytic_mismatch", static_cast<double>(m.analytic_mismatch))
        .set("png_verified", m.png_verified ? 1.0 : 0.0)
        .set("png_bytes", static_cast<double>(m.png_bytes));
    return r;
  };
  k.check = [](const Params&, std::span<const double> v) { return v[3] == 0.0 && v[4] == 1.0; };
  k.check_description = "analytic_mismatch == 0 (no pixel of the cardioid or period-2 bulb escaped) and png_verified == 1";
  return k;
}

}  // namespace rankfarm::kernels
