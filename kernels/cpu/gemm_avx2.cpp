// AVX2 + FMA + F16C GEMM kernels (function-level target attributes; chosen at run time).
//   tile:   6 x 16 register block (12 ymm accumulators), per k: 2 aligned loads of the w micro-panel,
//           6 broadcasts of x, 12 f32 FMAs. Rows 1..6 are template instantiations; partial columns are
//           computed in full and stored through a small buffer.
//   pack_w: widen 8 rows x 8 k of w (f32 load / vcvtph2ps / bf16 << 16), 8x8 in-register transpose;
//           partial blocks go through a zero-padded stack buffer.
//   rows:   2 x-rows x 4 w-rows per block, 8-lane partial sums over k, zero-padded k tail, then a fixed
//           horizontal reduction, so every output's value is independent of m and threads.
#include "cpu/gemm_internal.h"

#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#define XC2_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace xc2::kernels::cpu::detail {
namespace {

constexpr int kMr = 6;
constexpr int kNv = 2;
constexpr int kNr = 8 * kNv;
constexpr int kRowsMb = 2;
constexpr int kRowsNw = 4;

template <DType DT>
constexpr int64_t elem_size() {
  return DT == DType::F32 ? 4 : 2;
}

template <DType DT>
XC2_AVX2 inline __m256 load_w8(const void* p) {
  if constexpr (DT == DType::F32) {
    return _mm256_loadu_ps(static_cast<const float*>(p));
  } else if constexpr (DT == DType::F16) {
    return _mm256_cvtph_ps(_mm_loadu_si128(static_cast<const __m128i*>(p)));
  } else {
    const __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128(static_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
  }
}

// First n (< 8) weights at p, zero-padded; reads only those n.
template <DType DT>
XC2_AVX2 inline __m256 load_w8_part(const void* p, int64_t n) {
  alignas(32) unsigned char buf[32] = {};
  std::memcpy(buf, p, static_cast<size_t>(n * elem_size<DT>()));
  return load_w8<DT>(buf);
}

XC2_AVX2 inline __m256 load_x8_part(const float* p, int64_t n) {
  alignas(32) float buf[8] = {};
  std::memcpy(buf, p, static_cast<size_t>(n) * sizeof(float));
  return _mm256_load_ps(buf);
}

XC2_AVX2 inline void transpose8(__m256 r[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int g = 0; g < 2; ++g) {
    u[4 * g + 0] = _mm256_shuffle_ps(t[4 * g + 0], t[4 * g + 2], _MM_SHUFFLE(1, 0, 1, 0));
    u[4 * g + 1] = _mm256_shuffle_ps(t[4 * g + 0], t[4 * g + 2], _MM_SHUFFLE(3, 2, 3, 2));
    u[4 * g + 2] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], _MM_SHUFFLE(1, 0, 1, 0));
    u[4 * g + 3] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int c = 0; c < 4; ++c) {
    r[c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x20);
    r[4 + c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x31);
  }
}

template <DType DT>
XC2_AVX2 void pack_w_t(const void* w, int64_t ldw, int64_t rows, int64_t klen, float* dst) {
  const char* base = static_cast<const char*>(w);
  constexpr int64_t es = elem_size<DT>();
  const int64_t panels = (rows + kNr - 1) / kNr;
  for (int64_t p = 0; p < panels; ++p) {
    float* d = dst + p * klen * kNr;
    for (int h = 0; h < kNv; ++h) {
      const int64_t r0 = p * kNr + h * 8;
      const int64_t valid = rows - r0 < 0 ? 0 : (rows - r0 > 8 ? 8 : rows - r0);
      for (int64_t kk = 0; kk < klen; kk += 8) {
        const int64_t kv = klen - kk < 8 ? klen - kk : 8;
        __m256 v[8];
        for (int i = 0; i < 8; ++i) {
          if (i >= valid) {
            v[i] = _mm256_setzero_ps();
          } else if (kv == 8) {
            v[i] = load_w8<DT>(base + ((r0 + i) * ldw + kk) * es);
          } else {
            v[i] = load_w8_part<DT>(base + ((r0 + i) * ldw + kk) * es, kv);
          }
        }
        transpose8(v);
        for (int j = 0; j < kv; ++j) _mm256_store_ps(d + (kk + j) * kNr + h * 8, v[j]);
      }
    }
  }
}

