// GPTQ-quantized linears on the GPU, in the layout of kernels/common/gptq_gpu.h (W4A16 / W8A16: 4- or 8-bit
// weights, activations in the backend's dtype, f32 accumulation).
//
// qgemv (decode, m <= 16 rows): memory-bound; one warp per output column c (8 warps, 256 threads, per block).
//   Vector path (the layout has vec_group and x is 16-byte aligned): lane l streams the 16-byte vectors
//   l, l + 32, ... of column c's words (each word read once per call, the next vector loaded before the current
//   one is used), unpacks its 4p values to q - zero (exact f32, gptq_gpu.h), and for every row r adds
//   scale * sum_e x[r, e] * (q_e - zero) with the (scale, zero) of the vector's group; then an xor-shuffle sum,
//   and lane r writes y[r, c]. x is read from L1/L2 (the same x for every warp).
//   Generic path (any group layout or alignment): lane l takes the columns j = l, l + 32, ... one value at a
//   time with col_group[j]'s (scale, zero) (a word is read p times, from cache).
// gptq_dequantize (prefill, m > 16): w[c, j] = scale * (q - zero) into a [n, k] buffer in the activation dtype,
//   one thread per word; the caller runs its dense GEMM on it.
// gather_columns: x in the layout's column order (act-order checkpoints).
#include "common/gptq_gpu.h"
#include "cuda/common.cuh"
#include "cuda/cuda_kernels.h"

