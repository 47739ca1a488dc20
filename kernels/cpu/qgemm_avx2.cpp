// AVX2 kernels of the quantized linears (kernels/cpu/qgemm.h), chosen at run time on CPUs without AVX-512.
// The same scheme as qgemm_avx512.cpp with a tile's 16 lanes in two 8-lane halves:
//   rows, pack (exact): each 64-byte line of words is unpacked once (shift, mask, OR into the significand of
//         2^23, minus 2^23 + zero) for up to 2 rows of x.
//   int8: 4 rows of x per pass over a tile's 32-column block; per word line (both halves) the u8 weights are
//         used for all 4 rows, each broadcast x dword for both halves. The int32 block sums, exactly:
//         AVX-VNNI: vpdpbusd (ymm).
//         AVX2, 4-bit: vpmaddubsw (weights 0..15 times |xq| <= 127: pair sums within 3810) summed in int16
//           over the block (8 per lane: within 30480), then one vpmaddwd by ones.
//         AVX2, 8-bit: vpmaddubsw would saturate (255 * 127 * 2 > 32767): the weights are made signed
//           (q ^ 0x80 = q - 128), |q - 128| (0..128) is the unsigned operand and xq with the sign of q - 128
//           (vpsignb; |xq| <= 127 so never -128) the signed one: pair sums within 2 * 128 * 127 = 32512;
//           vpmaddwd by ones per word line; the block sum starts at 128 * sum(xq).
//         Then the f32 steps of qgemm_avx512.cpp in the same order (qgemm_internal.h): the same bits.
#include "cpu/qgemm_internal.h"

#if defined(__x86_64__) || defined(__i386__)

#include <cpuid.h>
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#define XC2_Q256 __attribute__((target("avx2,fma,f16c")))
#define XC2_Q256_VNNI __attribute__((target("avx2,fma,f16c,avxvnni")))

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
      _mm_loadl_epi64(reinterpret_cast<const __m128i*>(w.zero_m1.data() + w.gz_tile(g, tile) + half * 8));
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
    const __m256 s0 = _mm256_loadu_ps(w.scale.data() + w.gz_tile(g, tile));
    const __m256 s1 = _mm256_loadu_ps(w.scale.data() + w.gz_tile(g, tile) + 8);
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
      __m256 s0 = _mm256_loadu_ps(w.scale.data() + w.gz_tile(g, tile));
      __m256 s1 = _mm256_loadu_ps(w.scale.data() + w.gz_tile(g, tile) + 8);
      for (int64_t r = rw0; r < rw1; ++r) {
        if (r >= w.run_start[ri + 1]) {
          g = w.run_group[++ri];
          zb0 = zero_biased(w, g, tile, 0);
          zb1 = zero_biased(w, g, tile, 1);
          s0 = _mm256_loadu_ps(w.scale.data() + w.gz_tile(g, tile));
          s1 = _mm256_loadu_ps(w.scale.data() + w.gz_tile(g, tile) + 8);
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

// ---- int8 activations ----------------------------------------------------------------------------------

// Rows of x per pass over a tile's block (16 ymm: 8 sums, 2-4 weight vectors, x, constants; xc2_gemm_bench
// --suite qprefill, 1 thread, Zen 5: 2, 3 and 4 rows within a few % of each other, 6 spills).
constexpr int kInt8Mr = 4;

inline int32_t x_dword(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// The f32 state of MR rows x one tile (two halves): acc over the blocks of a segment, total over the segments.
template <int MR>
struct Int8Acc {
  alignas(32) float acc[MR][2][8];
  alignas(32) float total[MR][2][8];
};

XC2_Q256 inline void int8_zero(float* p, int count) {
  for (int c = 0; c < count; c += 8) _mm256_store_ps(p + c, _mm256_setzero_ps());
}

// acc = fma(float(d), sx, acc): one block's int32 sum times x's block scale (exact conversion: |d| < 2^24).
XC2_Q256 inline void int8_block(float* acc, __m256i d, __m256 sx) {
  _mm256_store_ps(acc, _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), sx, _mm256_load_ps(acc)));
}

// End of a segment (group g): total = fma(scale, acc - zero * zs, total) per row and half.
template <int MR>
XC2_Q256 inline void int8_segment_end(Int8Acc<MR>& st, const QuantMatrix& w, int32_t g, int64_t tile, const float* zs,
                                      int64_t n_seg) {
  for (int h = 0; h < 2; ++h) {
    const __m128i z8 =
        _mm_loadl_epi64(reinterpret_cast<const __m128i*>(w.zero_m1.data() + w.gz_tile(g, tile) + h * 8));
    const __m256 zf = _mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_cvtepu8_epi32(z8), _mm256_set1_epi32(1)));
    const __m256 sw = _mm256_loadu_ps(w.scale.data() + w.gz_tile(g, tile) + h * 8);
    for (int i = 0; i < MR; ++i) {
      const __m256 tv = _mm256_fnmadd_ps(zf, _mm256_set1_ps(zs[i * n_seg]), _mm256_load_ps(st.acc[i][h]));
      _mm256_store_ps(st.total[i][h], _mm256_fmadd_ps(sw, tv, _mm256_load_ps(st.total[i][h])));
    }
  }
}

