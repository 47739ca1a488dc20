// Shared test helpers: data paths, temporary folders, tensor comparison with a report.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "xc2/error.h"

namespace xc2 {
class ThreadPool;
}

namespace xc2::test {

// Teaches `pool` (2 threads or more) that its task 1 runs 3x slower than the others (run_balanced on a busy-wait
// job), so that its later run_balanced splits are uneven; returns task 0's share of 1000 units after it.
double skew_pool_speeds(ThreadPool& pool);

// Absolute path of a file under tests/data.
std::string data_path(const std::string& rel);

// A fresh empty folder under the build tree, removed with the object.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

void write_bytes(const std::string& path, const std::string& bytes);
// The whole file as bytes; "" when it cannot be read.
std::string read_file(const std::string& path);

// The xc2::Error thrown by f; a test failure (and an Internal error) when f throws none.
template <typename F>
Error catch_error(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "expected an xc2::Error";
  return Error(ErrorCode::Internal, "no error");
}

struct CompareReport {
  bool ok = true;
  double max_abs = 0, rel_l2 = 0;  // rel_l2 = ||got - ref|| / ||ref||
  int64_t n_nan = 0;
  std::string detail;              // first mismatches, for failure messages
};

// Relative L2 error over the whole tensor, plus NaN/inf checks; ok when rel_l2 <= max_rel_l2.
CompareReport compare_rel_l2(const float* got, const float* ref, int64_t n, double max_rel_l2);
// Per-element |got - ref| <= atol + rtol * |ref|.
CompareReport compare_close(const float* got, const float* ref, int64_t n, double atol, double rtol);

// Noise-floor rule for low-precision results (design.md §3.4): ok when rms(got - ref) <= 2 rms(lowp - ref) + eps,
// where ref is the double reference and lowp the reference with the roundings an ideal kernel in that
// precision cannot avoid (its output; P for attention). Any NaN/inf in got fails.
CompareReport compare_noise_floor(const float* got, const float* lowp, const double* ref, int64_t n,
                                  double eps = 1e-6);

// n values uniform in [-scale, scale) from a generator seeded with `seed`.
std::vector<float> random_vec(size_t n, uint32_t seed, float scale = 1.0f);

}  // namespace xc2::test
