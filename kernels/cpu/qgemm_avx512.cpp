// AVX-512 kernels of the quantized linears (kernels/cpu/qgemm.h), chosen at run time.
//   rows: per tile of 16 output rows (one per lane), each 64-byte line of words is unpacked once
//         (shift, mask, minus the zero point, to f32) and used for up to 8 rows of x; per group run the lanes
//         accumulate x * (q - zero) and then scale * that; a tile is one sequential stream, prefetched ahead.
//   pack: the same unpacking, times the scale, stored straight into the f32 GEMM's [klen][nr] weight panels.
//   int8 (VNNI): per 32-column block, 8 vpdpbusd of the weights' u8 integers (4-bit: the low and the high
//         nibbles) with the broadcast int8 x; the int32 block sum to f32 times x's block scale; per segment
//         minus zero * sum(x) and times the weight scale. 4 rows x 2 tiles per pass over a block (6 x 1 at the
//         end of the range), word by word across the rows, two dot-product chains each (even and odd words),
//         every weight line prefetched up to 16 rows; up to 4
//         rows of x (decode steps of 1-4 sequences): int8_mr, 2 tiles half the range apart per pass (2 long
//         weight streams), each weight line used by all the rows as it is loaded.
//   quantize_x: x to int8 per 32 columns for the int8 path, the scalar loop's bits.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "cpu/qgemm_internal.h"

#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#define XC2_Q512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
#define XC2_Q512_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))

namespace xc2::kernels::cpu::detail {
namespace {

constexpr int kRowsMr = 8;    // rows path: rows of x per pass over a tile
constexpr int kPrefetchWords = 16 * 32;  // 2 KB ahead in the tile's stream
// int8 path, one row of x: tiles per pass, each the start of a stream through its share of the thread's range (2
// against 4: W4 decode 1.05x in 14 pairs of xc2 chat runs, 13 of them faster; 1 stream: 0.7x; 8: as 4), and how
// many segments ahead their scales and zeros are prefetched. Its weight lines are prefetched non-temporal (read
// once per step): against T0, a decode step's linears 1.01-1.05x in alternating rounds in one process, xc2 chat
// W4 decode faster in 8 of 12 alternating pairs.
constexpr int kM1Tiles = 2;
constexpr int kScalePrefetch = 4;
// int8 path: up to this many rows the kernel prefetches every line of its weight stream (see int8_bits).
constexpr int64_t kStreamRows = 16;
// int8 path: up to this many rows (a decode step of that many sequences) take int8_mr: the one-row kernel's
// streams, each weight line loaded once for all the rows.
constexpr int64_t kMrRows = 4;

template <int BITS>
XC2_Q512 inline __m512i lane_values(__m512i v, int tt) {
  const __m512i mask = _mm512_set1_epi32((1 << BITS) - 1);
  return _mm512_and_si512(_mm512_srli_epi32(v, static_cast<unsigned>(BITS * tt)), mask);
}

XC2_Q512 inline __m512i zero_points(const QuantMatrix& w, int32_t g, int64_t tile) {
  const __m128i z8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w.zero_m1.data() + w.gz_tile(g, tile)));
  return _mm512_add_epi32(_mm512_cvtepu8_epi32(z8), _mm512_set1_epi32(1));
}

// Stores 16 lanes of output row i (masked past n): (add ? y : 0) + v (+ bias).
XC2_Q512 inline void store_out(float* yrow, int64_t tile, int64_t n, __m512 v, bool add, const float* bias) {
  const int64_t c0 = tile * 16;
  const int64_t cnt = std::min<int64_t>(16, n - c0);
  const __mmask16 m = cnt >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << cnt) - 1u);
  if (bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, bias + c0));
  if (add) v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, yrow + c0), v);
  _mm512_mask_storeu_ps(yrow + c0, m, v);
}

// ---- rows path (exact) -------------------------------------------------------------------------------

// The value of lane bits [BITS * tt, BITS * (tt + 1)) as the float 2^23 + value (exact: OR into the significand).
template <int BITS>
XC2_Q512 inline __m512 lane_values_biased(__m512i v, int tt) {
  const __m512i mask = _mm512_set1_epi32((1 << BITS) - 1);
  const __m512i magic = _mm512_set1_epi32(0x4B000000);  // 2^23
  const __m512i sh = tt == 0 ? v : _mm512_srli_epi32(v, static_cast<unsigned>(BITS * tt));
  return _mm512_castsi512_ps(_mm512_ternarylogic_epi32(sh, mask, magic, 0xEA));  // (sh & mask) | magic
}