template <int MR>
XC2_Q256 inline void int8_store(const Int8Acc<MR>& st, float* y, int64_t ldy, int64_t tile, int64_t n, bool add,
                                const float* bias) {
  for (int i = 0; i < MR; ++i)
    for (int h = 0; h < 2; ++h) store_half(y + i * ldy, tile, h, n, _mm256_load_ps(st.total[i][h]), add, bias);
}

// MR rows from i0 x one tile over segments [s0, s1), AVX-VNNI.
template <int BITS, int MR>
XC2_Q256_VNNI void int8_tile_vnni(const QuantMatrix& w, const QuantizedX& x, const KSegment* segs, int64_t s0,
                                  int64_t s1, const float* zs, int64_t n_seg, int64_t i0, int64_t tile, float* y,
                                  int64_t ldy, bool add, const float* bias) {
  constexpr int WPB = BITS == 4 ? 4 : 8;  // word lines per 32-column block
  const int64_t nb = x.k / 32;
  const uint32_t* qt = w.q.data() + tile * w.kw * 16;
  const __m256i nib = _mm256_set1_epi32(0x0F0F0F0F);
  Int8Acc<MR> st;
  int8_zero(&st.total[0][0][0], MR * 16);
  for (int64_t sg = s0; sg < s1; ++sg) {
    const KSegment seg = segs[sg];
    int8_zero(&st.acc[0][0][0], MR * 16);
    for (int32_t b = seg.b0; b < seg.b1; ++b) {
      const uint32_t* src = qt + static_cast<int64_t>(b) * WPB * 16;
      const int8_t* xb = x.q + i0 * x.k + static_cast<int64_t>(b) * 32;
      __m256i d[MR][2];
      for (int i = 0; i < MR; ++i) d[i][0] = d[i][1] = _mm256_setzero_si256();
#pragma GCC unroll 8
      for (int j = 0; j < WPB; ++j) {
        _mm_prefetch(reinterpret_cast<const char*>(src + j * 16 + kPrefetchWords), _MM_HINT_T0);
        const __m256i v0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + j * 16));
        const __m256i v1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + j * 16 + 8));
        if constexpr (BITS == 4) {
          // Low nibbles: columns 0, 2, 4, 6 of the word (x dword 2j); high nibbles: 1, 3, 5, 7 (x dword 2j + 1).
          const __m256i lo0 = _mm256_and_si256(v0, nib), hi0 = _mm256_and_si256(_mm256_srli_epi32(v0, 4), nib);
          const __m256i lo1 = _mm256_and_si256(v1, nib), hi1 = _mm256_and_si256(_mm256_srli_epi32(v1, 4), nib);
#pragma GCC unroll 4
          for (int i = 0; i < MR; ++i) {
            const __m256i xl = _mm256_set1_epi32(x_dword(xb + i * x.k + 8 * j));
            d[i][0] = _mm256_dpbusd_avx_epi32(d[i][0], lo0, xl);
            d[i][1] = _mm256_dpbusd_avx_epi32(d[i][1], lo1, xl);
            const __m256i xh = _mm256_set1_epi32(x_dword(xb + i * x.k + 8 * j + 4));
            d[i][0] = _mm256_dpbusd_avx_epi32(d[i][0], hi0, xh);
            d[i][1] = _mm256_dpbusd_avx_epi32(d[i][1], hi1, xh);
          }
        } else {
#pragma GCC unroll 4
          for (int i = 0; i < MR; ++i) {
            const __m256i xv = _mm256_set1_epi32(x_dword(xb + i * x.k + 4 * j));
            d[i][0] = _mm256_dpbusd_avx_epi32(d[i][0], v0, xv);
            d[i][1] = _mm256_dpbusd_avx_epi32(d[i][1], v1, xv);
          }
        }
      }
      for (int i = 0; i < MR; ++i) {
        const __m256 sx = _mm256_set1_ps(x.scale[(i0 + i) * nb + b]);
        int8_block(st.acc[i][0], d[i][0], sx);
        int8_block(st.acc[i][1], d[i][1], sx);
      }
    }
    int8_segment_end(st, w, seg.g, tile, zs + i0 * n_seg + sg, n_seg);
  }
  int8_store(st, y + i0 * ldy, ldy, tile, w.n, add, bias);
}

