// AVX-512 GEMM kernels (compiled with function-level target attributes; chosen at run time).
//   tile:   12 x 32 register block (24 zmm accumulators), per k: 2 aligned loads of the w micro-panel,
//           12 broadcasts of x, 24 f32 FMAs. Rows 1..12 are template instantiations; columns are masked.
//   pack_w: widen 16 rows x 16 k of w (f32 load / vcvtph2ps / bf16 << 16), 16x16 in-register transpose.
//   rows:   6 x-rows x 4 w-rows per block, 16-lane partial sums over k, masked k tail, then
//           _mm512_reduce_add_ps (a fixed order), so every output's value is independent of m and threads.
// GCC 12's avx512fintrin.h trips -Wuninitialized on its own _mm512_undefined_* (GCC bug 105593); the
// pragma must precede the header because the warning is located inside it.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "cpu/gemm_internal.h"

#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#define XC2_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))

namespace xc2::kernels::cpu::detail {
namespace {

constexpr int kMr = 12;  // rows of x per micro-tile
constexpr int kNv = 2;   // zmm vectors per micro-tile row
constexpr int kNr = 16 * kNv;
constexpr int kRowsMb = 6;  // rows path: x rows per block  (6 x 4 = 24 zmm accumulators)
constexpr int kRowsNw = 4;  // rows path: w rows per block
// Rows path software prefetch distance along each weight row. With m > 1 the FMAs fill the out-of-order
// window and the core stops running ahead to DRAM: measured bf16 n=14336 k=4096, 1 thread:
// m=4 7.3-8.2 -> 5.2-5.7 ms, m=1 4.0-4.7 -> 3.3-3.5 ms (1024 and 4096 bytes: in between).
constexpr int64_t kRowsPrefetchBytes = 2048;

template <DType DT>
constexpr int64_t elem_size() {
  return DT == DType::F32 ? 4 : 2;
}

// 16 consecutive weights at p, widened exactly to f32.
template <DType DT>
XC2_AVX512 inline __m512 load_w16(const void* p) {
  if constexpr (DT == DType::F32) {
    return _mm512_loadu_ps(p);
  } else if constexpr (DT == DType::F16) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(static_cast<const __m256i*>(p)));
  } else {
    const __m512i u = _mm512_cvtepu16_epi32(_mm256_loadu_si256(static_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(u, 16));
  }
}

// The first lanes selected by mask (a prefix), zero elsewhere; nothing past them is touched.
template <DType DT>
XC2_AVX512 inline __m512 load_w16_mask(const void* p, __mmask16 mask) {
  if constexpr (DT == DType::F32) {
    return _mm512_maskz_loadu_ps(mask, p);
  } else if constexpr (DT == DType::F16) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, p));
  } else {
    const __m512i u = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(u, 16));
  }
}

inline __mmask16 prefix_mask(int64_t n) { return n >= 16 ? __mmask16(0xffff) : __mmask16((1u << n) - 1u); }

// In-place transpose of a 16x16 f32 block held in r[0..15].
XC2_AVX512 inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // t[4g + 0..3] come from rows 4g..4g+3.
  for (int g = 0; g < 4; ++g) {
    r[4 * g + 0] = _mm512_shuffle_ps(t[4 * g + 0], t[4 * g + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[4 * g + 1] = _mm512_shuffle_ps(t[4 * g + 0], t[4 * g + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[4 * g + 2] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[4 * g + 3] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  // Now within each 128-bit lane L of r[4g + c], element e = row 4g + e, column 4L + c.
  for (int c = 0; c < 4; ++c) {
    t[c] = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x88);        // lanes 0,2 of r[c], lanes 0,2 of r[4+c]
    t[4 + c] = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xdd);    // lanes 1,3 ...
    t[8 + c] = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x88);
    t[12 + c] = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xdd);
  }
  for (int c = 0; c < 4; ++c) {
    r[c] = _mm512_shuffle_f32x4(t[c], t[8 + c], 0x88);
    r[4 + c] = _mm512_shuffle_f32x4(t[4 + c], t[12 + c], 0x88);
    r[8 + c] = _mm512_shuffle_f32x4(t[c], t[8 + c], 0xdd);
    r[12 + c] = _mm512_shuffle_f32x4(t[4 + c], t[12 + c], 0xdd);
  }
}