template <int BITS, int MR>
XC2_Q512 void rows_tile(const QuantMatrix& w, int64_t tile, const float* x, int64_t ldx, float* y, int64_t ldy,
                        bool accumulate) {
  constexpr int P = 32 / BITS;
  // Independent FMA chains per row: a lone row would otherwise wait on the FMA latency at every value.
  constexpr int A = MR == 1 ? 4 : MR == 2 ? 2 : 1;
  const uint32_t* qt = w.q.data() + tile * w.kw * 16;
  __m512 total[MR];
  for (int i = 0; i < MR; ++i) total[i] = _mm512_setzero_ps();
  const size_t runs = w.run_group.size();
  for (size_t ri = 0; ri < runs; ++ri) {
    const int64_t r0 = w.run_start[ri], r1 = w.run_start[ri + 1];
    const int32_t g = w.run_group[ri];
    // 2^23 + zero point: (2^23 + q) - (2^23 + zero) = q - zero, exactly.
    const __m512 zb = _mm512_add_ps(_mm512_cvtepi32_ps(zero_points(w, g, tile)), _mm512_set1_ps(8388608.0f));
    __m512 acc[MR][A];
    for (int i = 0; i < MR; ++i)
      for (int a = 0; a < A; ++a) acc[i][a] = _mm512_setzero_ps();
    for (int64_t r = r0; r < r1; ++r) {
      _mm_prefetch(reinterpret_cast<const char*>(qt + r * 16 + kPrefetchWords), _MM_HINT_T0);
      const __m512i v = _mm512_loadu_si512(qt + r * 16);
      const float* xc = x + r * P;
#pragma GCC unroll 8
      for (int tt = 0; tt < P; ++tt) {
        const __m512 wv = _mm512_sub_ps(lane_values_biased<BITS>(v, tt), zb);
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i)
          acc[i][tt % A] = _mm512_fmadd_ps(wv, _mm512_set1_ps(xc[i * ldx + tt]), acc[i][tt % A]);
      }
    }
    const __m512 s = _mm512_loadu_ps(w.scale.data() + w.gz_tile(g, tile));
    for (int i = 0; i < MR; ++i) {
      __m512 sum = acc[i][0];
      for (int a = 1; a < A; ++a) sum = _mm512_add_ps(sum, acc[i][a]);
      total[i] = _mm512_fmadd_ps(s, sum, total[i]);
    }
  }
  const float* bias = w.bias.empty() ? nullptr : w.bias.data();
  for (int i = 0; i < MR; ++i) store_out(y + i * ldy, tile, w.n, total[i], accumulate, bias);
}

template <int BITS>
XC2_Q512 void rows_bits(const QuantMatrix& w, const float* x, int64_t ldx, int64_t m, float* y, int64_t ldy,
                        int64_t t0, int64_t t1, bool accumulate) {
  for (int64_t t = t0; t < t1; ++t) {
    for (int64_t i = 0; i < m; i += kRowsMr) {
      const float* xi = x + i * ldx;
      float* yi = y + i * ldy;
      switch (std::min<int64_t>(kRowsMr, m - i)) {
        case 1: rows_tile<BITS, 1>(w, t, xi, ldx, yi, ldy, accumulate); break;
        case 2: rows_tile<BITS, 2>(w, t, xi, ldx, yi, ldy, accumulate); break;
        case 3: rows_tile<BITS, 3>(w, t, xi, ldx, yi, ldy, accumulate); break;
        case 4: rows_tile<BITS, 4>(w, t, xi, ldx, yi, ldy, accumulate); break;
        case 5: rows_tile<BITS, 5>(w, t, xi, ldx, yi, ldy, accumulate); break;
        case 6: rows_tile<BITS, 6>(w, t, xi, ldx, yi, ldy, accumulate); break;
        case 7: rows_tile<BITS, 7>(w, t, xi, ldx, yi, ldy, accumulate); break;
        default: rows_tile<BITS, 8>(w, t, xi, ldx, yi, ldy, accumulate); break;
      }
    }
  }
}

