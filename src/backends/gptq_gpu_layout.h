// A GPTQ linear repacked on the host into the GPU layout of kernels/common/gptq_gpu.h (the CUDA backend uploads
// these arrays as they are), and a host emulation of the CUDA kernels' arithmetic over that layout. Built in
// every configuration: the CPU tests check the repack and the kernels' index arithmetic without a GPU
// (tests/model/gptq_gpu_layout_test.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "io/gptq.h"

namespace xc2 {

struct GptqGpuLayout {
  int bits = 4;
  int64_t n = 0, k = 0, groups = 1;
  int64_t kw = 0;                   // words per output: k * bits / 32
  std::vector<uint32_t> q;          // [n][kw]
  std::vector<float> sz;            // [n][groups][2]: scale, zero (stored zero + 1)
  std::vector<int32_t> col_group;   // [k]: group of reordered column j
  std::vector<int32_t> vec_group;   // [kw / 4] or empty (see gptq_gpu.h)
  std::vector<int32_t> perm;        // [k]: input column of reordered column j; empty when the identity
  std::vector<float> bias;          // [n] or empty

  int p() const { return 32 / bits; }
  // Device bytes of the uploaded arrays, the bias taking bias_elem_bytes per value.
  size_t bytes(size_t bias_elem_bytes) const;
};

// The layout of a validated GPTQ linear (io::get_gptq_linear): one pass over its tensors.
GptqGpuLayout gptq_gpu_layout(const io::GptqLinearViews& v);

// ---- host emulation (tests) -----------------------------------------------------------------------------
// The dequantized weight [n][k] in the input column order, read back from the layout (w = scale * (q - zero)).
std::vector<float> gptq_gpu_dequantize(const GptqGpuLayout& w);

// y[m, n] (+)= x[m, k] . w^T (+ bias), x in the input column order, computed the way the CUDA GEMV kernels do
// (x gathered by perm; vector path: per 16-byte vector of words its vec_group's (scale, zero), sum of
// x * (q - zero) over the vector, times the scale; generic path: per column col_group). vector_path needs
// !w.vec_group.empty(). Summation order differs from the GPU's (one sequential sum here, 32 lanes there).
void gptq_gpu_emulate_linear(const GptqGpuLayout& w, const float* x, int64_t m, float* y, bool accumulate,
                             bool vector_path);

}  // namespace xc2