template <DType DT>
XC2_AVX512 void pack_w_t(const void* w, int64_t ldw, int64_t rows, int64_t klen, float* dst) {
  const char* base = static_cast<const char*>(w);
  constexpr int64_t es = elem_size<DT>();
  const int64_t panels = (rows + kNr - 1) / kNr;
  for (int64_t p = 0; p < panels; ++p) {
    float* d = dst + p * klen * kNr;
    for (int h = 0; h < kNv; ++h) {
      const int64_t r0 = p * kNr + h * 16;
      const int64_t valid = rows - r0 < 0 ? 0 : (rows - r0 > 16 ? 16 : rows - r0);
      // The next 16 rows, prefetched while these are transposed: each row contributes only a short
      // klen-long segment, too short for the hardware prefetchers to pick up.
      const int64_t next_valid = rows - r0 - 16 < 0 ? 0 : (rows - r0 - 16 > 16 ? 16 : rows - r0 - 16);
      const char* next = base + (r0 + 16) * ldw * es;
      for (int64_t kk = 0; kk < klen; kk += 16) {
        const int64_t kv = klen - kk < 16 ? klen - kk : 16;
        if ((kk & 31) == 0)  // one prefetch per 64 bytes of a bf16/f16 row (two for f32 rows would be finer)
          for (int i = 0; i < next_valid; ++i) _mm_prefetch(next + (i * ldw + kk) * es, _MM_HINT_T0);
        __m512 v[16];
        if (kv == 16) {
          for (int i = 0; i < 16; ++i)
            v[i] = i < valid ? load_w16<DT>(base + ((r0 + i) * ldw + kk) * es) : _mm512_setzero_ps();
        } else {
          const __mmask16 mk = prefix_mask(kv);
          for (int i = 0; i < 16; ++i)
            v[i] = i < valid ? load_w16_mask<DT>(base + ((r0 + i) * ldw + kk) * es, mk) : _mm512_setzero_ps();
        }
        transpose16(v);
        for (int j = 0; j < kv; ++j) _mm512_store_ps(d + (kk + j) * kNr + h * 16, v[j]);
      }
    }
  }
}

XC2_AVX512 void pack_w(const void* w, DType dtype, int64_t ldw, int64_t rows, int64_t klen, float* dst) {
  switch (dtype) {
    case DType::F32: pack_w_t<DType::F32>(w, ldw, rows, klen, dst); break;
    case DType::F16: pack_w_t<DType::F16>(w, ldw, rows, klen, dst); break;
    case DType::BF16: pack_w_t<DType::BF16>(w, ldw, rows, klen, dst); break;
    case DType::I32: break;  // never a GEMM weight
  }
}

// x rows [0, rows) x k [0, klen) -> micro-panels [klen][kMr], via 16x16 transposes (rows past the end are
// zero; the 12 valid lanes of each transposed vector are stored with a mask).
XC2_AVX512 void pack_x(const float* x, int64_t ldx, int64_t rows, int64_t klen, float* dst) {
  static_assert(kMr <= 16, "pack_x transposes up to 16 rows");
  const __mmask16 store_mask = prefix_mask(kMr);
  for (int64_t r0 = 0; r0 < rows; r0 += kMr) {
    float* d = dst + (r0 / kMr) * klen * kMr;
    const int64_t valid = rows - r0 < kMr ? rows - r0 : kMr;
    for (int64_t kk = 0; kk < klen; kk += 16) {
      const int64_t kv = klen - kk < 16 ? klen - kk : 16;
      const __mmask16 mk = prefix_mask(kv);
      __m512 v[16];
      for (int i = 0; i < 16; ++i)
        v[i] = i < valid ? _mm512_maskz_loadu_ps(mk, x + (r0 + i) * ldx + kk) : _mm512_setzero_ps();
      transpose16(v);
      for (int j = 0; j < kv; ++j) _mm512_mask_storeu_ps(d + (kk + j) * kMr, store_mask, v[j]);
    }
  }
}

template <int R>
XC2_AVX512 void tile_r(int64_t klen, const float* xp, const float* wp, float* y, int64_t ldy, int cols, bool load_c,
                       const float* bias) {
  if (load_c) {  // the y tile is read back after the k loop: start fetching it now
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
      _mm_prefetch(reinterpret_cast<const char*>(y + i * ldy), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(y + i * ldy + kNr - 1), _MM_HINT_T0);
    }
  }
  __m512 acc[R][kNv];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < kNv; ++v) acc[i][v] = _mm512_setzero_ps();
  for (int64_t kk = 0; kk < klen; ++kk) {
    __m512 b[kNv];
#pragma GCC unroll 4
    for (int v = 0; v < kNv; ++v) b[v] = _mm512_load_ps(wp + v * 16);
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
      const __m512 a = _mm512_set1_ps(xp[i]);
#pragma GCC unroll 4
      for (int v = 0; v < kNv; ++v) acc[i][v] = _mm512_fmadd_ps(a, b[v], acc[i][v]);
    }
    wp += kNr;
    xp += kMr;
  }
  __mmask16 mk[kNv];
  __m512 bv[kNv];
  #pragma GCC unroll 16
  for (int v = 0; v < kNv; ++v) {
    mk[v] = prefix_mask(cols - v * 16 < 0 ? 0 : cols - v * 16);
    bv[v] = bias ? _mm512_maskz_loadu_ps(mk[v], bias + v * 16) : _mm512_setzero_ps();
  }
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
    float* yr = y + i * ldy;
