// AVX2 kernels of the exact quantized linears (kernels/cpu/qgemm.h), chosen at run time on CPUs without
// AVX-512. The same scheme as qgemm_avx512.cpp with a tile's 16 lanes in two 8-lane halves: each 64-byte line
// of words is unpacked once (shift, mask, OR into the significand of 2^23, minus 2^23 + zero) for up to 2 rows
// of x. No int8 path here: qlinear_int8() needs AVX-512 VNNI.
#include "cpu/qgemm_internal.h"

#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#define XC2_Q256 __attribute__((target("avx2,fma,f16c")))

namespace xc2::kernels::cpu::detail {
namespace {

constexpr int kRowsMr = 2;
constexpr int kPrefetchWords = 16 * 32;

// 2^23 + value of lane bits [BITS * tt, BITS * (tt + 1)), as a float (exact).
template <int BITS>
XC2_Q256 inline __m256 biased(__m256i v, int tt) {
  const __m256i mask = _mm256_set1_epi32((1 << BITS) - 1);
  const __m256i magic = _mm256_set1_epi32(0x4B000000);
  const __m256i sh = tt == 0 ? v : _mm256_srli_epi32(v, BITS * tt);
  return _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(sh, mask), magic));
}

// 2^23 + zero point of lanes [8 * half, 8 * half + 8) of the tile, as floats.
XC2_Q256 inline __m256 zero_biased(const QuantMatrix& w, int32_t g, int64_t tile, int half) {
  const __m128i z8 =
      _mm_loadl_epi64(reinterpret_cast<const __m128i*>(w.zero_m1.data() + g * w.n_pad + tile * 16 + half * 8));
  const __m256i z = _mm256_add_epi32(_mm256_cvtepu8_epi32(z8), _mm256_set1_epi32(1));
  return _mm256_add_ps(_mm256_cvtepi32_ps(z), _mm256_set1_ps(8388608.0f));
}

XC2_Q256 inline void store_half(float* yrow, int64_t tile, int half, int64_t n, __m256 v, bool add, const float* bias) {
  alignas(32) float t[8];
  _mm256_store_ps(t, v);
  const int64_t c0 = tile * 16 + half * 8;
  for (int64_t c = 0; c < 8 && c0 + c < n; ++c) {
    float o = t[c] + (bias ? bias[c0 + c] : 0.0f);
    yrow[c0 + c] = add ? yrow[c0 + c] + o : o;
  }
}

template <int BITS, int MR>
XC2_Q256 void rows_tile(const QuantMatrix& w, int64_t tile, const float* x, int64_t ldx, float* y, int64_t ldy,
                        bool accumulate) {
  constexpr int P = 32 / BITS;
  constexpr int A = MR == 1 ? 2 : 1;  // independent chains per row and half
  const uint32_t* qt = w.q.data() + tile * w.kw * 16;
  __m256 total[MR][2];
  for (int i = 0; i < MR; ++i) total[i][0] = total[i][1] = _mm256_setzero_ps();
  for (size_t ri = 0; ri < w.run_group.size(); ++ri) {
    const int64_t r0 = w.run_start[ri], r1 = w.run_start[ri + 1];
    const int32_t g = w.run_group[ri];
    const __m256 zb0 = zero_biased(w, g, tile, 0), zb1 = zero_biased(w, g, tile, 1);
    __m256 acc[MR][2][A];
    for (int i = 0; i < MR; ++i)
      for (int a = 0; a < A; ++a) acc[i][0][a] = acc[i][1][a] = _mm256_setzero_ps();
    for (int64_t r = r0; r < r1; ++r) {
      _mm_prefetch(reinterpret_cast<const char*>(qt + r * 16 + kPrefetchWords), _MM_HINT_T0);
      const __m256i v0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qt + r * 16));
      const __m256i v1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qt + r * 16 + 8));
      const float* xc = x + r * P;
#pragma GCC unroll 8
      for (int tt = 0; tt < P; ++tt) {
        const __m256 w0 = _mm256_sub_ps(biased<BITS>(v0, tt), zb0);
        const __m256 w1 = _mm256_sub_ps(biased<BITS>(v1, tt), zb1);
        for (int i = 0; i < MR; ++i) {
          const __m256 xv = _mm256_set1_ps(xc[i * ldx + tt]);
          acc[i][0][tt % A] = _mm256_fmadd_ps(w0, xv, acc[i][0][tt % A]);
          acc[i][1][tt % A] = _mm256_fmadd_ps(w1, xv, acc[i][1][tt % A]);
        }
      }
    }
    const __m256 s0 = _mm256_loadu_ps(w.scale.data() + g * w.n_pad + tile * 16);
    const __m256 s1 = _mm256_loadu_ps(w.scale.data() + g * w.n_pad + tile * 16 + 8);
    for (int i = 0; i < MR; ++i) {
      __m256 a0 = acc[i][0][0], a1 = acc[i][1][0];
      for (int a = 1; a < A; ++a) {
        a0 = _mm256_add_ps(a0, acc[i][0][a]);
        a1 = _mm256_add_ps(a1, acc[i][1][a]);
      }
      total[i][0] = _mm256_fmadd_ps(s0, a0, total[i][0]);
      total[i][1] = _mm256_fmadd_ps(s1, a1, total[i][1]);
    }
  }
  const float* bias = w.bias.empty() ? nullptr : w.bias.data();
  for (int i = 0; i < MR; ++i) {
    store_half(y + i * ldy, tile, 0, w.n, total[i][0], accumulate, bias);
    store_half(y + i * ldy, tile, 1, w.n, total[i][1], accumulate, bias);
  }
}

