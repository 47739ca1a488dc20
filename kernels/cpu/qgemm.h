// Quantized (GPTQ) weights on the CPU: the layout they are repacked into at load, and the linears over them.
//
//   QuantMatrix: the [n, k] weight in tiles of 16 output rows (n padded to a multiple of 16 with zero rows).
//   A tile is kw = k * bits / 32 words per output row, stored [kw][16]: word (r, l) holds the p = 32 / bits
//   values of input columns r * p .. r * p + p - 1 of output row 16 * tile + l, `bits` at a time, little end
//   first: GPTQ's own qweight word, so one 64-byte line is 16 output rows x p columns, a tile one contiguous
//   stream. Input columns are reordered so that every group is one contiguous run (act-order checkpoints:
//   column j of the matrix is input column perm[j]). Per (group, output row): the f32 scale and the zero point
//   minus one (u8; GPTQ's stored value). w[n, j] = scale[g, n] * (q[n, j] - zero[g, n]), g = group[j], is exact
//   in f32 (an 11-bit f16 significand times an integer of at most 9 bits).
//   Load cost: one pass over the GPTQ tensors, by the pool's threads. Memory: the packed bits plus 5 bytes per
//   (group, row) and 8 bytes per input column (perm, group): W4 with group size 128 is 0.54 bytes per weight.
//
//   qlinear(): y (+)= x . w^T (+ bias), the exact path: every product is x times the exactly dequantized weight.
//     rows path (decode, m up to the GEMM's rows limit): each tile is unpacked once per call in registers and
//       used for all m rows; per group the 16 lanes accumulate sum x * (q - zero), then add scale * that sum.
//     packed path (prefill): the f32 GEMM (kernels/cpu/gemm.h) with each weight block dequantized straight into
//       the GEMM's packed panels: never a full f32 copy of the weight.
//   qlinear_int8(): the fast prefill. x is quantized on the fly to int8 in blocks of 32 input columns (one f32
//     scale per block, round to nearest: x ~ sx * xq), the weights' integers are used as they are, and
//     sum_j xq * q is accumulated exactly in int32; the zero point comes off as zero * sum_j xq per block.
//     Not exact: x's rounding (relative 1/254 per block) is the error. Three kernels (QInt8Kernel) compute the
//     same int32 block sums and then the same f32 operations in the same order, so their results are
//     identical bit for bit:
//       AVX-512 VNNI  vpdpbusd on 16 lanes (zmm);
//       AVX-VNNI      vpdpbusd on 8 lanes (ymm, the VEX form: Alder Lake and later, Zen 5);
//       AVX2          vpmaddubsw + vpmaddwd without VNNI: 4-bit weights (0..15) times xq (|xq| <= 127) cannot
//                     saturate the int16 pair sums, 8-bit ones are made signed (q - 128, |q - 128| as the
//                     unsigned operand, xq's sign flipped where q < 128) and 128 * sum xq added back.
//     Needs AVX2 + FMA + F16C (qlinear_int8_supported()); callers fall back to qlinear().
// Instruction set: AVX-512, AVX2 or scalar, chosen at run time like the f32 GEMM (XC2_GEMM_ISA); the int8 path
// takes the best kernel within that ISA (XC2_QINT8 forces one, see qlinear_int8_kernel()).
#pragma once

#include <cstdint>
#include <vector>

#include "core/thread_pool.h"
#include "cpu/gemm.h"
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

// The packed values' storage: 64-byte aligned (a tile line is one cache line), and from 2 MiB on in memory
// advised for transparent huge pages (decode streams every weight each token; 4 KB pages cost TLB walks).
class WordArray {
 public:
  WordArray() = default;
  explicit WordArray(size_t n);  // zero-filled
  // Not filled: the caller writes every word (the first write of each page is its first touch, so threads that
  // write their own tiles share the page faults, which cost about 10 us per 4 KiB on the development VM).
  static WordArray uninitialized(size_t n);
  WordArray(const WordArray& o);
  WordArray& operator=(const WordArray& o);
  WordArray(WordArray&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr, o.n_ = 0; }
  WordArray& operator=(WordArray&& o) noexcept;
  ~WordArray();
  uint32_t* data() { return p_; }
  const uint32_t* data() const { return p_; }
  size_t size() const { return n_; }
  uint32_t& operator[](size_t i) { return p_[i]; }
  const uint32_t& operator[](size_t i) const { return p_[i]; }