#pragma GCC unroll 4
    for (int v = 0; v < kNv; ++v) {
      __m512 o = acc[i][v];
      if (load_c) o = _mm512_add_ps(_mm512_maskz_loadu_ps(mk[v], yr + v * 16), o);
      if (bias) o = _mm512_add_ps(o, bv[v]);
      _mm512_mask_storeu_ps(yr + v * 16, mk[v], o);
    }
  }
}

using TileFn = void (*)(int64_t, const float*, const float*, float*, int64_t, int, bool, const float*);

XC2_AVX512 void tile(int64_t klen, const float* xp, const float* wp, float* y, int64_t ldy, int rows, int cols,
                     bool load_c, const float* bias) {
  static constexpr TileFn fns[kMr] = {&tile_r<1>, &tile_r<2>, &tile_r<3>, &tile_r<4>,  &tile_r<5>,  &tile_r<6>,
                                      &tile_r<7>, &tile_r<8>, &tile_r<9>, &tile_r<10>, &tile_r<11>, &tile_r<12>};
  fns[rows - 1](klen, xp, wp, y, ldy, cols, load_c, bias);
}

// ---- rows path ---------------------------------------------------------------------------------------
// For each group of kRowsNw w rows (streamed from memory once; re-read from L1/L2 for further x blocks),
// blocks of kRowsMb x rows accumulate 16-lane partial sums over all of k, then reduce in a fixed order.
// (Cutting k into L1-sized chunks, with partial sums parked between chunks, measured slower.)

template <DType DT, int MB, int NW>
XC2_AVX512 void rows_block(const float* x, int64_t ldx, const char* w, int64_t ldw, int64_t js, int64_t k,
                           const float* bias, float* y, int64_t ldy, bool accumulate) {
  constexpr int64_t es = elem_size<DT>();
  __m512 acc[MB][NW];
#pragma GCC unroll 8
  for (int i = 0; i < MB; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NW; ++j) acc[i][j] = _mm512_setzero_ps();
  int64_t kk = 0;
  for (; kk + 16 <= k; kk += 16) {
    __m512 wv[NW];
    if (((kk * es) & 63) == 0) {  // once per cache line of each row, kRowsPrefetchBytes ahead
#pragma GCC unroll 8
      for (int j = 0; j < NW; ++j) _mm_prefetch(w + (j * js * ldw + kk) * es + kRowsPrefetchBytes, _MM_HINT_T0);
    }
#pragma GCC unroll 8
    for (int j = 0; j < NW; ++j) wv[j] = load_w16<DT>(w + (j * js * ldw + kk) * es);
#pragma GCC unroll 8
    for (int i = 0; i < MB; ++i) {
      const __m512 xv = _mm512_loadu_ps(x + i * ldx + kk);
#pragma GCC unroll 8
      for (int j = 0; j < NW; ++j) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
    }
  }
  if (kk < k) {
    const __mmask16 mk = prefix_mask(k - kk);
    __m512 wv[NW];
    #pragma GCC unroll 16
    for (int j = 0; j < NW; ++j) wv[j] = load_w16_mask<DT>(w + (j * js * ldw + kk) * es, mk);
    #pragma GCC unroll 16
    for (int i = 0; i < MB; ++i) {
      const __m512 xv = _mm512_maskz_loadu_ps(mk, x + i * ldx + kk);
      #pragma GCC unroll 16
      for (int j = 0; j < NW; ++j) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
    }
  }
  #pragma GCC unroll 16
  for (int i = 0; i < MB; ++i) {
    #pragma GCC unroll 16
    for (int j = 0; j < NW; ++j) {
      float v = _mm512_reduce_add_ps(acc[i][j]);
      if (accumulate) v = y[i * ldy + j * js] + v;
      if (bias) v = v + bias[j * js];
      y[i * ldy + j * js] = v;
    }
  }
}

