// Token selection on the device, so that decode steps send a token id (greedy) or a short candidate list
// (sampling) to the host instead of the whole logits row. The arithmetic is the host Sampler's
// (src/text/sampler.cpp), so both give the same token for the same logits:
//   prepare_logits:  f32, repetition penalty on seen ids (l < 0 ? l * p : l / p), then l / temperature;
//   argmax:          lowest index on ties (one 1024-thread block: strided scan, warp then block reduce);
//   topk_candidates: every id whose value is >= the k-th largest (ties kept): one 1024-thread block runs a
//                    4-pass 8-bit radix select on order-preserving keys of the f32 values, then gathers;
//   mark_seen / add_scalar: one-thread bookkeeping kernels of a captured decode step.
#include <climits>

#include "cuda/common.cuh"
#include "cuda/cuda_kernels.h"

namespace xc2::kernels::cuda {
namespace {

constexpr int kBlock = 1024;

template <typename T>
__global__ void prepare_kernel(const T* __restrict__ logits, int64_t vocab, const int32_t* __restrict__ seen,
                               float penalty, float temperature, float* __restrict__ work) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < vocab; i += int64_t(gridDim.x) * blockDim.x) {
    float l = to_f(logits[i]);
    if (seen && seen[i] && penalty != 1.0f) l = l < 0 ? __fmul_rn(l, penalty) : __fdiv_rn(l, penalty);
    if (temperature != 1.0f) l = __fdiv_rn(l, temperature);
    work[i] = l;
  }
}

__device__ __forceinline__ bool better(float v, int i, float bv, int bi) {
  return v > bv || (v == bv && i < bi);
}

__global__ void __launch_bounds__(kBlock) argmax_kernel(const float* __restrict__ work, int vocab, int32_t* out_id) {
  float bv = -INFINITY;
  int bi = INT_MAX;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
    const float v = work[i];
    if (better(v, i, bv, bi)) bv = v, bi = i;
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (better(ov, oi, bv, bi)) bv = ov, bi = oi;
  }
  __shared__ float sv[32];
  __shared__ int si[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) sv[warp] = bv, si[warp] = bi;
  __syncthreads();
  if (warp == 0) {
    const int n_warps = blockDim.x >> 5;
    bv = lane < n_warps ? sv[lane] : -INFINITY;
    bi = lane < n_warps ? si[lane] : INT_MAX;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (better(ov, oi, bv, bi)) bv = ov, bi = oi;
    }
    if (lane == 0) *out_id = bi == INT_MAX ? 0 : bi;
  }
}

// Order-preserving key of an f32 (larger value -> larger key); -0 and +0 share a key; NaN gets the lowest
// key, so it is never a candidate.
__device__ __forceinline__ uint32_t key_of(float f) {
  if (f != f) return 0u;
  if (f == 0.0f) f = 0.0f;
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float value_of(uint32_t key) {
  const uint32_t u = (key & 0x80000000u) ? (key & 0x7fffffffu) : ~key;
  return __uint_as_float(u);
}

__global__ void __launch_bounds__(kBlock) topk_kernel(const float* __restrict__ work, int vocab, int k, int cap,
                                                      int32_t* out_count, int32_t* out_ids, float* out_vals) {
  __shared__ unsigned hist[256];
  __shared__ uint32_t s_prefix, s_mask;
  __shared__ int s_k, s_count;
  if (threadIdx.x == 0) s_prefix = 0, s_mask = 0, s_k = k, s_count = 0;
  for (int pass = 0; pass < 4; ++pass) {
    const int shift = 24 - 8 * pass;
    for (int i = threadIdx.x; i < 256; i += blockDim.x) hist[i] = 0;
    __syncthreads();
    const uint32_t prefix = s_prefix, mask = s_mask;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
      const uint32_t key = key_of(work[i]);
      if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      unsigned cum = 0;
      for (int d = 255; d >= 0; --d) {
        if (cum + hist[d] >= static_cast<unsigned>(s_k)) {
          s_prefix |= static_cast<uint32_t>(d) << shift;
          s_mask |= 255u << shift;
          s_k -= static_cast<int>(cum);
          break;
        }
        cum += hist[d];
      }
    }
    __syncthreads();
  }
  const float kth = value_of(s_prefix);
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
    const float v = work[i];
    if (v >= kth) {
      const int slot = atomicAdd(&s_count, 1);
      if (slot < cap) out_ids[slot] = i, out_vals[slot] = v;
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) *out_count = s_count;
}

__global__ void mark_seen_kernel(int32_t* seen, const int32_t* id) { seen[*id] = 1; }
__global__ void add_scalar_kernel(int32_t* x, int32_t delta) { *x += delta; }

}  // namespace

void prepare_logits(const void* logits, DType dtype, int64_t vocab, const int32_t* seen, float penalty,
                    float temperature, float* work, cudaStream_t stream) {
  XC2_CHECK(vocab > 0 && temperature > 0, InvalidArgument, "prepare_logits: vocabulary ", vocab, ", temperature ",
            temperature);
  const int grid = static_cast<int>(std::min<int64_t>(ceil_div(vocab, 256), 1024));
  XC2_CUDA_DISPATCH(dtype, T, {
    launch_kernel(prepare_kernel<T>, grid, 256, 0, stream, static_cast<const T*>(logits), vocab, seen, penalty,
                  temperature, work);
  });
  launch_check("prepare_logits");
}

void argmax(const float* work, int64_t vocab, int32_t* out_id, cudaStream_t stream) {
  XC2_CHECK(vocab > 0 && vocab < INT_MAX, InvalidArgument, "argmax: bad vocabulary size ", vocab);
  launch_kernel(argmax_kernel, 1, kBlock, 0, stream, work, static_cast<int>(vocab), out_id);
  launch_check("argmax");
}

void topk_candidates(const float* work, int64_t vocab, int k, int cap, int32_t* out_count, int32_t* out_ids,
                     float* out_vals, cudaStream_t stream) {
  XC2_CHECK(vocab > 0 && vocab < INT_MAX && k >= 1, InvalidArgument, "topk_candidates: bad sizes");
  launch_kernel(topk_kernel, 1, kBlock, 0, stream, work, static_cast<int>(vocab),
                std::min<int>(k, static_cast<int>(vocab)), cap, out_count, out_ids, out_vals);
  launch_check("topk_candidates");
}

void mark_seen(int32_t* seen, const int32_t* id, cudaStream_t stream) {
  launch_kernel(mark_seen_kernel, 1, 1, 0, stream, seen, id);
  launch_check("mark_seen");
}

void add_scalar(int32_t* x, int32_t delta, cudaStream_t stream) {
  launch_kernel(add_scalar_kernel, 1, 1, 0, stream, x, delta);
  launch_check("add_scalar");
}

}  // namespace xc2::kernels::cuda