 private:
  uint32_t* p_ = nullptr;
  size_t n_ = 0;
};

struct QuantMatrix {
  int bits = 4;
  int64_t n = 0, k = 0, groups = 1;
  int64_t n_pad = 0;              // n rounded up to 16
  int64_t kw = 0;                 // words per output row: k * bits / 32
  WordArray q;                    // [n_pad / 16][kw][16]
  // Scales and zeros per tile of 16 output rows, its groups in order ([n_pad / 16][groups][16], index gz): a
  // tile's walk along k reads them as one sequential stream next to its words, instead of one line per group
  // n_pad apart (in decode those misses were a third of the int8 kernel's time).
  std::vector<float> scale;       // the stored f16, BF16 or F32 value; 0 in padding rows
  std::vector<uint8_t> zero_m1;   // zero point - 1
  std::vector<int32_t> group;     // [k]: group of (reordered) column j, non-decreasing
  std::vector<int32_t> perm;      // [k]: input column of column j; empty when the identity
  std::vector<float> bias;        // [n] or empty
  // Runs of words with one group: word rows [run_start[i], run_start[i + 1]) are all in group run_group[i].
  // Empty when a group boundary falls inside a word (then the generic kernels run).
  std::vector<int32_t> run_start, run_group;
  int64_t uniform_group = 0;      // > 0: group[j] == j / uniform_group for all j
  // The int8 path's k segments: 32-column blocks [b0, b1) all in group g, cut into k chunks of up to 16384
  // columns; chunk_start: the first segment of every chunk, then segments.size(). Both empty when a group
  // boundary falls inside a 32-column block (then qlinear_int8() cannot run this matrix).
  struct Segment {
    int32_t b0, b1, g;
  };
  std::vector<Segment> segments;
  std::vector<int64_t> chunk_start;

  int p() const { return 32 / bits; }
  // Index into scale / zero_m1 of group g, output row r; and of the first of tile `tile`'s 16 rows in group g.
  size_t gz(int64_t g, int64_t r) const { return static_cast<size_t>(((r / 16) * groups + g) * 16 + r % 16); }
  size_t gz_tile(int64_t g, int64_t tile) const { return static_cast<size_t>((tile * groups + g) * 16); }
  size_t bytes() const;           // resident bytes (what one pass over the weight reads)
  // Dequantized value of output row r, (reordered) column j.
  float at(int64_t r, int64_t j) const;
};

// The tiles are written by the pool's threads (each its own tiles, whole) when a pool is given.
QuantMatrix repack_gptq(const GptqTensors& t, ThreadPool* pool = nullptr);

// An 8-bit matrix for the int8 kernels from a 16-bit or f32 weight w [n, k], k a multiple of 32: symmetric round to
// nearest with one scale per output row (per channel), scale = max |w| / 127 in f32, q = round-half-even(w /
// scale) clamped to [-127, 127], stored as q + 128 (zero point 128). The fast path runs the 16-bit PLoRA A/B
// weights of a quantized model this way (half their 16-bit bytes; the int8 kernels instead of the f32 GEMM; one
// group per row because the kernels' per-group steps cost more than the 256 inputs of a Plora_B row: 32-column
// groups ran the [14336, 256] shape at 1.1x the f32 GEMM, one group per row at 1.9x). Tiles of 16 rows split over
// the pool, written straight into the layout (the same matrix as repack_gptq() of that GPTQ layout).
QuantMatrix quantize_rtn8(const void* w, DType dtype, int64_t n, int64_t k, ThreadPool& pool);

// f32 values of rows [row0, row0 + rows) x (reordered) columns [k0, k0 + klen) into dst[r * ld + c].
void dequantize(const QuantMatrix& w, int64_t row0, int64_t rows, int64_t k0, int64_t klen, float* dst, int64_t ld);

