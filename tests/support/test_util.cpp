#include "support/test_util.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "core/thread_pool.h"

namespace xc2::test {

double skew_pool_speeds(ThreadPool& pool) {
  // Task 1 spins 3 us per unit, the others 1 us: its measured rate is a third of theirs whatever else the machine
  // runs (a spin ends on the clock, preempted or not).
  for (int i = 0; i < 40; ++i)
    pool.run_balanced(pool.size(), 600, [](int t, int64_t b, int64_t e) {
      const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds((e - b) * (t == 1 ? 3 : 1));
      while (std::chrono::steady_clock::now() < until) {
      }
    });
  std::vector<int64_t> cuts(static_cast<size_t>(pool.size()) + 1);
  pool.balanced_cuts(pool.size(), 1000, cuts.data());
  return static_cast<double>(cuts[1]) / 1000.0;
}

std::string data_path(const std::string& rel) { return std::string(XC2_TEST_DATA_DIR) + "/" + rel; }

TempDir::TempDir() {
  namespace fs = std::filesystem;
  const fs::path base = fs::path(XC2_BINARY_DIR) / "test_tmp";
  fs::create_directories(base);
  std::random_device rd;
  for (int attempt = 0;; ++attempt) {
    const fs::path p = base / ("t" + std::to_string(::getpid()) + "_" + std::to_string(rd()));
    if (fs::create_directory(p)) {
      path_ = p.string();
      return;
    }
  }
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

CompareReport compare_rel_l2(const float* got, const float* ref, int64_t n, double max_rel_l2) {
  CompareReport r;
  double num = 0, den = 0;
  std::ostringstream first;
  int shown = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double g = got[i], e = ref[i];
    if (std::isnan(g) != std::isnan(e) || (std::isinf(g) && g != e)) {
      ++r.n_nan;
      if (shown++ < 5) first << " [" << i << "] got " << g << " want " << e;
      continue;
    }
    if (std::isnan(g) || std::isinf(g)) continue;
    const double d = g - e;
    num += d * d;
    den += e * e;
    if (std::fabs(d) > r.max_abs) r.max_abs = std::fabs(d);
  }
  r.rel_l2 = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  r.ok = r.n_nan == 0 && r.rel_l2 <= max_rel_l2;
  std::ostringstream os;
  os << "rel_l2=" << r.rel_l2 << " (max " << max_rel_l2 << ") max_abs=" << r.max_abs << " nan/inf mismatches="
     << r.n_nan << first.str();
  r.detail = os.str();
  return r;
}

CompareReport compare_close(const float* got, const float* ref, int64_t n, double atol, double rtol) {
  CompareReport r;
  std::ostringstream first;
  int shown = 0;
  int64_t bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double g = got[i], e = ref[i];
    const bool same_special = (std::isnan(g) && std::isnan(e)) || (std::isinf(g) && g == e);
    const double d = std::fabs(g - e);
    if (!same_special && !(d <= atol + rtol * std::fabs(e))) {
      ++bad;
      if (shown++ < 5) first << " [" << i << "] got " << g << " want " << e;
    }
    if (std::isfinite(d) && d > r.max_abs) r.max_abs = d;
  }
  r.ok = bad == 0;
  std::ostringstream os;
  os << bad << " of " << n << " elements differ (atol " << atol << ", rtol " << rtol << "), max_abs=" << r.max_abs
     << first.str();
  r.detail = os.str();
  return r;
}

CompareReport compare_noise_floor(const float* got, const float* lowp, const double* ref, int64_t n, double eps) {
  CompareReport r;
  double e_got = 0, e_lowp = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(got[i])) ++r.n_nan;
    const double d = got[i] - ref[i];
    e_got += d * d;
    if (std::fabs(d) > r.max_abs) r.max_abs = std::fabs(d);
    e_lowp += (lowp[i] - ref[i]) * (lowp[i] - ref[i]);
  }
  e_got = std::sqrt(e_got / static_cast<double>(std::max<int64_t>(1, n)));
  e_lowp = std::sqrt(e_lowp / static_cast<double>(std::max<int64_t>(1, n)));
  r.ok = r.n_nan == 0 && e_got <= 2 * e_lowp + eps;
  std::ostringstream os;
  os << "rms error " << e_got << " vs the low-precision reference's " << e_lowp << " (allowed 2x + " << eps
     << "), max_abs=" << r.max_abs << ", non-finite values " << r.n_nan;
  r.detail = os.str();
  return r;
}

std::vector<float> random_vec(size_t n, uint32_t seed, float scale) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = u(gen);
  return v;
}

}  // namespace xc2::test