void rows(const QuantMatrix& w, const float* x, int64_t ldx, int64_t m, float* y, int64_t ldy, int64_t t0, int64_t t1,
          bool accumulate) {
  if (w.bits == 4) rows_bits<4>(w, x, ldx, m, y, ldy, t0, t1, accumulate);
  else rows_bits<8>(w, x, ldx, m, y, ldy, t0, t1, accumulate);
}

// ---- packed panels (exact prefill) --------------------------------------------------------------------

template <int BITS>
XC2_Q512 void pack_bits(const QuantMatrix& w, int64_t row0, int64_t rows, int64_t k0, int64_t klen, float* wp,
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
        for (int64_t kk = 0; kk < klen; ++kk) _mm512_storeu_ps(dst + kk * nr, _mm512_setzero_ps());
        continue;
      }
      const int64_t tile = first / 16;
      const uint32_t* qt = w.q.data() + tile * w.kw * 16;
      size_t ri = run_of_word(w, rw0);
      __m512i z = zero_points(w, w.run_group[ri], tile);
      __m512 s = _mm512_loadu_ps(w.scale.data() + w.gz_tile(w.run_group[ri], tile));
      for (int64_t r = rw0; r < rw1; ++r) {
        if (r >= w.run_start[ri + 1]) {
          ++ri;
          z = zero_points(w, w.run_group[ri], tile);
          s = _mm512_loadu_ps(w.scale.data() + w.gz_tile(w.run_group[ri], tile));
        }
        const __m512i v = _mm512_loadu_si512(qt + r * 16);
        float* d = dst + (r * P - k0) * nr;
#pragma GCC unroll 8
        for (int tt = 0; tt < P; ++tt)
          _mm512_storeu_ps(d + tt * nr,
                           _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(lane_values<BITS>(v, tt), z)), s));
      }
    }
  }
}

void pack(const QuantMatrix& w, int64_t row0, int64_t rows, int64_t k0, int64_t klen, float* wp, int nr) {
  if (w.bits == 4) pack_bits<4>(w, row0, rows, k0, klen, wp, nr);
  else pack_bits<8>(w, row0, rows, k0, klen, wp, nr);
}

// ---- int8 activations (VNNI) -------------------------------------------------------------------------

