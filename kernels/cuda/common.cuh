// Device helpers shared by the kernels/cuda/*.cu files (device code: only .cu files include this).
//   - to_f / from_f: element <-> f32 for float, __half and __nv_bfloat16 (round to nearest even);
//   - warp / block reductions (sum, max) with xor shuffles, so every lane ends with the result;
//   - gemv_store_rows: the end of the warp-per-column GEMVs;
//   - XC2_CUDA_DISPATCH: a runtime DType -> element type T switch (flash-attention's static_switch habit);
//   - launch_kernel(): every launch (kernel<<<grid, block, smem, stream>>>(args), or the CUDA emulator's launch in
//     the -DXC2_CUDA_EMULATOR=ON build, tests/cuda_emu);
//   - launch_check(): cudaGetLastError() after a launch -> xc2::Error{Cuda} naming the kernel.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>

#if XC2_CUDA_EMULATOR
#include "cuda_emu_device.h"
// A kernel's dynamic shared memory, 128-byte aligned, as `unsigned char name[]`.
#define XC2_DYNAMIC_SHARED(name) unsigned char* name = ::xc2emu::dynamic_smem()
#else
#define XC2_DYNAMIC_SHARED(name) extern __shared__ __align__(128) unsigned char name[]
#endif

#include "core/check.h"
#include "xc2/dtype.h"

namespace xc2::kernels::cuda {

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_f(float x);
template <>
__device__ __forceinline__ float from_f<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __half from_f<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// Rounds an f32 value through T (identity for float): what storing to a T tensor and reading back gives.
template <typename T>
__device__ __forceinline__ float round_to(float x) {
  return to_f(from_f<T>(x));
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// The end of a warp-per-column GEMV (gemv.cu, qgemv.cu): each row's lane sums reduced over the warp, then lane
// r < m writes y[r, col] = sum (+ bias[col]) (+ y[r, col] when accumulating), y being [m, n].
template <typename T, int M>
__device__ __forceinline__ void gemv_store_rows(float (&acc)[M], int m, int lane, int64_t col, int64_t n,
                                                const T* __restrict__ bias, T* __restrict__ y, int accumulate) {
#pragma unroll
  for (int r = 0; r < M; ++r) acc[r] = warp_sum(acc[r]);
#pragma unroll
  for (int r = 0; r < M; ++r) {
    if (r < m && lane == r) {
      float v = acc[r];
      if (bias) v += to_f(bias[col]);
      T* out = y + static_cast<int64_t>(r) * n + col;
      if (accumulate) v += to_f(*out);
      *out = from_f<T>(v);
    }
  }
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block; every thread gets the result. `scratch`: >= 32 floats of shared memory.
// Must be called by all threads of the block; blockDim.x a multiple of 32 (full-warp shuffles).
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < n_warps ? scratch[lane] : 0.0f;
  return warp_sum(v);
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// kernel<<<grid, block, smem, stream>>>(args...); the arguments convert to the kernel's parameter types.
template <typename... P, typename... A>
inline void launch_kernel(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, A&&... args) {
#if XC2_CUDA_EMULATOR
  ::xc2emu::launch(kernel, grid, block, smem, stream, std::forward<A>(args)...);
#else
  kernel<<<grid, block, smem, stream>>>(std::forward<A>(args)...);
#endif
}

// Throws xc2::Error{Cuda} if the last launch failed.
inline void launch_check(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    XC2_THROW(Cuda, "CUDA kernel launch failed: ", what, ": ", cudaGetErrorName(e), ": ", cudaGetErrorString(e));
}

}  // namespace xc2::kernels::cuda

// XC2_CUDA_DISPATCH(dtype, T, { ... uses T ... }): runs the body with T = float, __half or __nv_bfloat16.
#define XC2_CUDA_DISPATCH(dtype, T, ...)                                          \
  do {                                                                            \
    switch (dtype) {                                                              \
      case ::xc2::DType::F32: {                                                   \
        using T = float;                                                          \
        __VA_ARGS__;                                                              \
        break;                                                                    \
      }                                                                           \
      case ::xc2::DType::F16: {                                                   \
        using T = __half;                                                         \
        __VA_ARGS__;                                                              \
        break;                                                                    \
      }                                                                           \
      case ::xc2::DType::BF16: {                                                  \
        using T = __nv_bfloat16;                                                  \
        __VA_ARGS__;                                                              \
        break;                                                                    \
      }                                                                           \
      default:                                                                    \
        XC2_THROW(Internal, "CUDA kernel called with dtype ", ::xc2::dtype_name(dtype)); \
    }                                                                             \
  } while (0)