template <DType DT, int NW>
XC2_AVX512 void rows_group(const float* x, int64_t ldx, const char* w, int64_t ldw, int64_t js, const float* bias,
                           float* y, int64_t ldy, int64_t m, int64_t k, bool accumulate) {
  static_assert(kRowsMb <= 8, "tails up to 7 rows");
  int64_t i = 0;
  for (; i + kRowsMb <= m; i += kRowsMb)
    rows_block<DT, kRowsMb, NW>(x + i * ldx, ldx, w, ldw, js, k, bias, y + i * ldy, ldy, accumulate);
  const float* xi = x + i * ldx;
  float* yi = y + i * ldy;
  switch (m - i) {
    case 1: rows_block<DT, 1, NW>(xi, ldx, w, ldw, js, k, bias, yi, ldy, accumulate); break;
    case 2: rows_block<DT, 2, NW>(xi, ldx, w, ldw, js, k, bias, yi, ldy, accumulate); break;
    case 3: rows_block<DT, 3, NW>(xi, ldx, w, ldw, js, k, bias, yi, ldy, accumulate); break;
    case 4: rows_block<DT, 4, NW>(xi, ldx, w, ldw, js, k, bias, yi, ldy, accumulate); break;
    case 5: rows_block<DT, 5, NW>(xi, ldx, w, ldw, js, k, bias, yi, ldy, accumulate); break;
    case 6: rows_block<DT, 6, NW>(xi, ldx, w, ldw, js, k, bias, yi, ldy, accumulate); break;
    case 7: rows_block<DT, 7, NW>(xi, ldx, w, ldw, js, k, bias, yi, ldy, accumulate); break;
    default: break;
  }
}

template <DType DT>
XC2_AVX512 void rows_t(const float* x, int64_t ldx, const void* w, int64_t ldw, const float* bias, float* y,
                       int64_t ldy, int64_t m, int64_t k, int64_t n0, int64_t n1, bool accumulate) {
  constexpr int64_t es = elem_size<DT>();
  const char* wb = static_cast<const char*>(w);
  // A group is rows {j, j + q, j + 2q, ...} (q = the range / kRowsNw): kRowsNw long sequential streams
  // through the range. Groups of adjacent rows would make streams only one row long (8 KB at k = 4096,
  // bf16), and the hardware prefetchers never get going: m = 1 ran at ~50% of the read bandwidth.
  const int64_t q = (n1 - n0) / kRowsNw;
  for (int64_t s = 0; s < q; ++s) {
    const int64_t j = n0 + s;
    rows_group<DT, kRowsNw>(x, ldx, wb + j * ldw * es, ldw, q, bias ? bias + j : nullptr, y + j, ldy, m, k,
                            accumulate);
  }
  for (int64_t j = n0 + q * kRowsNw; j < n1; ++j)
    rows_group<DT, 1>(x, ldx, wb + j * ldw * es, ldw, 1, bias ? bias + j : nullptr, y + j, ldy, m, k, accumulate);
}

XC2_AVX512 void rows(const float* x, int64_t ldx, const void* w, DType dtype, int64_t ldw, const float* bias,
                     float* y, int64_t ldy, int64_t m, int64_t k, int64_t n0, int64_t n1, bool accumulate,
                     float* /*scratch*/) {
  switch (dtype) {
    case DType::F32: rows_t<DType::F32>(x, ldx, w, ldw, bias, y, ldy, m, k, n0, n1, accumulate); break;
    case DType::F16: rows_t<DType::F16>(x, ldx, w, ldw, bias, y, ldy, m, k, n0, n1, accumulate); break;
    case DType::BF16: rows_t<DType::BF16>(x, ldx, w, ldw, bias, y, ldy, m, k, n0, n1, accumulate); break;
    case DType::I32: break;  // never a GEMM weight
  }
}

}  // namespace

const IsaKernels* avx512_kernels() {
  static const IsaKernels k = [] {
    IsaKernels s;
    s.name = "avx512";
    s.rows_max_m = 40;  // measured: docs/perf.md
    s.rows_max_mk = 229376;
    s.packed.mr = kMr;
    s.packed.nr = kNr;
    s.packed.kc = 512;
    s.packed.mc = 256;
    s.packed.nc = 1536;
    s.packed.pack_w = pack_w;
    s.packed.pack_x = pack_x;
    s.packed.tile = tile;
    s.rows = rows;
    return s;
  }();
  return &k;
}

}  // namespace xc2::kernels::cpu::detail

#else  // not x86

namespace xc2::kernels::cpu::detail {
const IsaKernels* avx512_kernels() { return nullptr; }
}  // namespace xc2::kernels::cpu::detail

#endif
