// The GPU layout of a GPTQ-quantized linear [n, k] (src/backends/gptq_gpu_layout.h builds it on the host at load,
// kernels/cuda/qgemv.cu reads it), and the few index and value helpers both sides share, so that the host
// emulation the CPU tests run (gptq_gpu_emulate_linear) does the kernels' arithmetic with the same code.
//
//   bits b in {4, 8}, p = 32 / b values per 32-bit word, kw = k / p words per output.
//   Column order: the input columns are reordered so that every group is one contiguous run (a stable sort by
//     group: the identity unless the checkpoint is act-order). perm[j] = the input column of reordered column j;
//     the backend gathers x into that order (xp[r, j] = x[r, perm[j]]) before the kernels run.
//   q          uint32 [n][kw]     word w of output c: reordered columns w*p .. w*p+p-1 of weight row c, value i
//                                 at bits i*b (GPTQ's own packing, transposed so one output's words are
//                                 contiguous along k: a warp streams them with 16-byte loads).
//   sz         float2 [n][groups] {scale, zero} of (output c, group g), zero = stored zero + 1 (GPTQ), both f32:
//                                 w[c, j] = scale * (q[c, j] - zero), exact in f32 for f16/bf16 scales (an
//                                 11-bit significand times an integer of at most 9 bits).
//   col_group  int32 [k]          group of reordered column j.
//   vec_group  int32 [kw / 4]     group of 16-byte vector v (words 4v .. 4v+3, reordered columns 4pv .. 4pv+4p-1).
//                                 Only when kw % 4 == 0 and no group boundary falls inside a vector (every group
//                                 size a multiple of 4p: 32 columns at 4 bits, 16 at 8); without it the kernels
//                                 take their generic per-column path.
//   bias       [n] in the activation dtype, optional.
// Offsets are int64 everywhere (n * kw exceeds 2^31 words for no real shape, but n * k does for the head).
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define XC2_HD __host__ __device__ __forceinline__
#else
#define XC2_HD inline
#endif

namespace xc2::kernels::gptq_gpu {

constexpr int kWordsPerVec = 4;  // one 16-byte load

XC2_HD int values_per_word(int bits) { return 32 / bits; }

// Value i (0 .. p-1) of a packed word.
XC2_HD uint32_t value(uint32_t word, int i, int bits) { return (word >> (i * bits)) & ((1u << bits) - 1u); }

// q - zero as an exact f32 without an integer conversion: the bits 0x4B000000 | q are the float 2^23 + q
// (q < 2^23), and `biased_zero` is 2^23 + zero (exact: zero <= 256), so one subtraction gives q - zero exactly.
XC2_HD float biased_zero(float zero) { return 8388608.0f + zero; }
XC2_HD float q_minus_zero(uint32_t q, float biased) {
  const uint32_t bits = 0x4B000000u | q;
#if defined(__CUDA_ARCH__)
  return __uint_as_float(bits) - biased;
#else
  float f;
  std::memcpy(&f, &bits, 4);
  return f - biased;
#endif
}

// Offsets of output c's first word in q, and of its (scale, zero) pair of group g in sz (in pairs: the float2
// index; the floats are at 2 * that and 2 * that + 1).
XC2_HD int64_t q_row(int64_t c, int64_t kw) { return c * kw; }
XC2_HD int64_t sz_pair(int64_t c, int64_t groups, int64_t g) { return c * groups + g; }

}  // namespace xc2::kernels::gptq_gpu