XC2_AVX2 void pack_w(const void* w, DType dtype, int64_t ldw, int64_t rows, int64_t klen, float* dst) {
  switch (dtype) {
    case DType::F32: pack_w_t<DType::F32>(w, ldw, rows, klen, dst); break;
    case DType::F16: pack_w_t<DType::F16>(w, ldw, rows, klen, dst); break;
    case DType::BF16: pack_w_t<DType::BF16>(w, ldw, rows, klen, dst); break;
    case DType::I32: break;  // never a GEMM weight
  }
}

void pack_x(const float* x, int64_t ldx, int64_t rows, int64_t klen, float* dst) {
  for (int64_t r0 = 0; r0 < rows; r0 += kMr) {
    float* d = dst + (r0 / kMr) * klen * kMr;
    const int64_t nr = rows - r0 < kMr ? rows - r0 : kMr;
    for (int64_t i = 0; i < nr; ++i) {
      const float* s = x + (r0 + i) * ldx;
      for (int64_t kk = 0; kk < klen; ++kk) d[kk * kMr + i] = s[kk];
    }
  }
}

template <int R>
XC2_AVX2 void tile_r(int64_t klen, const float* xp, const float* wp, float* y, int64_t ldy, int cols, bool load_c,
                     const float* bias) {
  __m256 acc[R][kNv];
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < kNv; ++v) acc[i][v] = _mm256_setzero_ps();
  for (int64_t kk = 0; kk < klen; ++kk) {
    __m256 b[kNv];
#pragma GCC unroll 4
    for (int v = 0; v < kNv; ++v) b[v] = _mm256_load_ps(wp + v * 8);
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      const __m256 a = _mm256_broadcast_ss(xp + i);
#pragma GCC unroll 4
      for (int v = 0; v < kNv; ++v) acc[i][v] = _mm256_fmadd_ps(a, b[v], acc[i][v]);
    }
    wp += kNr;
    xp += kMr;
  }
  if (cols == kNr) {
    __m256 bv[kNv];
    #pragma GCC unroll 16
    for (int v = 0; v < kNv; ++v) bv[v] = bias ? _mm256_loadu_ps(bias + v * 8) : _mm256_setzero_ps();
    #pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
      float* yr = y + i * ldy;
      #pragma GCC unroll 16
      for (int v = 0; v < kNv; ++v) {
        __m256 o = acc[i][v];
        if (load_c) o = _mm256_add_ps(_mm256_loadu_ps(yr + v * 8), o);
        if (bias) o = _mm256_add_ps(o, bv[v]);
        _mm256_storeu_ps(yr + v * 8, o);
      }
    }
    return;
  }
  #pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
    alignas(32) float buf[kNr];
    #pragma GCC unroll 16
    for (int v = 0; v < kNv; ++v) _mm256_store_ps(buf + v * 8, acc[i][v]);
    float* yr = y + i * ldy;
    for (int j = 0; j < cols; ++j) {
      float o = buf[j];
      if (load_c) o = yr[j] + o;
      if (bias) o = o + bias[j];
      yr[j] = o;
    }
  }
}

using TileFn = void (*)(int64_t, const float*, const float*, float*, int64_t, int, bool, const float*);

void tile(int64_t klen, const float* xp, const float* wp, float* y, int64_t ldy, int rows, int cols, bool load_c,
          const float* bias) {
  static constexpr TileFn fns[kMr] = {&tile_r<1>, &tile_r<2>, &tile_r<3>, &tile_r<4>, &tile_r<5>, &tile_r<6>};
  fns[rows - 1](klen, xp, wp, y, ldy, cols, load_c, bias);
}

// ---- rows path ---------------------------------------------------------------------------------------

XC2_AVX2 inline float hsum8(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));  // lanes i + (i+4)
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));                                    // (0+2), (1+3)
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