struct QLinearOptions {
  GemmIsa isa = GemmIsa::Auto;
  GemmPath path = GemmPath::Auto;  // Auto: the f32 GEMM's rows/packed rule (gemm_uses_rows_path)
};

// y[m, n] (+)= x[m, k] . w^T (+ bias). x in the input column order (the reorder is applied here).
void qlinear(const float* x, int64_t ldx, const QuantMatrix& w, float* y, int64_t ldy, int64_t m, bool accumulate,
             ThreadPool& pool, const QLinearOptions& opts = {});

// The int8 path's kernels (see above). None: no int8 path on this CPU / build.
enum class QInt8Kernel : uint8_t { Auto, None, Avx2, AvxVnni, Avx512Vnni };
// Compiled in and supported by this CPU (AVX-512 VNNI: also AVX-512 F/BW/VL/DQ; all: AVX2 + FMA + F16C).
bool qint8_kernel_available(QInt8Kernel k);
// The kernel qlinear_int8(..., k) runs. Auto: XC2_QINT8=avx512|avxvnni|avx2 where set and available (else a
// warning), otherwise the best available within the f32 GEMM's ISA (gemm_resolve_isa: avx512 -> AVX-512 VNNI,
// else AVX-VNNI, else AVX2; avx2 -> AVX-VNNI, else AVX2; scalar -> None). A named kernel: itself, None where
// it is not available.
QInt8Kernel qlinear_int8_kernel(QInt8Kernel k = QInt8Kernel::Auto);
const char* qint8_kernel_name(QInt8Kernel k);  // "AVX-512 VNNI", "AVX-VNNI", "AVX2", "none", "auto"

// Whether qlinear_int8() runs on this CPU (qlinear_int8_kernel(k) != None) for this matrix (groups aligned to
// 32 columns).
bool qlinear_int8_supported(QInt8Kernel k = QInt8Kernel::Auto);
// For a matrix: also needs 32-column groups; and where the automatic choice is the plain AVX2 kernel on a CPU whose
// f32 GEMM runs AVX-512, not for 8-bit weights (slower than the exact AVX-512 path there).
bool qlinear_int8_supported(const QuantMatrix& w, QInt8Kernel k = QInt8Kernel::Auto);
// A product fused into qlinear_int8()'s pass over y: y[row0 + r] += x[r] . dequant(w)^T (+ w's bias) for r < rows,
// with w [n, k2] of the main matrix's n (the PLoRA B delta of an image's rows). The same int8 math, bit for bit, as
// a qlinear_int8(x, ldx, *w, y + row0 * ldy, ldy, rows, true, ...) call after the main one, without its second
// pass over y (run per block of rows and tiles while the main product's y lines are still in cache).
struct QInt8Extra {
  const QuantMatrix* w = nullptr;
  const float* x = nullptr;
  int64_t ldx = 0, row0 = 0, rows = 0;
};

// The fast prefill (see above) with kernel qlinear_int8_kernel(k), and the products in `extra` fused into it.
// Error{Unsupported} where !qlinear_int8_supported(w, k) (or for an extra's matrix).
void qlinear_int8(const float* x, int64_t ldx, const QuantMatrix& w, float* y, int64_t ldy, int64_t m,
                  bool accumulate, ThreadPool& pool, QInt8Kernel k = QInt8Kernel::Auto,
                  const std::vector<QInt8Extra>* extra = nullptr);

// qlinear_int8()'s first step, for tests: rows [0, m) of x (k columns, k % 32 == 0) to int8 with one scale
// (max |x| / 127) per 32 columns, round to nearest even, q [m][k] (for 4-bit weights each 8 columns stored as
// 0, 2, 4, 6, 1, 3, 5, 7), scale and the sum of each block's int8 values [m][k / 32]. simd: the AVX-512 version
// where this CPU has it (the same bits as the scalar one).
void quantize_x_int8(const float* x, int64_t ldx, int64_t m, int64_t k, int bits, int8_t* q, float* scale,
                     int32_t* sum, bool simd);

}  // namespace xc2::kernels::cpu