// The same without VNNI (plain AVX2).
template <int BITS, int MR>
XC2_Q256 void int8_tile_avx2(const QuantMatrix& w, const QuantizedX& x, const KSegment* segs, int64_t s0, int64_t s1,
                             const float* zs, int64_t n_seg, int64_t i0, int64_t tile, float* y, int64_t ldy, bool add,
                             const float* bias) {
  constexpr int WPB = BITS == 4 ? 4 : 8;
  const int64_t nb = x.k / 32;
  const uint32_t* qt = w.q.data() + tile * w.kw * 16;
  const __m256i nib = _mm256_set1_epi32(0x0F0F0F0F);
  const __m256i ones = _mm256_set1_epi16(1);
  Int8Acc<MR> st;
  int8_zero(&st.total[0][0][0], MR * 16);
  for (int64_t sg = s0; sg < s1; ++sg) {
    const KSegment seg = segs[sg];
    int8_zero(&st.acc[0][0][0], MR * 16);
    for (int32_t b = seg.b0; b < seg.b1; ++b) {
      const uint32_t* src = qt + static_cast<int64_t>(b) * WPB * 16;
      const int8_t* xb = x.q + i0 * x.k + static_cast<int64_t>(b) * 32;
      __m256i d[MR][2];
      if constexpr (BITS == 4) {
        // int16 sums over the block: 8 pair sums of at most 3810 each per lane, so within 30480. Added with
        // vpaddsw, which never saturates here: GCC reassociates the wrapping vpaddw into a tree and spills.
        __m256i s16[MR][2];
        for (int i = 0; i < MR; ++i) s16[i][0] = s16[i][1] = _mm256_setzero_si256();
#pragma GCC unroll 4
        for (int j = 0; j < WPB; ++j) {
          _mm_prefetch(reinterpret_cast<const char*>(src + j * 16 + kPrefetchWords), _MM_HINT_T0);
          const __m256i v0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + j * 16));
          const __m256i v1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + j * 16 + 8));
          const __m256i lo0 = _mm256_and_si256(v0, nib), hi0 = _mm256_and_si256(_mm256_srli_epi32(v0, 4), nib);
          const __m256i lo1 = _mm256_and_si256(v1, nib), hi1 = _mm256_and_si256(_mm256_srli_epi32(v1, 4), nib);
#pragma GCC unroll 4
          for (int i = 0; i < MR; ++i) {
            const __m256i xl = _mm256_set1_epi32(x_dword(xb + i * x.k + 8 * j));
            s16[i][0] = _mm256_adds_epi16(s16[i][0], _mm256_maddubs_epi16(lo0, xl));
            s16[i][1] = _mm256_adds_epi16(s16[i][1], _mm256_maddubs_epi16(lo1, xl));
            const __m256i xh = _mm256_set1_epi32(x_dword(xb + i * x.k + 8 * j + 4));
            s16[i][0] = _mm256_adds_epi16(s16[i][0], _mm256_maddubs_epi16(hi0, xh));
            s16[i][1] = _mm256_adds_epi16(s16[i][1], _mm256_maddubs_epi16(hi1, xh));
          }
        }
        for (int i = 0; i < MR; ++i) {
          d[i][0] = _mm256_madd_epi16(s16[i][0], ones);
          d[i][1] = _mm256_madd_epi16(s16[i][1], ones);
        }
      } else {
        const __m256i bias8 = _mm256_set1_epi8(static_cast<char>(0x80));
        for (int i = 0; i < MR; ++i)  // sum q * xq = sum (q - 128) * xq + 128 * sum xq
          d[i][0] = d[i][1] = _mm256_set1_epi32(x.sum[(i0 + i) * nb + b] * 128);
#pragma GCC unroll 8
        for (int j = 0; j < WPB; ++j) {
          _mm_prefetch(reinterpret_cast<const char*>(src + j * 16 + kPrefetchWords), _MM_HINT_T0);
          const __m256i q0 = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + j * 16)), bias8);
          const __m256i q1 =
              _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + j * 16 + 8)), bias8);
          const __m256i a0 = _mm256_abs_epi8(q0), a1 = _mm256_abs_epi8(q1);  // 0..128 as unsigned bytes
