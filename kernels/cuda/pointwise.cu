// Element-wise ops, f32 math, one rounding on store:
//   add: y = a + b;  scale: x *= s;  silu_mul: y = T(silu(g)) * u (upstream rounds act_fn(w1) first);
//   gelu_erf: 0.5 x (1 + erf(x / sqrt 2));  quick_gelu: x / (1 + exp(-1.702 x)).
// Geometry: grid-stride loops, 256 threads per block, at most 65535 blocks.
#include "cuda/common.cuh"
#include "cuda/cuda_kernels.h"

namespace xc2::kernels::cuda {
namespace {

constexpr int kThreads = 256;

int grid_for(int64_t n) { return static_cast<int>(std::min<int64_t>(ceil_div(n, kThreads), 65535)); }

#define XC2_GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n); i += int64_t(gridDim.x) * blockDim.x)

template <typename T>
__global__ void add_kernel(const T* a, const T* b, T* y, int64_t n) {
  XC2_GRID_STRIDE(i, n) y[i] = from_f<T>(to_f(a[i]) + to_f(b[i]));
}

template <typename T>
__global__ void scale_kernel(T* x, float s, int64_t n) {
  XC2_GRID_STRIDE(i, n) x[i] = from_f<T>(to_f(x[i]) * s);
}

template <typename T>
__global__ void silu_mul_kernel(const T* g, const T* u, T* y, int64_t n) {
  XC2_GRID_STRIDE(i, n) {
    const float gv = to_f(g[i]);
    y[i] = from_f<T>(round_to<T>(gv / (1.0f + expf(-gv))) * to_f(u[i]));
  }
}

template <typename T>
__global__ void gelu_erf_kernel(T* x, int64_t n) {
  XC2_GRID_STRIDE(i, n) {
    const float v = to_f(x[i]);
    x[i] = from_f<T>(0.5f * v * (1.0f + erff(v * 0.70710678118654752f)));
  }
}

template <typename T>
__global__ void quick_gelu_kernel(T* x, int64_t n) {
  XC2_GRID_STRIDE(i, n) {
    const float v = to_f(x[i]);
    x[i] = from_f<T>(v / (1.0f + expf(-1.702f * v)));
  }
}

template <typename T>
__global__ void add_bias_kernel(T* y, const T* __restrict__ bias, int64_t m, int64_t n) {
  XC2_GRID_STRIDE(i, m * n) y[i] = from_f<T>(to_f(y[i]) + to_f(bias[i % n]));
}

}  // namespace

void add_bias_rows(void* y, const void* bias, int64_t m, int64_t n, DType dtype, cudaStream_t stream) {
  if (m <= 0 || n <= 0) return;
  XC2_CUDA_DISPATCH(dtype, T, {
    launch_kernel(add_bias_kernel<T>, grid_for(m * n), kThreads, 0, stream, static_cast<T*>(y),
                  static_cast<const T*>(bias), m, n);
  });
  launch_check("add_bias_rows");
}

void add(const void* a, const void* b, void* y, int64_t n, DType dtype, cudaStream_t stream) {
  if (n <= 0) return;
  XC2_CUDA_DISPATCH(dtype, T, {
    launch_kernel(add_kernel<T>, grid_for(n), kThreads, 0, stream, static_cast<const T*>(a), static_cast<const T*>(b),
                  static_cast<T*>(y), n);
  });
  launch_check("add");
}

void scale(void* x, float s, int64_t n, DType dtype, cudaStream_t stream) {
  if (n <= 0) return;
  XC2_CUDA_DISPATCH(dtype, T,
                    { launch_kernel(scale_kernel<T>, grid_for(n), kThreads, 0, stream, static_cast<T*>(x), s, n); });
  launch_check("scale");
}

void silu_mul(const void* gate, const void* up, void* y, int64_t n, DType dtype, cudaStream_t stream) {
  if (n <= 0) return;
  XC2_CUDA_DISPATCH(dtype, T, {
    launch_kernel(silu_mul_kernel<T>, grid_for(n), kThreads, 0, stream, static_cast<const T*>(gate),
                  static_cast<const T*>(up), static_cast<T*>(y), n);
  });
  launch_check("silu_mul");
}

void gelu_erf(void* x, int64_t n, DType dtype, cudaStream_t stream) {
  if (n <= 0) return;
  XC2_CUDA_DISPATCH(dtype, T,
                    { launch_kernel(gelu_erf_kernel<T>, grid_for(n), kThreads, 0, stream, static_cast<T*>(x), n); });
  launch_check("gelu_erf");
}

void quick_gelu(void* x, int64_t n, DType dtype, cudaStream_t stream) {
  if (n <= 0) return;
  XC2_CUDA_DISPATCH(dtype, T,
                    { launch_kernel(quick_gelu_kernel<T>, grid_for(n), kThreads, 0, stream, static_cast<T*>(x), n); });
  launch_check("quick_gelu");
}

}  // namespace xc2::kernels::cuda
