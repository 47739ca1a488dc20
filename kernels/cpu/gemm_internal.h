// Internal interface between the GEMM driver (gemm.cpp) and its per-ISA kernels
// (gemm_scalar in gemm.cpp, gemm_avx2.cpp, gemm_avx512.cpp). Not for use outside kernels/cpu.
//
// Packed layouts (f32, 64-byte aligned):
//   x panel:  ceil(rows / mr) micro-panels, each [klen][mr]:  xp[kk * mr + i] = x[row0 + i, k0 + kk]
//   w block:  ceil(rows / nr) micro-panels, each [klen][nr]:  wp[kk * nr + j] = widen(w[n0 + j, k0 + kk]),
//             rows past the end of the block are zero.
#pragma once

#include <cstdint>

#include "xc2/dtype.h"

namespace xc2::kernels::cpu::detail {

struct PackedKernels {
  int mr = 0, nr = 0;                    // micro-tile: mr rows of x (broadcast) x nr columns of y (vectors)
  int64_t kc = 0, mc = 0, nc = 0;        // default block sizes: k, n (w block in L2), m (x panel)
  // Widen + transpose w rows [0, rows) x cols [0, klen) (w already offset) into micro-panels.
  void (*pack_w)(const void* w, DType dtype, int64_t ldw, int64_t rows, int64_t klen, float* dst) = nullptr;
  // Transpose x rows [0, rows) x cols [0, klen) into micro-panels (padding rows are left unset).
  void (*pack_x)(const float* x, int64_t ldx, int64_t rows, int64_t klen, float* dst) = nullptr;
  // y[0:rows, 0:cols] = (load_c ? y : 0) + xp . wp (+ bias[0:cols] when bias != nullptr), in that order.
  // rows in [1, mr], cols in [1, nr].
  void (*tile)(int64_t klen, const float* xp, const float* wp, float* y, int64_t ldy, int rows, int cols,
               bool load_c, const float* bias) = nullptr;
};

// Rows path over w rows [n0, n1) and all m rows of x:
//   y[i, j] = (accumulate ? y[i, j] : 0) + dot(x[i, :], widen(w[j, :])) (+ bias[j]), in that order.
// bias is already f32 (or nullptr). scratch: rows_scratch_floats(m, k) floats, 64-byte aligned.
using RowsFn = void (*)(const float* x, int64_t ldx, const void* w, DType dtype, int64_t ldw, const float* bias,
                        float* y, int64_t ldy, int64_t m, int64_t k, int64_t n0, int64_t n1, bool accumulate,
                        float* scratch);

inline int64_t rows_scratch_floats(int64_t /*m*/, int64_t k) { return k + 16; }

struct IsaKernels {
  const char* name = nullptr;
  int64_t rows_max_m = 0;   // GemmPath::Auto: rows path for m <= rows_max_m
  int64_t rows_max_mk = 0;  //   and m * k <= rows_max_mk (x stays L2-resident while w rows stream)
  PackedKernels packed;
  RowsFn rows = nullptr;
};

// Each returns nullptr when the ISA is not compiled in (non-x86 build).
const IsaKernels* scalar_kernels();
const IsaKernels* avx2_kernels();
const IsaKernels* avx512_kernels();

}  // namespace xc2::kernels::cpu::detail