template <DType DT, int MB, int NW>
XC2_AVX2 void rows_block(const float* x, int64_t ldx, const char* w, int64_t ldw, int64_t js, int64_t k,
                         const float* bias, float* y, int64_t ldy, bool accumulate) {
  constexpr int64_t es = elem_size<DT>();
  __m256 acc[MB][NW];
#pragma GCC unroll 8
  for (int i = 0; i < MB; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NW; ++j) acc[i][j] = _mm256_setzero_ps();
  int64_t kk = 0;
  for (; kk + 8 <= k; kk += 8) {
    __m256 wv[NW];
    if (((kk * es) & 63) == 0) {  // once per cache line of each row (see kRowsPrefetchBytes in gemm_avx512.cpp)
#pragma GCC unroll 8
      for (int j = 0; j < NW; ++j) _mm_prefetch(w + (j * js * ldw + kk) * es + 2048, _MM_HINT_T0);
    }
#pragma GCC unroll 8
    for (int j = 0; j < NW; ++j) wv[j] = load_w8<DT>(w + (j * js * ldw + kk) * es);
#pragma GCC unroll 8
    for (int i = 0; i < MB; ++i) {
      const __m256 xv = _mm256_loadu_ps(x + i * ldx + kk);
#pragma GCC unroll 8
      for (int j = 0; j < NW; ++j) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
    }
  }
  if (kk < k) {
    __m256 wv[NW];
    #pragma GCC unroll 16
    for (int j = 0; j < NW; ++j) wv[j] = load_w8_part<DT>(w + (j * js * ldw + kk) * es, k - kk);
    #pragma GCC unroll 16
    for (int i = 0; i < MB; ++i) {
      const __m256 xv = load_x8_part(x + i * ldx + kk, k - kk);
      #pragma GCC unroll 16
      for (int j = 0; j < NW; ++j) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
    }
  }
  #pragma GCC unroll 16
  for (int i = 0; i < MB; ++i) {
    #pragma GCC unroll 16
    for (int j = 0; j < NW; ++j) {
      float v = hsum8(acc[i][j]);
      if (accumulate) v = y[i * ldy + j * js] + v;
      if (bias) v = v + bias[j * js];
      y[i * ldy + j * js] = v;
    }
  }
}

template <DType DT, int NW>
XC2_AVX2 void rows_group(const float* x, int64_t ldx, const char* w, int64_t ldw, int64_t js, const float* bias,
                         float* y, int64_t ldy, int64_t m, int64_t k, bool accumulate) {
  int64_t i = 0;
  for (; i + kRowsMb <= m; i += kRowsMb)
    rows_block<DT, kRowsMb, NW>(x + i * ldx, ldx, w, ldw, js, k, bias, y + i * ldy, ldy, accumulate);
  if (i < m) rows_block<DT, 1, NW>(x + i * ldx, ldx, w, ldw, js, k, bias, y + i * ldy, ldy, accumulate);
}

template <DType DT>
XC2_AVX2 void rows_t(const float* x, int64_t ldx, const void* w, int64_t ldw, const float* bias, float* y,
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

void rows(const float* x, int64_t ldx, const void* w, DType dtype, int64_t ldw, const float* bias, float* y,
          int64_t ldy, int64_t m, int64_t k, int64_t n0, int64_t n1, bool accumulate, float* /*scratch*/) {
  switch (dtype) {
    case DType::F32: rows_t<DType::F32>(x, ldx, w, ldw, bias, y, ldy, m, k, n0, n1, accumulate); break;
    case DType::F16: rows_t<DType::F16>(x, ldx, w, ldw, bias, y, ldy, m, k, n0, n1, accumulate); break;
    case DType::BF16: rows_t<DType::BF16>(x, ldx, w, ldw, bias, y, ldy, m, k, n0, n1, accumulate); break;
    case DType::I32: break;  // never a GEMM weight
  }
}

}  // namespace

const IsaKernels* avx2_kernels() {
  static const IsaKernels k = [] {
    IsaKernels s;
    s.name = "avx2";
    s.rows_max_m = 24;  // measured: docs/perf.md
    s.rows_max_mk = 229376;
    s.packed.mr = kMr;
    s.packed.nr = kNr;
    s.packed.kc = 256;
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
const IsaKernels* avx2_kernels() { return nullptr; }
}  // namespace xc2::kernels::cpu::detail

#endif
