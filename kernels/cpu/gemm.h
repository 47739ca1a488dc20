// CPU GEMM for linear layers: y[m, n] (+)= sum_k x[m, k] * w[n, k] (+ bias[n]), f32 accumulation.
// Weights stay in their checkpoint layout [n, k] and dtype (f32, f16 or bf16), read straight from the
// mapped file and widened to f32 on the fly. Activations x and outputs y are f32.
//
// Two paths, both exact in the sense that every product is an f32 product of the f32 activation and
// the exactly widened weight, summed in f32 (no bf16 rounding of activations, no vdpbf16ps):
//   rows    (small m, see gemm_uses_rows_path): streams each weight row once for all m rows of x (decode, memory-bound);
//           16-lane vector partial sums over k per output, then a fixed horizontal reduction.
//   packed  (larger m): cache-blocked GEMM; W blocks are widened + transposed once into f32 panels and
//           reused for all rows of x; register-blocked FMA micro-kernel (AVX-512: 12x32, AVX2: 6x16).
// Results do not depend on the thread count (each output is summed by one thread, in an order fixed
// by k and the path), nor on how rows of x are grouped within a path. They do differ in the last bits
// between the two paths and between ISAs (other summation orders), so a row's value can change when m
// crosses the rows/packed threshold (e.g. a prompt row in prefill vs the same row decoded alone).
// Instruction set: chosen at run time (AVX-512 > AVX2+FMA+F16C > scalar); XC2_GEMM_ISA=scalar|avx2|avx512
// forces one (falls back, with a warning, when the CPU lacks it).
#pragma once

#include <cstdint>

#include "core/thread_pool.h"
#include "xc2/dtype.h"

namespace xc2::kernels::cpu {

// A weight made on the fly instead of read from w (quantized weights): fill() writes the f32 values of
// rows [row0, row0 + rows) x columns [k0, k0 + klen) of the [n, k] weight to dst[r * ld + c]. It must be
// thread-safe; the GEMM calls it once per weight block and step, from the thread that uses the block.
// Optional pack(): the same values written straight into the packed path's weight micro-panels
// (ceil(rows / nr) panels of [klen][nr], rows past the block zero), saving the copy through fill().
struct WeightSource {
  void (*fill)(const void* ctx, int64_t row0, int64_t rows, int64_t k0, int64_t klen, float* dst, int64_t ld) = nullptr;
  void (*pack)(const void* ctx, int64_t row0, int64_t rows, int64_t k0, int64_t klen, float* wp, int nr) = nullptr;
  const void* ctx = nullptr;
};

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
  const WeightSource* w_source = nullptr;  // when set, w, w_dtype and ldw are unused
};

void gemm(const GemmArgs& args, ThreadPool& pool);

// Which instruction set gemm() dispatches to on this CPU: "avx512", "avx2", or "scalar".
const char* gemm_isa();

// ---- Tuning and testing hooks (defaults are what gemm(args, pool) uses) -----------------------------

enum class GemmIsa : uint8_t { Auto, Scalar, Avx2, Avx512 };
enum class GemmPath : uint8_t { Auto, Rows, Packed };


struct GemmOptions {
  GemmIsa isa = GemmIsa::Auto;     // Auto: XC2_GEMM_ISA if set, else the best the CPU supports
  GemmPath path = GemmPath::Auto;  // Auto: gemm_uses_rows_path(m, k, isa) ? rows : packed
  int64_t kc = 0, mc = 0, nc = 0;  // packed-path block sizes (k, n, m); 0 = the ISA's default
  int max_threads = 0;             // 0 = pool.size()
};

void gemm(const GemmArgs& args, ThreadPool& pool, const GemmOptions& opts);

bool gemm_isa_supported(GemmIsa isa);  // compiled in and supported by this CPU (Auto: true)
GemmIsa gemm_resolve_isa(GemmIsa isa);  // Auto -> XC2_GEMM_ISA or the best; unsupported -> best below it
const char* gemm_isa_name(GemmIsa isa);
// Whether GemmPath::Auto takes the rows path for this m and k on this ISA (Auto: the resolved one):
// m <= 4, or m <= a per-ISA limit and m * k within an L2-sized x budget. Measured with `xc2_gemm_bench --suite sweep`
// (see docs/perf.md): AVX-512 rows for m <= 40 and m * k <= 229376 (k = 4096: m <= 40; k = 14336: m <= 16).
bool gemm_uses_rows_path(int64_t m, int64_t k, GemmIsa isa = GemmIsa::Auto);

}  // namespace xc2::kernels::cpu