// NT adjacent tiles (16 * NT output columns) x MR rows: each broadcast x dword feeds NT vpdpbusd, so that the
// loads of x do not outnumber the dot products. Word positions outermost: per word of the block the NT weight
// lines (4-bit: one nibble of a loaded line) and then, row by row, one broadcast and NT dot products, two chains per
// (row, tile) (even and odd words, added at the end: exact int32 sums). Consecutive dot products are then
// independent and each chain's next one comes 2 * MR * NT dot products later; with the rows outermost (each row's
// 2 * NT chains of 4 run to the end before the next row's) the 7B linears took 1.01-1.06x (W4) and 1.04-1.09x (W8)
// as long at m = 1225 (xc2_gemm_bench --suite qprefill, 1 and 2 threads).
template <int BITS, int MR, int NT, bool STREAM>
XC2_Q512_VNNI void int8_tiles(const QuantMatrix& w, const QuantizedX& x, const KSegment* segs, int64_t s0, int64_t s1,
                              const float* zs, int64_t n_seg, int64_t i0, int64_t tile, float* y, int64_t ldy, bool add,
                              const float* bias) {
  constexpr int WPB = BITS == 4 ? 4 : 8;  // words per 32-column block
  const int64_t nb = x.k / 32;
  const int64_t tile_words = w.kw * 16;
  const uint32_t* qt = w.q.data() + tile * tile_words;
  const int32_t* xr[MR];  // each row's int8 x as words
  const float* xs[MR];
  for (int i = 0; i < MR; ++i) {
    xr[i] = reinterpret_cast<const int32_t*>(x.q + (i0 + i) * x.k);
    xs[i] = x.scale + (i0 + i) * nb;
  }
  const __m512i nib = _mm512_set1_epi32(0x0F0F0F0F);
  // Zeroed with vector stores: `= {}` compiled to `rep stosq`, whose start-up held up the pass (perf: about a third
  // of the samples of a short-k product such as the PLoRA B delta sat on the instructions after it).
  alignas(64) float total[MR][NT][16];
  for (int i = 0; i < MR; ++i)
    for (int t = 0; t < NT; ++t) _mm512_store_ps(total[i][t], _mm512_setzero_ps());
  for (int64_t sg = s0; sg < s1; ++sg) {
    const KSegment seg = segs[sg];
    __m512 acc[MR][NT];
    for (int i = 0; i < MR; ++i)
      for (int t = 0; t < NT; ++t) acc[i][t] = _mm512_setzero_ps();
    for (int32_t b = seg.b0; b < seg.b1; ++b) {
      const uint32_t* src = qt + static_cast<int64_t>(b) * WPB * 16;
      const int64_t xo = static_cast<int64_t>(b) * 8;
      for (int t = 0; t < NT; ++t)
        for (int j = 0; j < (STREAM ? WPB : 1); ++j)
          _mm_prefetch(reinterpret_cast<const char*>(src + t * tile_words + j * 16 + kPrefetchWords), _MM_HINT_T0);
      __m512i d[MR][NT][2];
      for (int i = 0; i < MR; ++i)
        for (int t = 0; t < NT; ++t) d[i][t][0] = d[i][t][1] = _mm512_setzero_si512();
#pragma GCC unroll 8
      for (int j = 0; j < 8; ++j) {
        __m512i wv[NT];
        for (int t = 0; t < NT; ++t) {
          if constexpr (BITS == 4) {
            const __m512i v = _mm512_loadu_si512(src + t * tile_words + (j / 2) * 16);
            wv[t] = _mm512_and_si512(j % 2 ? _mm512_srli_epi32(v, 4) : v, nib);
          } else {
            wv[t] = _mm512_loadu_si512(src + t * tile_words + j * 16);
          }
        }
        for (int i = 0; i < MR; ++i) {
          const __m512i xv = _mm512_set1_epi32(xr[i][xo + j]);
          for (int t = 0; t < NT; ++t) d[i][t][j % 2] = _mm512_dpbusd_epi32(d[i][t][j % 2], wv[t], xv);
        }
      }
      for (int i = 0; i < MR; ++i) {
        const __m512 sx = _mm512_set1_ps(xs[i][b]);
        for (int t = 0; t < NT; ++t)
          acc[i][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(d[i][t][0], d[i][t][1])), sx, acc[i][t]);
      }
    }
    for (int t = 0; t < NT; ++t) {
      const __m512 zf = _mm512_cvtepi32_ps(zero_points(w, seg.g, tile + t));
      const __m512 sw = _mm512_loadu_ps(w.scale.data() + w.gz_tile(seg.g, tile + t));
      for (int i = 0; i < MR; ++i) {
        const __m512 tv = _mm512_fnmadd_ps(zf, _mm512_set1_ps(zs[(i0 + i) * n_seg + sg]), acc[i][t]);
        _mm512_store_ps(total[i][t], _mm512_fmadd_ps(sw, tv, _mm512_load_ps(total[i][t])));
      }
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int t = 0; t < NT; ++t)
      store_out(y + (i0 + i) * ldy, tile + t, w.n, _mm512_load_ps(total[i][t]), add, bias);
}

