// Quantized (GPTQ) weights on the CPU: the layout they are repacked into at load, and the linear over them.
//   QuantMatrix: the [n, k] weight row-major by output row n, each row's k values packed `bits` at a time into
//   uint32 words (little end first), with the input columns reordered so that every group is one contiguous run
//   (act-order checkpoints: column j of the matrix is input column perm[j]); per (row, group) the scale and
//   the integer zero point. w[n, j] = scale[n, g] * (q[n, j] - zero[n, g]), g = group[j], is exact in f32
//   (an 11-bit significand times an integer of at most 9 bits).
//   Load cost: one pass over the tensors (transpose of qweight); memory: the packed bits plus 6 bytes per
//   (row, group) (f32 scale, u16 zero) and 8 bytes per input column (perm, group), i.e. about the size of the GPTQ tensors.
//
//   qlinear(): y (+)= x . w^T (+ bias) through the f32 GEMM (kernels/cpu/gemm.h) with the weight dequantized on
//   the fly, block by block, into the GEMM's own scratch: never a full f32 copy of the weight. Small m (decode)
//   takes the rows path: each block of 16 weight rows is unpacked once per call and used for all m rows of x.
//   Results are those of the f32 GEMM on the dequantized weight (columns summed in the reordered order).
#pragma once

#include <cstdint>
#include <vector>

#include "core/thread_pool.h"
#include "xc2/dtype.h"

namespace xc2::kernels::cpu {

// Raw GPTQ tensors of one linear (layout of io/gptq.h), already validated.
struct GptqTensors {
  int bits = 4;
  int64_t n = 0, k = 0, groups = 1;
  int64_t group_size = -1;        // as configured; -1: one group
  const void* qweight = nullptr;  // I32 [k * bits / 32, n]
  const void* qzeros = nullptr;   // I32 [groups, ceil(n * bits / 32)], stored zero - 1
  const void* scales = nullptr;   // [groups, n] in scales_dtype
  DType scales_dtype = DType::F16;
  const void* g_idx = nullptr;    // I32 [k] or null (then column j is in group j / group_size)
  const void* bias = nullptr;     // [n] in bias_dtype or null
  DType bias_dtype = DType::F16;
};

struct QuantMatrix {
  int bits = 4;
  int64_t n = 0, k = 0, groups = 1;
  int64_t words = 0;              // uint32 words per row: k * bits / 32
  std::vector<uint32_t> q;        // [n][words]
  std::vector<float> scale;       // [n][groups] (the stored f16, BF16 or F32 value)
  std::vector<uint16_t> zero;     // [n][groups], 0 .. 2^bits
  std::vector<int32_t> group;     // [k]: group of (reordered) column j, non-decreasing
  std::vector<int32_t> perm;      // [k]: input column of column j; empty when the identity
  std::vector<float> bias;        // [n] or empty
  int64_t uniform_group = 0;      // > 0: group[j] == j / uniform_group for all j (the fast kernels' case)

  size_t bytes() const;           // resident bytes (what one pass over the weight reads)
};

QuantMatrix repack_gptq(const GptqTensors& t);

// f32 values of rows [row0, row0 + rows) x (reordered) columns [k0, k0 + klen) into dst[r * ld + c].
void dequantize(const QuantMatrix& w, int64_t row0, int64_t rows, int64_t k0, int64_t klen, float* dst, int64_t ld);

// y[m, n] (+)= x[m, k] . w^T (+ bias). x in the input column order (the reorder is applied here).
void qlinear(const float* x, int64_t ldx, const QuantMatrix& w, float* y, int64_t ldy, int64_t m, bool accumulate,
             ThreadPool& pool);

}  // namespace xc2::kernels::cpu
