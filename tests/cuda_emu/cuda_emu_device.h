// Device-side names for kernels/cuda/*.cu compiled by the host compiler in the emulator build (see cuda_emu.h):
// threadIdx and friends, __syncthreads / __syncwarp / __shfl_xor_sync, the load and bit-cast intrinsics, atomicAdd
// (fibers switch only at barriers, so a plain add is atomic), __shared__ as a static (one block runs at a time)
// and nvcuda::wmma. Included by kernels/cuda/common.cuh after the CUDA headers.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "cuda_emu.h"

#undef __shared__
#define __shared__ static
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif

#define threadIdx (::xc2emu::thread_idx())
#define blockIdx (::xc2emu::block_idx())
#define blockDim (::xc2emu::block_dim())
#define gridDim (::xc2emu::grid_dim())

inline void __syncthreads() { ::xc2emu::sync_block(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::xc2emu::sync_warp(mask); }

template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffle of a type wider than 8 bytes");
  const int lane = ::xc2emu::lane_id();
  int src = lane ^ lane_mask;
  if ((src & ~(width - 1)) != (lane & ~(width - 1))) src = lane;  // outside the lane's segment: its own value
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits = ::xc2emu::exchange(mask, bits, src);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}

template <typename T>
inline T __ldg(const T* p) {
  return *p;
}
template <typename T>
inline T __ldcs(const T* p) {
  return *p;
}

namespace xc2emu {
template <typename To, typename From>
inline To bit_cast(From v) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast between types of different sizes");
  To t;
  std::memcpy(&t, &v, sizeof(To));
  return t;
}
}  // namespace xc2emu
inline float __uint_as_float(unsigned u) { return ::xc2emu::bit_cast<float>(u); }
inline unsigned __float_as_uint(float f) { return ::xc2emu::bit_cast<unsigned>(f); }
inline float __int_as_float(int u) { return ::xc2emu::bit_cast<float>(u); }
inline int __float_as_int(float f) { return ::xc2emu::bit_cast<int>(f); }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmul_rn(float a, float b) { return a * b; }

template <typename T>
inline T atomicAdd(T* p, T v) {
  const T old = *p;
  *p = old + v;
  return old;
}

using std::max;
using std::min;

// cuda_runtime.h's kernel-pointer overload (declared for nvcc only).
template <typename... P>
inline cudaError_t cudaFuncSetAttribute(void (*kernel)(P...), cudaFuncAttribute attr, int value) {
  return ::cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), attr, value);
}

// ---- nvcuda::wmma: 16x16x16 tiles -------------------------------------------------------------------------
// Accumulator element e (row-major) belongs to lane e % 32: a lane computes, loads and stores only its own
// elements, and loads the rows of A and the columns of B that they need (so a warp does the tile's work once). A read
// of another lane's stored elements therefore needs the __syncwarp() that a GPU needs. Each operation starts with a
// warp barrier (they are warp-synchronous: all 32 lanes must reach it). f32 accumulation in k order.
namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static constexpr int num_elements = (std::is_same_v<Use, matrix_a> ? M * K : std::is_same_v<Use, matrix_b> ? K * N
                                                                                                              : M * N);
  float x[num_elements];  // row-major tile (matrix_a: M x K, matrix_b: K x N, accumulator: M x N)
};

namespace detail {
template <typename T>
inline float to_float(T v) {
  if constexpr (std::is_same_v<T, __half>) return __half2float(v);
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return __bfloat162float(v);
  else return static_cast<float>(v);
}
// Whether `lane` owns accumulator element (i, j) of an M x N tile; a row / a column with an element it owns.
inline bool owns(int lane, int i, int j, int n) { return (i * n + j) % 32 == lane; }
template <int M, int N>
inline bool owns_row(int lane, int i) {
  for (int j = 0; j < N; ++j)
    if (owns(lane, i, j, N)) return true;
  return false;
}
template <int M, int N>
inline bool owns_col(int lane, int j) {
  for (int i = 0; i < M; ++i)
    if (owns(lane, i, j, N)) return true;
  return false;
}
}  // namespace detail

template <typename Use, int M, int N, int K, typename T, typename L>
inline void fill_fragment(fragment<Use, M, N, K, T, L>& f, float v) {
  __syncwarp();
  for (float& e : f.x) e = v;
}

// matrix_a / matrix_b: the layout is the fragment's.
template <typename Use, int M, int N, int K, typename T, typename L, typename P>
inline void load_matrix_sync(fragment<Use, M, N, K, T, L>& f, const P* p, unsigned ldm) {
  static_assert(!std::is_same_v<Use, accumulator>, "an accumulator load names its memory layout");
  __syncwarp();
  constexpr bool kA = std::is_same_v<Use, matrix_a>;
  constexpr int R = kA ? M : K, C = kA ? K : N;
  const int lane = ::xc2emu::lane_id();
  for (int r = 0; r < R; ++r) {
    if (kA && !detail::owns_row<M, N>(lane, r)) continue;
    for (int c = 0; c < C; ++c) {
      if (!kA && !detail::owns_col<M, N>(lane, c)) continue;
      f.x[r * C + c] = detail::to_float(std::is_same_v<L, row_major> ? p[r * ldm + c] : p[r + c * ldm]);
    }
  }
}

template <int M, int N, int K>
inline void load_matrix_sync(fragment<accumulator, M, N, K, float, void>& f, const float* p, unsigned ldm,
                             layout_t layout) {
  __syncwarp();
  const int lane = ::xc2emu::lane_id();
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < N; ++c)
      if (detail::owns(lane, r, c, N)) f.x[r * N + c] = layout == mem_row_major ? p[r * ldm + c] : p[r + c * ldm];
}

template <int M, int N, int K>
inline void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float, void>& f, unsigned ldm,
                              layout_t layout) {
  __syncwarp();
  const int lane = ::xc2emu::lane_id();
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < N; ++c)
      if (detail::owns(lane, r, c, N)) (layout == mem_row_major ? p[r * ldm + c] : p[r + c * ldm]) = f.x[r * N + c];
}

template <int M, int N, int K, typename T, typename LA, typename LB>
inline void mma_sync(fragment<accumulator, M, N, K, float, void>& d, const fragment<matrix_a, M, N, K, T, LA>& a,
                     const fragment<matrix_b, M, N, K, T, LB>& b,
                     const fragment<accumulator, M, N, K, float, void>& c) {
  __syncwarp();
  const int lane = ::xc2emu::lane_id();
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      if (!detail::owns(lane, i, j, N)) continue;
      float s = c.x[i * N + j];
      for (int k = 0; k < K; ++k) s = std::fma(a.x[i * K + k], b.x[k * N + j], s);
      d.x[i * N + j] = s;
    }
}

}  // namespace nvcuda::wmma