// MR rows of x (decode: MR = 1; a few sequences decoded together: up to kMrRows), NT tiles per pass, tile + t * ts
// for t < NT. The weights go straight from the load into the dot products of the MR rows (no more rows to keep them
// for). With one row each tile's block sum is two vpdpbusd chains of 4 (4-bit: the low and the high nibbles; 8-bit:
// even and odd words) added at the end: with one 8-long chain per tile the dot products waited on each other; with
// more rows the MR x NT chains are independent already. The int32 sums are exact, so the split changes no bits, and
// the f32 steps are those of int8_tiles: the same results as the prefill kernel for every row.
template <int BITS, int MR, int NT>
XC2_Q512_VNNI void int8_mr(const QuantMatrix& w, const QuantizedX& x, const KSegment* segs, int64_t s0, int64_t s1,
                           const float* zs, int64_t n_seg, int64_t i0, int64_t tile, int64_t ts, float* y, int64_t ldy,
                           bool add, const float* bias) {
  constexpr int WPB = BITS == 4 ? 4 : 8;  // words per 32-column block
  constexpr int C = MR == 1 ? 2 : 1;       // chains per (row, tile)
  const int64_t nb = x.k / 32;
  const int64_t tile_words = w.kw * 16;
  const uint32_t* qt = w.q.data() + tile * tile_words;
  const __m512i nib = _mm512_set1_epi32(0x0F0F0F0F);
  // Zeroed with vector stores, updated once per segment (registers go to the chains and sums of the rows).
  alignas(64) float total[MR][NT][16];
  for (int i = 0; i < MR; ++i)
    for (int t = 0; t < NT; ++t) _mm512_store_ps(total[i][t], _mm512_setzero_ps());
  for (int64_t sg = s0; sg < s1; ++sg) {
    const KSegment seg = segs[sg];
    __m512 acc[MR][NT];
    for (int i = 0; i < MR; ++i)
      for (int t = 0; t < NT; ++t) acc[i][t] = _mm512_setzero_ps();
    if (sg + kScalePrefetch < s1) {  // the scales and zeros a few segments ahead (one line per group and tile)
      const int32_t ga = segs[sg + kScalePrefetch].g;
      for (int t = 0; t < NT; ++t) {
        _mm_prefetch(reinterpret_cast<const char*>(w.scale.data() + w.gz_tile(ga, tile + t * ts)), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(w.zero_m1.data() + w.gz_tile(ga, tile + t * ts)), _MM_HINT_T0);
      }
    }
    for (int32_t b = seg.b0; b < seg.b1; ++b) {
      const int32_t* xd = reinterpret_cast<const int32_t*>(x.q + i0 * x.k + static_cast<int64_t>(b) * 32);
      const int64_t xs = x.k / 4;  // dwords from one row of x to the next
      __m512i d[MR][NT][C];
      for (int i = 0; i < MR; ++i)
        for (int t = 0; t < NT; ++t)
          for (int c = 0; c < C; ++c) d[i][t][c] = _mm512_setzero_si512();
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        __m512i w0[NT], w1[NT];
#pragma GCC unroll 8
        for (int t = 0; t < NT; ++t) {
          const uint32_t* src = qt + t * ts * tile_words + static_cast<int64_t>(b) * WPB * 16;
          if constexpr (BITS == 4) {
            _mm_prefetch(reinterpret_cast<const char*>(src + j * 16 + kPrefetchWords), _MM_HINT_NTA);
            const __m512i v = _mm512_loadu_si512(src + j * 16);
            w0[t] = _mm512_and_si512(v, nib);
            w1[t] = _mm512_and_si512(_mm512_srli_epi32(v, 4), nib);
          } else {
            _mm_prefetch(reinterpret_cast<const char*>(src + 2 * j * 16 + kPrefetchWords), _MM_HINT_NTA);
            _mm_prefetch(reinterpret_cast<const char*>(src + (2 * j + 1) * 16 + kPrefetchWords), _MM_HINT_NTA);
            w0[t] = _mm512_loadu_si512(src + 2 * j * 16);
            w1[t] = _mm512_loadu_si512(src + (2 * j + 1) * 16);
          }
        }
#pragma GCC unroll 4
        for (int i = 0; i < MR; ++i) {
          const __m512i x0 = _mm512_set1_epi32(xd[i * xs + 2 * j]), x1 = _mm512_set1_epi32(xd[i * xs + 2 * j + 1]);
#pragma GCC unroll 8
          for (int t = 0; t < NT; ++t) {
            d[i][t][0] = _mm512_dpbusd_epi32(d[i][t][0], w0[t], x0);
            d[i][t][C - 1] = _mm512_dpbusd_epi32(d[i][t][C - 1], w1[t], x1);
          }
        }
      }
      for (int i = 0; i < MR; ++i) {
        const __m512 sx = _mm512_set1_ps(x.scale[(i0 + i) * nb + b]);
        for (int t = 0; t < NT; ++t) {
          const __m512i sum = C == 2 ? _mm512_add_epi32(d[i][t][0], d[i][t][C - 1]) : d[i][t][0];
          acc[i][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), sx, acc[i][t]);
        }
      }
    }
    for (int t = 0; t < NT; ++t) {
      const __m512 zf = _mm512_cvtepi32_ps(zero_points(w, seg.g, tile + t * ts));
      const __m512 sw = _mm512_loadu_ps(w.scale.data() + w.gz_tile(seg.g, tile + t * ts));
      for (int i = 0; i < MR; ++i) {
        const __m512 tv = _mm512_fnmadd_ps(zf, _mm512_set1_ps(zs[(i0 + i) * n_seg + sg]), acc[i][t]);
        _mm512_store_ps(total[i][t], _mm512_fmadd_ps(sw, tv, _mm512_load_ps(total[i][t])));
      }
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int t = 0; t < NT; ++t)
      store_out(y + (i0 + i) * ldy, tile + t * ts, w.n, _mm512_load_ps(total[i][t]), add, bias);
}

