// Skinny linear for decode steps: y[m, n] (+)= x[m, k] . w[n, k]^T (+ bias[n]) for m <= 8 rows.
// Memory-bound: the weight matrix is streamed once with 16-byte loads and the few x rows stay in L1.
// Geometry: one warp per output column n, 8 warps (256 threads) per block; lane l reads the 16-byte
// vectors l, l + 32, ... of weight row n and multiplies them with the same slice of every x row; f32
// accumulation, xor-shuffle reduction, lane r < m writes y[r, n]. Template M in {1, 2, 4, 8} (rows
// rounded up; rows >= m are skipped).
#include "cuda/common.cuh"
#include "cuda/cuda_kernels.h"

namespace xc2::kernels::cuda {
namespace {

template <typename T>
struct Vec16 {
  static constexpr int kN = 16 / sizeof(T);
};

__device__ __forceinline__ void unpack(const uint4& u, float (&f)[4]) {
  f[0] = __uint_as_float(u.x), f[1] = __uint_as_float(u.y), f[2] = __uint_as_float(u.z), f[3] = __uint_as_float(u.w);
}
__device__ __forceinline__ void unpack(const uint4& u, float (&f)[8], __half) {
  const __half2* h = reinterpret_cast<const __half2*>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 v = __half22float2(h[i]);
    f[2 * i] = v.x, f[2 * i + 1] = v.y;
  }
}
__device__ __forceinline__ void unpack(const uint4& u, float (&f)[8], __nv_bfloat16) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 v = __bfloat1622float2(h[i]);
    f[2 * i] = v.x, f[2 * i + 1] = v.y;
  }
}
template <typename T>
__device__ __forceinline__ void unpack_t(const uint4& u, float (&f)[Vec16<T>::kN]) {
  if constexpr (std::is_same_v<T, float>) unpack(u, f);
  else unpack(u, f, T());
}

template <typename T, int M>
__global__ void __launch_bounds__(256) gemv_kernel(const T* __restrict__ x, const T* __restrict__ w,
                                                   const T* __restrict__ bias, T* y, int m, int n, int k,
                                                   int accumulate) {
  constexpr int V = Vec16<T>::kN;
  const int col = static_cast<int>((blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) >> 5);
  const int lane = threadIdx.x & 31;
  if (col >= n) return;  // whole warps leave together
  const uint4* wr = reinterpret_cast<const uint4*>(w + static_cast<int64_t>(col) * k);
  const int n_vec = k / V;
  float acc[M];
#pragma unroll
  for (int r = 0; r < M; ++r) acc[r] = 0;
#pragma unroll 4
  for (int c = lane; c < n_vec; c += 32) {
    float wf[V];
    unpack_t<T>(__ldg(wr + c), wf);
#pragma unroll
    for (int r = 0; r < M; ++r) {
      if (r < m) {
        float xf[V];
        unpack_t<T>(__ldg(reinterpret_cast<const uint4*>(x + static_cast<int64_t>(r) * k) + c), xf);
#pragma unroll
        for (int e = 0; e < V; ++e) acc[r] += wf[e] * xf[e];
      }
    }
  }
  gemv_store_rows<T, M>(acc, m, lane, col, n, bias, y, accumulate);
}

template <typename T, int M>
void launch(const void* x, const void* w, const void* bias, void* y, int64_t m, int64_t n, int64_t k, bool acc,
            cudaStream_t stream) {
  const unsigned grid = static_cast<unsigned>(ceil_div(n, 8));
  launch_kernel(gemv_kernel<T, M>, grid, 256, 0, stream, static_cast<const T*>(x), static_cast<const T*>(w),
                static_cast<const T*>(bias), static_cast<T*>(y), static_cast<int>(m), static_cast<int>(n),
                static_cast<int>(k), acc ? 1 : 0);
}

// The plain linear: 16 x 16 output tiles through shared memory, any shape and alignment, f32 accumulation.
// For shapes cuBLASLt has no algorithm for, and as the slow path to check the fast ones against.
constexpr int kTile = 16;

template <typename T>
__global__ void __launch_bounds__(kTile* kTile)
    linear_simple_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias, T* y, int64_t m,
                         int64_t n, int64_t k, int accumulate) {
  __shared__ float xs[kTile][kTile + 1], ws[kTile][kTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t row = static_cast<int64_t>(blockIdx.y) * kTile + ty;   // of x and y
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kTile + tx;   // of y
  const int64_t wrow = static_cast<int64_t>(blockIdx.x) * kTile + ty;  // of w, loaded by this thread
  float acc = 0.0f;
  for (int64_t k0 = 0; k0 < k; k0 += kTile) {
    const int64_t kk = k0 + tx;
    xs[ty][tx] = row < m && kk < k ? to_f(x[row * k + kk]) : 0.0f;
    ws[ty][tx] = wrow < n && kk < k ? to_f(w[wrow * k + kk]) : 0.0f;
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kTile; ++i) acc += xs[ty][i] * ws[tx][i];
    __syncthreads();
  }
  if (row < m && col < n) {
    float v = acc;
    T* out = y + row * n + col;
    if (accumulate) v += to_f(*out);
    if (bias) v += to_f(bias[col]);
    *out = from_f<T>(v);
  }
}

}  // namespace

void linear_simple(const void* x, const void* w, const void* bias, void* y, int64_t m, int64_t n, int64_t k,
                   bool accumulate, DType dtype, cudaStream_t stream) {
  if (m <= 0 || n <= 0) return;
  XC2_CHECK(ceil_div(m, kTile) <= 65535 && ceil_div(n, kTile) < (int64_t(1) << 31), Unsupported,
            "linear_simple: ", m, " x ", n, " is too large");
  const dim3 grid(static_cast<unsigned>(ceil_div(n, kTile)), static_cast<unsigned>(ceil_div(m, kTile)));
  const dim3 block(kTile, kTile);
  XC2_CUDA_DISPATCH(dtype, T, {
    launch_kernel(linear_simple_kernel<T>, grid, block, 0, stream, static_cast<const T*>(x), static_cast<const T*>(w),
                  static_cast<const T*>(bias), static_cast<T*>(y), m, n, k, accumulate ? 1 : 0);
  });
  launch_check("linear_simple");
}

bool gemv_fits(const void* x, const void* w, int64_t m, int64_t k, DType dtype) {
  const int64_t v = 16 / static_cast<int64_t>(dtype_size(dtype));
  const auto a16 = [](const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; };
  return m >= 1 && m <= kGemvMaxRows && k % v == 0 && k < (int64_t(1) << 30) && a16(x) && a16(w);
}

void gemv(const void* x, const void* w, const void* bias, void* y, int64_t m, int64_t n, int64_t k, bool accumulate,
          DType dtype, cudaStream_t stream) {
  if (m <= 0 || n <= 0) return;
  XC2_CHECK(gemv_fits(x, w, m, k, dtype) && n < (int64_t(1) << 31), Internal, "gemv called on a shape it does not handle");
  XC2_CUDA_DISPATCH(dtype, T, {
    if (m == 1) launch<T, 1>(x, w, bias, y, m, n, k, accumulate, stream);
    else if (m == 2) launch<T, 2>(x, w, bias, y, m, n, k, accumulate, stream);
    else if (m <= 4) launch<T, 4>(x, w, bias, y, m, n, k, accumulate, stream);
    else launch<T, 8>(x, w, bias, y, m, n, k, accumulate, stream);
  });
  launch_check("gemv");
}

}  // namespace xc2::kernels::cuda