#pragma GCC unroll 4
          for (int i = 0; i < MR; ++i) {
            const __m256i xv = _mm256_set1_epi32(x_dword(xb + i * x.k + 4 * j));
            d[i][0] = _mm256_add_epi32(
                d[i][0], _mm256_madd_epi16(_mm256_maddubs_epi16(a0, _mm256_sign_epi8(xv, q0)), ones));
            d[i][1] = _mm256_add_epi32(
                d[i][1], _mm256_madd_epi16(_mm256_maddubs_epi16(a1, _mm256_sign_epi8(xv, q1)), ones));
            asm("" : "+x"(d[i][0]), "+x"(d[i][1]));  // keeps the sums a chain: GCC would reassociate and spill
          }
        }
      }
      for (int i = 0; i < MR; ++i) {
        const __m256 sx = _mm256_set1_ps(x.scale[(i0 + i) * nb + b]);
        int8_block(st.acc[i][0], d[i][0], sx);
        int8_block(st.acc[i][1], d[i][1], sx);
      }
    }
    int8_segment_end(st, w, seg.g, tile, zs + i0 * n_seg + sg, n_seg);
  }
  int8_store(st, y + i0 * ldy, ldy, tile, w.n, add, bias);
}

template <int BITS, bool VNNI, int MR>
inline void int8_tile(const QuantMatrix& w, const QuantizedX& x, const KSegment* segs, int64_t s0, int64_t s1,
                      const float* zs, int64_t n_seg, int64_t i0, int64_t tile, float* y, int64_t ldy, bool add,
                      const float* bias) {
  if constexpr (VNNI) int8_tile_vnni<BITS, MR>(w, x, segs, s0, s1, zs, n_seg, i0, tile, y, ldy, add, bias);
  else int8_tile_avx2<BITS, MR>(w, x, segs, s0, s1, zs, n_seg, i0, tile, y, ldy, add, bias);
}

// The last MR-row pass, rows < MR.
template <int BITS, bool VNNI, int MR>
void int8_tail(int64_t rows, const QuantMatrix& w, const QuantizedX& x, const KSegment* segs, int64_t s0, int64_t s1,
               const float* zs, int64_t n_seg, int64_t i0, int64_t tile, float* y, int64_t ldy, bool add,
               const float* bias) {
  if (rows == MR) int8_tile<BITS, VNNI, MR>(w, x, segs, s0, s1, zs, n_seg, i0, tile, y, ldy, add, bias);
  else if constexpr (MR > 1) int8_tail<BITS, VNNI, MR - 1>(rows, w, x, segs, s0, s1, zs, n_seg, i0, tile, y, ldy, add, bias);
}

template <int BITS, bool VNNI>
void int8_bits(const QuantMatrix& w, const QuantizedX& x, const KSegment* segs, int64_t s0, int64_t s1, const float* zs,
               int64_t n_seg, int64_t i0, int64_t i1, int64_t t0, int64_t t1, float* y, int64_t ldy, bool add,
               const float* bias) {
  constexpr int MR = kInt8Mr;
  for (int64_t t = t0; t < t1; ++t) {
    int64_t i = i0;
    for (; i + MR <= i1; i += MR) int8_tile<BITS, VNNI, MR>(w, x, segs, s0, s1, zs, n_seg, i, t, y, ldy, add, bias);
    if (i < i1) int8_tail<BITS, VNNI, MR - 1>(i1 - i, w, x, segs, s0, s1, zs, n_seg, i, t, y, ldy, add, bias);
  }
}

template <bool VNNI>
void int8(const QuantMatrix& w, const QuantizedX& x, const KSegment* segs, int64_t s0, int64_t s1, const float* zs,
          int64_t n_seg, int64_t i0, int64_t i1, int64_t t0, int64_t t1, float* y, int64_t ldy, bool add,
          const float* bias) {
  if (w.bits == 4) int8_bits<4, VNNI>(w, x, segs, s0, s1, zs, n_seg, i0, i1, t0, t1, y, ldy, add, bias);
  else int8_bits<8, VNNI>(w, x, segs, s0, s1, zs, n_seg, i0, i1, t0, t1, y, ldy, add, bias);
}

const QKernels kAvx2 = {rows, pack, int8<false>};

}  // namespace

const QKernels* q_avx2_kernels() { return &kAvx2; }
QInt8Fn q_avxvnni_int8() { return int8<true>; }

bool cpu_has_avx_vnni() {
  static const bool has = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    return __get_cpuid_count(7, 1, &a, &b, &c, &d) != 0 && (a & (1u << 4)) != 0;
  }();
  return has;
}

}  // namespace xc2::kernels::cpu::detail

#else  // not x86

namespace xc2::kernels::cpu::detail {
const QKernels* q_avx2_kernels() { return nullptr; }
QInt8Fn q_avxvnni_int8() { return nullptr; }
bool cpu_has_avx_vnni() { return false; }
}  // namespace xc2::kernels::cpu::detail

#endif