template <int BITS, int NT, bool STREAM>
XC2_Q512_VNNI void int8_rows(const QuantMatrix& w, const QuantizedX& x, const KSegment* segs, int64_t s0, int64_t s1,
                             const float* zs, int64_t n_seg, int64_t i0, int64_t i1, int64_t t, float* y, int64_t ldy,
                             bool add, const float* bias) {
  // 4 x 2 against 3 x 2: W8 1.3x, W4 1.05x (xc2_gemm_bench --suite qprefill, 1 thread); 5 x 2: no better.
  constexpr int MR = NT == 2 ? 4 : 6;
  for (int64_t i = i0; i < i1; i += MR) {
    const auto tiles = [&](auto rows) {
      int8_tiles<BITS, decltype(rows)::value, NT, STREAM>(w, x, segs, s0, s1, zs, n_seg, i, t, y, ldy, add, bias);
    };
    switch (std::min<int64_t>(MR, i1 - i)) {
      case 1: tiles(std::integral_constant<int, 1>{}); break;
      case 2: tiles(std::integral_constant<int, 2>{}); break;
      case 3: tiles(std::integral_constant<int, 3>{}); break;
      case 4: tiles(std::integral_constant<int, 4>{}); break;
      case 5: tiles(std::integral_constant<int, NT == 2 ? 3 : 5>{}); break;
      default: tiles(std::integral_constant<int, MR>{}); break;
    }
  }
}

template <int BITS>
XC2_Q512_VNNI void int8_bits(const QuantMatrix& w, const QuantizedX& x, const KSegment* segs, int64_t s0, int64_t s1,
                             const float* zs, int64_t n_seg, int64_t i0, int64_t i1, int64_t t0, int64_t t1, float* y,
                             int64_t ldy, bool add, const float* bias) {
  int64_t t = t0;
  if (i1 - i0 <= kMrRows) {
    // The pass's tiles 1 / kM1Tiles of the range apart: each of the kM1Tiles streams then runs through its share
    // of the range (tile t + 1 follows tile t in memory), long enough for the hardware prefetchers, where adjacent
    // tiles would end every stream after one tile (k / 2 or k bytes x 16).
    const auto pass = [&](auto rows) {
      constexpr int MR = decltype(rows)::value;
      const int64_t q = (t1 - t0) / kM1Tiles;
      for (int64_t s = 0; s < q; ++s)
        int8_mr<BITS, MR, kM1Tiles>(w, x, segs, s0, s1, zs, n_seg, i0, t0 + s, q, y, ldy, add, bias);
      for (t = t0 + q * kM1Tiles; t < t1; ++t)
        int8_mr<BITS, MR, 1>(w, x, segs, s0, s1, zs, n_seg, i0, t, 1, y, ldy, add, bias);
    };
    switch (i1 - i0) {
      case 1: pass(std::integral_constant<int, 1>{}); break;
      case 2: pass(std::integral_constant<int, 2>{}); break;
      case 3: pass(std::integral_constant<int, 3>{}); break;
      default: pass(std::integral_constant<int, 4>{}); break;
    }
    return;
  }
  // 5 to kStreamRows rows (batched decode of more sequences: serve, beams, caption batches) use each weight line a
  // few times: prefetch every line of the stream, not one per block as for a prefill, whose tiles are read again
  // from L2 for each group of rows. xc2_gemm_bench, 2 threads, weights from DRAM, against one per block: m = 4
  // W4/W8 linears 1.2-2x faster (--suite qdecode; m = 4 now takes int8_mr, faster again), m = 8 1.2-1.35x, m = 16
  // 1.04-1.2x; at m = 32 and 96 every line was 0.8-1.0x one per block (--suite qprefill --qcold --m M). A template
  // parameter: a run-time flag put a branch into the prefill's inner loop.
  const auto rows = [&](auto stream) {
    constexpr bool S = decltype(stream)::value;
    for (; t + 2 <= t1; t += 2) int8_rows<BITS, 2, S>(w, x, segs, s0, s1, zs, n_seg, i0, i1, t, y, ldy, add, bias);
    if (t < t1) int8_rows<BITS, 1, S>(w, x, segs, s0, s1, zs, n_seg, i0, i1, t, y, ldy, add, bias);
  };
  if (i1 - i0 <= kStreamRows) rows(std::true_type{});
  else rows(std::false_type{});
}

