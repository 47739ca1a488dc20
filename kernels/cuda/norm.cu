// RMSNorm (InternLM2, model-spec §6.1) and LayerNorm (CLIP) over rows, f32 statistics.
//   rms_norm:   y = T(T(x * inv) * w),           inv = 1 / sqrt(mean(x^2) + eps)
//   layer_norm: y = T((x - mean) * inv * w + b), inv = 1 / sqrt(mean((x - mean)^2) + eps)
// Geometry: one row per 256-thread block; each thread strides over the row; block reductions by
// warp shuffles plus one shared-memory pass. The scalar 1 / sqrt is taken in double, as on the CPU.
// y may alias x: every thread reads its own elements before it writes them, after the last reduction.
#include "cuda/common.cuh"
#include "cuda/cuda_kernels.h"

namespace xc2::kernels::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void rms_norm_kernel(const T* x, const T* __restrict__ w, T* y, int64_t dim, float eps) {
  __shared__ float scratch[32];
  const T* xr = x + blockIdx.x * dim;
  T* yr = y + blockIdx.x * dim;
  float ss = 0;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float v = to_f(xr[i]);
    ss += v * v;
  }
  ss = block_sum(ss, scratch);
  const float inv = static_cast<float>(1.0 / sqrt(static_cast<double>(ss) / static_cast<double>(dim) + eps));
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = from_f<T>(round_to<T>(to_f(xr[i]) * inv) * to_f(w[i]));
}

template <typename T>
__global__ void layer_norm_kernel(const T* x, const T* __restrict__ w, const T* __restrict__ b, T* y, int64_t dim,
                                  float eps) {
  __shared__ float scratch[32];
  const T* xr = x + blockIdx.x * dim;
  T* yr = y + blockIdx.x * dim;
  float s = 0;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) s += to_f(xr[i]);
  const float mean = static_cast<float>(static_cast<double>(block_sum(s, scratch)) / static_cast<double>(dim));
  float v = 0;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float d = to_f(xr[i]) - mean;
    v += d * d;
  }
  v = block_sum(v, scratch);
  const float inv = static_cast<float>(1.0 / sqrt(static_cast<double>(v) / static_cast<double>(dim) + eps));
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
    yr[i] = from_f<T>((to_f(xr[i]) - mean) * inv * to_f(w[i]) + to_f(b[i]));
}

}  // namespace

void rms_norm(const void* x, const void* w, void* y, int64_t n_rows, int64_t dim, float eps, DType dtype,
              cudaStream_t stream) {
  if (n_rows <= 0) return;
  XC2_CHECK(n_rows < (int64_t(1) << 31), InvalidArgument, "rms_norm: too many rows (", n_rows, ")");
  XC2_CUDA_DISPATCH(dtype, T, {
    launch_kernel(rms_norm_kernel<T>, static_cast<unsigned>(n_rows), kThreads, 0, stream, static_cast<const T*>(x),
                  static_cast<const T*>(w), static_cast<T*>(y), dim, eps);
  });
  launch_check("rms_norm");
}

void layer_norm(const void* x, const void* w, const void* b, void* y, int64_t n_rows, int64_t dim, float eps,
                DType dtype, cudaStream_t stream) {
  if (n_rows <= 0) return;
  XC2_CHECK(n_rows < (int64_t(1) << 31), InvalidArgument, "layer_norm: too many rows (", n_rows, ")");
  XC2_CUDA_DISPATCH(dtype, T, {
    launch_kernel(layer_norm_kernel<T>, static_cast<unsigned>(n_rows), kThreads, 0, stream, static_cast<const T*>(x),
                  static_cast<const T*>(w), static_cast<const T*>(b), static_cast<T*>(y), dim, eps);
  });
  launch_check("layer_norm");
}

}  // namespace xc2::kernels::cuda