namespace xc2::kernels::cuda {
namespace {

namespace gg = kernels::gptq_gpu;

constexpr int kThreads = 256;
constexpr int kColsPerBlock = kThreads / 32;

// Two 16-bit values packed in a word (element 0 in the low half) as f32.
template <typename T>
__device__ __forceinline__ float2 pair_to_f(uint32_t u);
template <>
__device__ __forceinline__ float2 pair_to_f<__nv_bfloat16>(uint32_t u) {
  return make_float2(__uint_as_float(u << 16), __uint_as_float(u & 0xffff0000u));
}
template <>
__device__ __forceinline__ float2 pair_to_f<__half>(uint32_t u) {
  return make_float2(__half2float(__ushort_as_half(static_cast<unsigned short>(u & 0xffffu))),
                     __half2float(__ushort_as_half(static_cast<unsigned short>(u >> 16))));
}

// N consecutive elements at p (16-byte aligned; N * sizeof(T) a multiple of 16) as f32, with 16-byte loads.
template <typename T, int N>
__device__ __forceinline__ void load_x(const T* p, float (&f)[N]) {
  constexpr int kPerLoad = 16 / static_cast<int>(sizeof(T));
  static_assert(N % kPerLoad == 0, "whole 16-byte loads");
  const uint4* v = reinterpret_cast<const uint4*>(p);
#pragma unroll
  for (int i = 0; i < N / kPerLoad; ++i) {
    const uint4 u = __ldg(v + i);
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
    if constexpr (std::is_same_v<T, float>) {
#pragma unroll
      for (int h = 0; h < 4; ++h) f[4 * i + h] = __uint_as_float(w[h]);
    } else {
#pragma unroll
      for (int h = 0; h < 4; ++h) {
        const float2 t = pair_to_f<T>(w[h]);
        f[8 * i + 2 * h] = t.x;
        f[8 * i + 2 * h + 1] = t.y;
      }
    }
  }
}

template <typename T, int M, int BITS>
__global__ void __launch_bounds__(kThreads) qgemv_vec_kernel(GptqDeviceWeight w, const T* __restrict__ x,
                                                             T* __restrict__ y, int m, int accumulate) {
  constexpr int P = 32 / BITS;
  constexpr int VV = gg::kWordsPerVec * P;  // values per 16-byte vector: 32 (4-bit) or 16 (8-bit)
  const int64_t col = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = static_cast<int>(threadIdx.x & 31u);
  if (col >= w.n) return;  // whole warps leave together
  const int64_t n_vec = w.kw / gg::kWordsPerVec;
  const uint4* qr = reinterpret_cast<const uint4*>(w.q + gg::q_row(col, w.kw));
  const float2* sz = reinterpret_cast<const float2*>(w.sz);
  float acc[M];
#pragma unroll
  for (int r = 0; r < M; ++r) acc[r] = 0.0f;
  int64_t vi = lane;
  uint4 cur = vi < n_vec ? __ldcs(qr + vi) : make_uint4(0u, 0u, 0u, 0u);
  while (vi < n_vec) {
    const int64_t nx = vi + 32;
    const uint4 next = nx < n_vec ? __ldcs(qr + nx) : make_uint4(0u, 0u, 0u, 0u);
    const float2 s = __ldg(sz + gg::sz_pair(col, w.groups, __ldg(w.vec_group + vi)));
    const float bz = gg::biased_zero(s.y);
    const uint32_t words[gg::kWordsPerVec] = {cur.x, cur.y, cur.z, cur.w};
    float wv[VV];
#pragma unroll
    for (int wi = 0; wi < gg::kWordsPerVec; ++wi)
#pragma unroll
      for (int e = 0; e < P; ++e) wv[wi * P + e] = gg::q_minus_zero(gg::value(words[wi], e, BITS), bz);
#pragma unroll
    for (int r = 0; r < M; ++r) {
      if (r < m) {
        float xf[VV];
        load_x<T, VV>(x + static_cast<int64_t>(r) * w.k + vi * VV, xf);
        float dot = 0.0f;
#pragma unroll
        for (int e = 0; e < VV; ++e) dot = fmaf(xf[e], wv[e], dot);
        acc[r] = fmaf(s.x, dot, acc[r]);
      }
    }
    cur = next;
    vi = nx;
  }
  gemv_store_rows<T, M>(acc, m, lane, col, w.n, static_cast<const T*>(w.bias), y, accumulate);
}

template <typename T, int M>
__global__ void __launch_bounds__(kThreads) qgemv_generic_kernel(GptqDeviceWeight w, const T* __restrict__ x,
                                                                 T* __restrict__ y, int m, int accumulate) {
  const int64_t col = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = static_cast<int>(threadIdx.x & 31u);
  if (col >= w.n) return;
  const int bits = w.bits, p = 32 / bits;
  const uint32_t* qr = w.q + gg::q_row(col, w.kw);
  const float2* sz = reinterpret_cast<const float2*>(w.sz);
  float acc[M];
#pragma unroll
  for (int r = 0; r < M; ++r) acc[r] = 0.0f;
  for (int64_t j = lane; j < w.k; j += 32) {
    const uint32_t word = __ldg(qr + j / p);
    const float2 s = __ldg(sz + gg::sz_pair(col, w.groups, __ldg(w.col_group + j)));
    const float wv = s.x * gg::q_minus_zero(gg::value(word, static_cast<int>(j % p), bits), gg::biased_zero(s.y));
#pragma unroll
    for (int r = 0; r < M; ++r)
      if (r < m) acc[r] = fmaf(to_f(x[static_cast<int64_t>(r) * w.k + j]), wv, acc[r]);
  }
  gemv_store_rows<T, M>(acc, m, lane, col, w.n, static_cast<const T*>(w.bias), y, accumulate);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) dequantize_kernel(GptqDeviceWeight w, T* __restrict__ out) {
  const int bits = w.bits, p = 32 / bits;
  const int64_t total = w.n * w.kw;
  const float2* sz = reinterpret_cast<const float2*>(w.sz);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t col = i / w.kw, wi = i - col * w.kw;  // word i of q is word wi of output col
    const uint32_t word = __ldg(w.q + i);
    T* o = out + col * w.k + wi * p;
    for (int e = 0; e < p; ++e) {
      const float2 s = __ldg(sz + gg::sz_pair(col, w.groups, __ldg(w.col_group + wi * p + e)));
      o[e] = from_f<T>(s.x * gg::q_minus_zero(gg::value(word, e, bits), gg::biased_zero(s.y)));
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) gather_columns_kernel(const T* __restrict__ x,
                                                                  const int32_t* __restrict__ perm,
                                                                  T* __restrict__ xp, int64_t m, int64_t k) {
  const int64_t total = m * k;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t r = i / k, j = i - r * k;
    xp[i] = x[r * k + __ldg(perm + j)];
  }
}

// Blocks of a grid-stride loop over `total` items.
unsigned stride_grid(int64_t total) {
  return static_cast<unsigned>(std::min<int64_t>(ceil_div(total, kThreads), int64_t(1) << 20));
}

template <typename T, int M>
void launch_rows(const GptqDeviceWeight& w, bool vec, const T* x, T* y, int m, int acc, cudaStream_t stream) {
  const unsigned grid = static_cast<unsigned>(ceil_div(w.n, kColsPerBlock));
  if (!vec)
    launch_kernel(qgemv_generic_kernel<T, M>, grid, kThreads, 0, stream, w, x, y, m, acc);
  else if (w.bits == 4)
    launch_kernel(qgemv_vec_kernel<T, M, 4>, grid, kThreads, 0, stream, w, x, y, m, acc);
  else
    launch_kernel(qgemv_vec_kernel<T, M, 8>, grid, kThreads, 0, stream, w, x, y, m, acc);
}

template <typename T>
void launch_qgemv(const GptqDeviceWeight& w, bool vec, const void* xv, void* yv, int64_t m, bool accumulate,
                  cudaStream_t stream) {
  const T* x = static_cast<const T*>(xv);
  T* y = static_cast<T*>(yv);
  const int mi = static_cast<int>(m), acc = accumulate ? 1 : 0;
  if (m == 1) launch_rows<T, 1>(w, vec, x, y, mi, acc, stream);
  else if (m == 2) launch_rows<T, 2>(w, vec, x, y, mi, acc, stream);
  else if (m <= 4) launch_rows<T, 4>(w, vec, x, y, mi, acc, stream);
  else if (m <= 8) launch_rows<T, 8>(w, vec, x, y, mi, acc, stream);
  else launch_rows<T, 16>(w, vec, x, y, mi, acc, stream);
}

}  // namespace

bool qgemv_vector_path(const GptqDeviceWeight& w, const void* x) {
  const auto a16 = [](const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; };
  return w.vec_group != nullptr && w.kw % gg::kWordsPerVec == 0 && a16(x) && a16(w.q);
}

void qgemv(const GptqDeviceWeight& w, const void* x, void* y, int64_t m, bool accumulate, DType dtype,
           cudaStream_t stream) {
  if (m <= 0 || w.n <= 0) return;
  XC2_CHECK(m <= kQGemvMaxRows && (w.bits == 4 || w.bits == 8) && w.kw * (32 / w.bits) == w.k &&
                w.k < (int64_t(1) << 31) && ceil_div(w.n, kColsPerBlock) < (int64_t(1) << 31),
            Internal, "qgemv called on a shape it does not handle (m=", m, " n=", w.n, " k=", w.k, " bits ", w.bits, ")");
  const bool vec = qgemv_vector_path(w, x);
  XC2_CUDA_DISPATCH(dtype, T, launch_qgemv<T>(w, vec, x, y, m, accumulate, stream));
  launch_check(vec ? "qgemv (vector path)" : "qgemv (generic path)");
}

void gptq_dequantize(const GptqDeviceWeight& w, void* out, DType dtype, cudaStream_t stream) {
  if (w.n <= 0 || w.kw <= 0) return;
  XC2_CHECK((w.bits == 4 || w.bits == 8) && w.kw * (32 / w.bits) == w.k, Internal, "gptq_dequantize: bits ", w.bits,
            ", k ", w.k, ", kw ", w.kw);
  const unsigned grid = stride_grid(w.n * w.kw);
  XC2_CUDA_DISPATCH(dtype, T,
                    { launch_kernel(dequantize_kernel<T>, grid, kThreads, 0, stream, w, static_cast<T*>(out)); });
  launch_check("gptq_dequantize");
}

void gather_columns(const void* x, const int32_t* perm, void* xp, int64_t m, int64_t k, DType dtype,
                    cudaStream_t stream) {
  if (m <= 0 || k <= 0) return;
  const unsigned grid = stride_grid(m * k);
  XC2_CUDA_DISPATCH(dtype, T, {
    launch_kernel(gather_columns_kernel<T>, grid, kThreads, 0, stream, static_cast<const T*>(x), perm,
                  static_cast<T*>(xp), m, k);
  });
  launch_check("gather_columns");
}

}  // namespace xc2::kernels::cuda