void int8(const QuantMatrix& w, const QuantizedX& x, const KSegment* segs, int64_t s0, int64_t s1, const float* zs,
          int64_t n_seg, int64_t i0, int64_t i1, int64_t t0, int64_t t1, float* y, int64_t ldy, bool add,
          const float* bias) {
  if (w.bits == 4) int8_bits<4>(w, x, segs, s0, s1, zs, n_seg, i0, i1, t0, t1, y, ldy, add, bias);
  else int8_bits<8>(w, x, segs, s0, s1, zs, n_seg, i0, i1, t0, t1, y, ldy, add, bias);
}

const QKernels kAvx512 = {rows, pack, int8};

// ---- x to int8 (quantize_x_int8) -----------------------------------------------------------------------

// Per 32 columns: max |x| (exact in any order), the scalar scale and inverse as quantize_x_scalar, x * inverse
// rounded by vcvtps2dq (the default rounding mode: nearest even, as nearbyint), clamped to [-127, 127].
XC2_Q512 void quantize_x(const float* x, int64_t ldx, int64_t i0, int64_t i1, int64_t k, int bits, int8_t* q,
                         float* scale, int32_t* sum) {
  const int64_t nb = k / 32;
  const __m512 absmask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7FFFFFFF));
  const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
  // 4-bit: each 8 bytes as 0, 2, 4, 6, 1, 3, 5, 7 (per 128-bit lane).
  const __m256i evens_odds = _mm256_setr_epi8(0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15,  //
                                              0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15);
  for (int64_t i = i0; i < i1; ++i) {
    for (int64_t b = 0; b < nb; ++b) {
      const float* xr = x + i * ldx + b * 32;
      const __m512 a = _mm512_loadu_ps(xr), c = _mm512_loadu_ps(xr + 16);
      const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_and_ps(a, absmask), _mm512_and_ps(c, absmask)));
      const float sc = amax / 127.0f;
      const float inv = amax > 0 ? 127.0f / amax : 0.0f;
      const __m512 vinv = _mm512_set1_ps(inv);
      const __m512i qa = _mm512_max_epi32(lo, _mm512_min_epi32(hi, _mm512_cvtps_epi32(_mm512_mul_ps(a, vinv))));
      const __m512i qc = _mm512_max_epi32(lo, _mm512_min_epi32(hi, _mm512_cvtps_epi32(_mm512_mul_ps(c, vinv))));
      __m256i bytes = _mm256_set_m128i(_mm512_cvtepi32_epi8(qc), _mm512_cvtepi32_epi8(qa));
      if (bits == 4) bytes = _mm256_shuffle_epi8(bytes, evens_odds);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i * k + b * 32), bytes);
      scale[i * nb + b] = sc;
      sum[i * nb + b] = _mm512_reduce_add_epi32(_mm512_add_epi32(qa, qc));
    }
  }
}

}  // namespace

const QKernels* q_avx512_kernels() { return &kAvx512; }

QQuantizeXFn q_avx512_quantize_x() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
  return has ? quantize_x : nullptr;
}

bool cpu_has_avx512_vnni() {
  static const bool has = __builtin_cpu_supports("avx512vnni");
  return has;
}

}  // namespace xc2::kernels::cpu::detail

#else  // not x86

namespace xc2::kernels::cpu::detail {
const QKernels* q_avx512_kernels() { return nullptr; }
bool cpu_has_avx512_vnni() { return false; }
QQuantizeXFn q_avx512_quantize_x() { return nullptr; }
}  // namespace xc2::kernels::cpu::detail

#endif
