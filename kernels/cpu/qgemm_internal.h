// Internal interface between the quantized linears (qgemm.cpp) and their per-ISA kernels (scalar in
// qgemm.cpp, qgemm_avx2.cpp, qgemm_avx512.cpp). Not for use outside kernels/cpu.
#pragma once

#include <algorithm>
#include <cstdint>

#include "cpu/qgemm.h"

namespace xc2::kernels::cpu::detail {

// Rows path over tiles [t0, t1) and all m rows of x (x already in the matrix's column order):
//   y[i, j] = (accumulate ? y[i, j] : 0) + sum_g scale[g, j] * sum_{c in g} x[i, c] * (q[j, c] - zero[g, j]) (+ bias)
using QRowsFn = void (*)(const QuantMatrix& w, const float* x, int64_t ldx, int64_t m, float* y, int64_t ldy,
                         int64_t t0, int64_t t1, bool accumulate);

// Dequantizes rows [row0, row0 + rows) x columns [k0, k0 + klen) straight into the f32 GEMM's packed weight
// panels (kernels/cpu/gemm_internal.h: ceil(rows / nr) micro-panels [klen][nr], rows past the block zero).
using QPackFn = void (*)(const QuantMatrix& w, int64_t row0, int64_t rows, int64_t k0, int64_t klen, float* wp,
                         int nr);

// Whether a pack call can take the SIMD kernels' tiled path: the block starts on a tile and on a word, ends on a
// tile or at n, and a panel holds whole tiles (else they fall back to the scalar pack).
inline bool pack_is_tiled(const QuantMatrix& w, int64_t row0, int64_t rows, int64_t k0, int64_t klen, int nr) {
  const int64_t end = row0 + rows;
  return row0 % 16 == 0 && k0 % w.p() == 0 && klen % w.p() == 0 && nr % 16 == 0 && (end % 16 == 0 || end >= w.n);
}

// The word run (QuantMatrix::run_start) that holds word row r.
inline size_t run_of_word(const QuantMatrix& w, int64_t r) {
  return static_cast<size_t>(
      std::upper_bound(w.run_start.begin(), w.run_start.end(), static_cast<int32_t>(r)) - w.run_start.begin() - 1);
}

// int8 activations (qlinear_int8): x quantized per row and 32-column block. For 4-bit weights the bytes of
// every 8 columns are stored as columns 0, 2, 4, 6, 1, 3, 5, 7 (the low and the high nibbles of a word).
struct QuantizedX {
  const int8_t* q = nullptr;   // [m][k], each value in [-127, 127]
  const float* scale = nullptr;  // [m][k / 32]
  const int32_t* sum = nullptr;  // [m][k / 32]: the sum of the block's int8 values
  int64_t k = 0;
};
// One k segment: 32-column blocks [b0, b1), all in group g (made at repack: QuantMatrix::segments).
using KSegment = QuantMatrix::Segment;
// Tiles [t0, t1) x rows [i0, i1) over segments [s0, s1) (zs[i * n_seg + s]: sum over the segment's blocks of
// scale * sum of the block's int8 values); adds into y when `add`, else stores (+ bias when bias != nullptr).
// Per output and segment: acc = 0, then per block acc = fma(float(int32 block sum), x scale, acc); then
// total = fma(weight scale, acc - zero * zs (one fnmadd), total) over the segments; y = (y +) (total (+ bias)).
// Every kernel keeps exactly this order, so they all give the same bits.
using QInt8Fn = void (*)(const QuantMatrix& w, const QuantizedX& x, const KSegment* segs, int64_t s0, int64_t s1,
                         const float* zs, int64_t n_seg, int64_t i0, int64_t i1, int64_t t0, int64_t t1, float* y,
                         int64_t ldy, bool add, const float* bias);

// Rows [i0, i1) of x to int8, as quantize_x_int8() (kernels/cpu/qgemm.h) describes.
using QQuantizeXFn = void (*)(const float* x, int64_t ldx, int64_t i0, int64_t i1, int64_t k, int bits, int8_t* q,
                              float* scale, int32_t* sum);
void quantize_x_scalar(const float* x, int64_t ldx, int64_t i0, int64_t i1, int64_t k, int bits, int8_t* q,
                       float* scale, int32_t* sum);
QQuantizeXFn q_avx512_quantize_x();  // nullptr when not compiled in or without AVX-512 BW on this CPU

struct QKernels {
  QRowsFn rows = nullptr;
  QPackFn pack = nullptr;
  QInt8Fn int8 = nullptr;  // null: none (scalar); AVX2: the kernel without VNNI; AVX-512: AVX-512 VNNI
};

const QKernels* q_scalar_kernels();
const QKernels* q_avx2_kernels();    // nullptr when not compiled in
const QKernels* q_avx512_kernels();  // nullptr when not compiled in
QInt8Fn q_avxvnni_int8();            // the AVX2 int8 kernel with AVX-VNNI; nullptr when not compiled in
bool cpu_has_avx512_vnni();
bool cpu_has_avx_vnni();             // CPUID leaf 7 subleaf 1, EAX bit 4 (the VEX vpdpbusd)

}  // namespace xc2::kernels::cpu::detail
