// RMSNorm and LayerNorm over rows, f32 statistics (double for the sums, so the row length never
// costs accuracy). One chunk of rows per thread.
#include <cmath>
#include <vector>

#include "cpu/cpu_kernels.h"

namespace xc2::kernels::cpu {
namespace {

XC2_MULTIVERSION
void rms_norm_rows(const float* x, const float* w, float* y, int64_t r0, int64_t r1, int64_t dim, float eps) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* xr = x + r * dim;
    float* yr = y + r * dim;
    // Pairwise-friendly accumulation: 16 f32 partial sums, then combined in double.
    float part[16] = {0};
    int64_t i = 0;
    for (; i + 16 <= dim; i += 16)
      for (int l = 0; l < 16; ++l) part[l] += xr[i + l] * xr[i + l];
    double ss = 0;
    for (int l = 0; l < 16; ++l) ss += part[l];
    for (; i < dim; ++i) ss += static_cast<double>(xr[i]) * xr[i];
    const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(dim) + eps));
    for (int64_t j = 0; j < dim; ++j) yr[j] = (xr[j] * inv) * w[j];
  }
}

XC2_MULTIVERSION
void layer_norm_rows(const float* x, const float* w, const float* b, float* y, int64_t r0, int64_t r1, int64_t dim,
                     float eps) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* xr = x + r * dim;
    float* yr = y + r * dim;
    float part[16] = {0};
    int64_t i = 0;
    for (; i + 16 <= dim; i += 16)
      for (int l = 0; l < 16; ++l) part[l] += xr[i + l];
    double s = 0;
    for (int l = 0; l < 16; ++l) s += part[l];
    for (; i < dim; ++i) s += xr[i];
    const float mean = static_cast<float>(s / static_cast<double>(dim));
    float vpart[16] = {0};
    i = 0;
    for (; i + 16 <= dim; i += 16)
      for (int l = 0; l < 16; ++l) {
        const float d = xr[i + l] - mean;
        vpart[l] += d * d;
      }
    double v = 0;
    for (int l = 0; l < 16; ++l) v += vpart[l];
    for (; i < dim; ++i) v += static_cast<double>(xr[i] - mean) * (xr[i] - mean);
    const float inv = static_cast<float>(1.0 / std::sqrt(v / static_cast<double>(dim) + eps));
    for (int64_t j = 0; j < dim; ++j) yr[j] = (xr[j] - mean) * inv * w[j] + b[j];
  }
}

std::vector<float> widen(const void* w, DType dtype, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  to_f32(w, dtype, out.data(), n);
  return out;
}

}  // namespace

void rms_norm(const float* x, const void* w, float* y, int64_t n_rows, int64_t dim, float eps, DType w_dtype,
              ThreadPool& pool) {
  const std::vector<float> wf = widen(w, w_dtype, dim);
  pool.parallel_for(n_rows, [&](int64_t r0, int64_t r1) { rms_norm_rows(x, wf.data(), y, r0, r1, dim, eps); }, 4);
}

void layer_norm(const float* x, const void* w, const void* b, float* y, int64_t n_rows, int64_t dim, float eps,
                DType w_dtype, ThreadPool& pool) {
  const std::vector<float> wf = widen(w, w_dtype, dim);
  const std::vector<float> bf = widen(b, w_dtype, dim);
  pool.parallel_for(
      n_rows, [&](int64_t r0, int64_t r1) { layer_norm_rows(x, wf.data(), bf.data(), y, r0, r1, dim, eps); }, 4);
}

}  // namespace xc2::kernels::cpu
