// CPU GEMM for linear layers: y[m, n] (+)= sum_k x[m, k] * w[n, k] (+ bias[n]), f32 accumulation.
// Weights stay in their checkpoint layout [n, k] and dtype (f32, f16 or bf16), read straight from the
// mapped file and widened to f32 on the fly. Activations x and outputs y are f32.
#pragma once

#include <cstdint>

#include "core/thread_pool.h"
#include "xc2/dtype.h"

namespace xc2::kernels::cpu {

struct GemmArgs {
  const float* x = nullptr;  // x: [m, k], row stride ldx (elements)
  int64_t ldx = 0;
  const void* w = nullptr;   // w: [n, k] in w_dtype, row stride ldw (elements)
  DType w_dtype = DType::F32;
  int64_t ldw = 0;
  const void* bias = nullptr;  // bias: [n] in bias_dtype, or nullptr
  DType bias_dtype = DType::F32;
  float* y = nullptr;        // y: [m, n], row stride ldy (elements)
  int64_t ldy = 0;
  int64_t m = 0, n = 0, k = 0;
  bool accumulate = false;   // y += result (PLoRA's second GEMM) instead of y = result
};

void gemm(const GemmArgs& args, ThreadPool& pool);

// Which instruction set gemm() dispatches to on this CPU: "avx512", "avx2", or "scalar".
const char* gemm_isa();

}  // namespace xc2::kernels::cpu