template <int BITS>
XC2_Q256 void rows_bits(const QuantMatrix& w, const float* x, int64_t ldx, int64_t m, float* y, int64_t ldy,
                        int64_t t0, int64_t t1, bool accumulate) {
  for (int64_t t = t0; t < t1; ++t)
    for (int64_t i = 0; i < m; i += kRowsMr) {
      if (m - i >= 2) rows_tile<BITS, 2>(w, t, x + i * ldx, ldx, y + i * ldy, ldy, accumulate);
      else rows_tile<BITS, 1>(w, t, x + i * ldx, ldx, y + i * ldy, ldy, accumulate);
    }
}

void rows(const QuantMatrix& w, const float* x, int64_t ldx, int64_t m, float* y, int64_t ldy, int64_t t0, int64_t t1,
          bool accumulate) {
  if (w.bits == 4) rows_bits<4>(w, x, ldx, m, y, ldy, t0, t1, accumulate);
  else rows_bits<8>(w, x, ldx, m, y, ldy, t0, t1, accumulate);
}

template <int BITS>
XC2_Q256 void pack_bits(const QuantMatrix& w, int64_t row0, int64_t rows, int64_t k0, int64_t klen, float* wp,
                        int nr) {
  constexpr int P = 32 / BITS;
  const int64_t end = row0 + rows;
  if (!pack_is_tiled(w, row0, rows, k0, klen, nr)) {
    q_scalar_kernels()->pack(w, row0, rows, k0, klen, wp, nr);
    return;
  }
  const int64_t panels = (rows + nr - 1) / nr;
  const int64_t rw0 = k0 / P, rw1 = (k0 + klen) / P;
  for (int64_t pi = 0; pi < panels; ++pi) {
    for (int sub = 0; sub < nr / 16; ++sub) {
      const int64_t first = row0 + pi * nr + sub * 16;
      float* dst = wp + pi * klen * nr + sub * 16;
      if (first >= end || first >= w.n_pad) {
        for (int64_t kk = 0; kk < klen; ++kk) {
          _mm256_storeu_ps(dst + kk * nr, _mm256_setzero_ps());
          _mm256_storeu_ps(dst + kk * nr + 8, _mm256_setzero_ps());
        }
        continue;
      }
      const int64_t tile = first / 16;
      const uint32_t* qt = w.q.data() + tile * w.kw * 16;
      size_t ri = run_of_word(w, rw0);
      int32_t g = w.run_group[ri];
      __m256 zb0 = zero_biased(w, g, tile, 0), zb1 = zero_biased(w, g, tile, 1);
      __m256 s0 = _mm256_loadu_ps(w.scale.data() + g * w.n_pad + tile * 16);
      __m256 s1 = _mm256_loadu_ps(w.scale.data() + g * w.n_pad + tile * 16 + 8);
      for (int64_t r = rw0; r < rw1; ++r) {
        if (r >= w.run_start[ri + 1]) {
          g = w.run_group[++ri];
          zb0 = zero_biased(w, g, tile, 0);
          zb1 = zero_biased(w, g, tile, 1);
          s0 = _mm256_loadu_ps(w.scale.data() + g * w.n_pad + tile * 16);
          s1 = _mm256_loadu_ps(w.scale.data() + g * w.n_pad + tile * 16 + 8);
        }
        const __m256i v0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qt + r * 16));
        const __m256i v1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qt + r * 16 + 8));
        float* d = dst + (r * P - k0) * nr;
        for (int tt = 0; tt < P; ++tt) {
          _mm256_storeu_ps(d + tt * nr, _mm256_mul_ps(_mm256_sub_ps(biased<BITS>(v0, tt), zb0), s0));
          _mm256_storeu_ps(d + tt * nr + 8, _mm256_mul_ps(_mm256_sub_ps(biased<BITS>(v1, tt), zb1), s1));
        }
      }
    }
  }
}

void pack(const QuantMatrix& w, int64_t row0, int64_t rows, int64_t k0, int64_t klen, float* wp, int nr) {
  if (w.bits == 4) pack_bits<4>(w, row0, rows, k0, klen, wp, nr);
  else pack_bits<8>(w, row0, rows, k0, klen, wp, nr);
}

const QKernels kAvx2 = {rows, pack, nullptr};

}  // namespace

const QKernels* q_avx2_kernels() { return &kAvx2; }

}  // namespace xc2::kernels::cpu::detail

#else  // not x86

namespace xc2::kernels::cpu::detail {
const QKernels* q_avx2_kernels() { return nullptr; }
}  // namespace xc2::kernels::cpu::detail

#endif
