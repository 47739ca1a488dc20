// Machine-limit microbenchmarks: streaming read and copy bandwidth, peak f32 FMA rate.
//   read:  each thread sums its share as 4 concurrent streams (one zmm/ymm add chain each).
//   copy:  memcpy of each thread's share.
//   fma:   acc[i] = acc[i] * a + b on independent chains (fixed point 1.0: no overflow, no denormals).
// Threads: pool.run over pool.size() tasks; wall time of the whole run, best of reps.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"  // GCC 12 avx512fintrin.h, see gemm_avx512.cpp
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "microbench.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define XC2_MB_X86 1
#define XC2_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
#define XC2_AVX2 __attribute__((target("avx2,fma,f16c")))
#endif

#include "core/check.h"

namespace xc2::bench {
namespace {

using kernels::cpu::GemmIsa;
using kernels::cpu::gemm_resolve_isa;

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// ---- read ----
// Each thread reads its share as 4 concurrent sequential streams (its 4 quarters): more memory-level
// parallelism than a single stream (+10-15% on the Zen 5 dev VM), and the same access pattern as the
// rows-path GEMV, which streams 4 weight rows at a time.

double read_scalar(const float* p, size_t n) {
  const size_t q = n / 4;
  float acc[4][8] = {};
  size_t i = 0;
  for (; i + 8 <= q; i += 8)
    for (int s = 0; s < 4; ++s)
      for (int l = 0; l < 8; ++l) acc[s][l] += p[s * q + i + l];
  double t = 0;
  for (auto& a : acc)
    for (float v : a) t += v;
  return t;
}

#ifdef XC2_MB_X86
XC2_AVX512 double read_avx512(const float* p, size_t n) {
  const size_t q = n / 4 / 16 * 16;
  const float *p0 = p, *p1 = p + q, *p2 = p + 2 * q, *p3 = p + 3 * q;
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i < q; i += 16) {
    a0 = _mm512_add_ps(a0, _mm512_loadu_ps(p0 + i));
    a1 = _mm512_add_ps(a1, _mm512_loadu_ps(p1 + i));
    a2 = _mm512_add_ps(a2, _mm512_loadu_ps(p2 + i));
    a3 = _mm512_add_ps(a3, _mm512_loadu_ps(p3 + i));
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

XC2_AVX2 double read_avx2(const float* p, size_t n) {
  const size_t q = n / 4 / 8 * 8;
  const float *p0 = p, *p1 = p + q, *p2 = p + 2 * q, *p3 = p + 3 * q;
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i < q; i += 8) {
    a0 = _mm256_add_ps(a0, _mm256_loadu_ps(p0 + i));
    a1 = _mm256_add_ps(a1, _mm256_loadu_ps(p1 + i));
    a2 = _mm256_add_ps(a2, _mm256_loadu_ps(p2 + i));
    a3 = _mm256_add_ps(a3, _mm256_loadu_ps(p3 + i));
  }
  const __m256 s = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
  alignas(32) float buf[8];
  _mm256_store_ps(buf, s);
  double t = 0;
  for (float v : buf) t += v;
  return t;
}

// ---- reading a list of buffers ----
// 2 streams (the halves of [p, p + lines * 64)), 64-byte loads, integer adds.

uint64_t read_lines_scalar(const uint8_t* p, size_t lines) {
  const size_t h = lines / 2;
  const uint8_t *p0 = p, *p1 = p + h * 64;
  uint64_t a = 0, b = 0;
  for (size_t i = 0; i < h * 64; i += 64)
    for (size_t j = 0; j < 64; j += 8) {
      uint64_t u, v;
      std::memcpy(&u, p0 + i + j, 8);
      std::memcpy(&v, p1 + i + j, 8);
      a += u;
      b += v;
    }
  if (lines % 2) a += p[(lines - 1) * 64];
  return a + b;
}

#ifdef XC2_MB_X86
XC2_AVX512 uint64_t read_lines_avx512(const uint8_t* p, size_t lines) {
  const size_t h = lines / 2;
  const uint8_t *p0 = p, *p1 = p + h * 64;
  __m512i a0 = _mm512_setzero_si512(), a1 = a0;
  for (size_t i = 0; i < h * 64; i += 64) {
    a0 = _mm512_add_epi64(a0, _mm512_loadu_si512(p0 + i));
    a1 = _mm512_add_epi64(a1, _mm512_loadu_si512(p1 + i));
  }
  if (lines % 2) a0 = _mm512_add_epi64(a0, _mm512_loadu_si512(p + (lines - 1) * 64));
  return static_cast<uint64_t>(_mm512_reduce_add_epi64(_mm512_add_epi64(a0, a1)));
}

XC2_AVX2 uint64_t read_lines_avx2(const uint8_t* p, size_t lines) {
  const size_t h = lines / 2;
  const uint8_t *p0 = p, *p1 = p + h * 64;
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i < h * 64; i += 64) {
    a0 = _mm256_add_epi64(a0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p0 + i)));
    a1 = _mm256_add_epi64(a1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p0 + i + 32)));
    a2 = _mm256_add_epi64(a2, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p1 + i)));
    a3 = _mm256_add_epi64(a3, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p1 + i + 32)));
  }
  alignas(32) uint64_t buf[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(buf),
                     _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3)));
  uint64_t t = buf[0] + buf[1] + buf[2] + buf[3];
  if (lines % 2) t += p[(lines - 1) * 64];
  return t;
}
#endif

// ---- fma ----

XC2_AVX512 double fma_avx512(int64_t iters) {
  constexpr int kChains = 24;
  __m512 acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm512_set1_ps(0.5f + 0.01f * static_cast<float>(c));
  const __m512 a = _mm512_set1_ps(1.0f - 1.0f / 1048576.0f), b = _mm512_set1_ps(1.0f / 1048576.0f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 24
    for (int c = 0; c < kChains; ++c) acc[c] = _mm512_fmadd_ps(acc[c], a, b);
  }
  __m512 s = _mm512_setzero_ps();
  for (int c = 0; c < kChains; ++c) s = _mm512_add_ps(s, acc[c]);
  return _mm512_reduce_add_ps(s);
}

XC2_AVX2 double fma_avx2(int64_t iters) {
  constexpr int kChains = 12;
  __m256 acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm256_set1_ps(0.5f + 0.01f * static_cast<float>(c));
  const __m256 a = _mm256_set1_ps(1.0f - 1.0f / 1048576.0f), b = _mm256_set1_ps(1.0f / 1048576.0f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int c = 0; c < kChains; ++c) acc[c] = _mm256_fmadd_ps(acc[c], a, b);
  }
  __m256 s = _mm256_setzero_ps();
  for (int c = 0; c < kChains; ++c) s = _mm256_add_ps(s, acc[c]);
  alignas(32) float buf[8];
  _mm256_store_ps(buf, s);
  double t = 0;
  for (float v : buf) t += v;
  return t;
}
#endif

double fma_scalar(int64_t iters) {
  constexpr int kChains = 16;
  float acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = 0.5f + 0.01f * static_cast<float>(c);
  const float a = 1.0f - 1.0f / 1048576.0f, b = 1.0f / 1048576.0f;
  for (int64_t it = 0; it < iters; ++it)
    for (int c = 0; c < kChains; ++c) acc[c] = acc[c] * a + b;
  double s = 0;
  for (float v : acc) s += v;
  return s;
}

volatile double g_sink = 0;  // keeps results alive

// Thread t's share of n floats (n a multiple of 64), in whole 64-float blocks (4 streams of 16-float
// aligned vectors each).
void share_blocks(size_t n, int nt, int t, size_t* b, size_t* e) {
  const size_t blocks = n / 64;
  *b = blocks * static_cast<size_t>(t) / static_cast<size_t>(nt) * 64;
  *e = blocks * static_cast<size_t>(t + 1) / static_cast<size_t>(nt) * 64;
}

}  // namespace

double measure_read_bandwidth_gbs(ThreadPool& pool, const float* p, size_t n_floats, int reps) {
  const int nt = pool.size();
  const size_t n = n_floats / 64 * 64;
  if (n == 0) return 0;
  const GemmIsa isa = gemm_resolve_isa(GemmIsa::Auto);
  std::vector<double> sums(static_cast<size_t>(nt));
  double best = 0;
  for (int r = 0; r < std::max(1, reps); ++r) {
    const auto t0 = Clock::now();
    pool.run(nt, [&](int t, int) {
      size_t b, e;
      share_blocks(n, nt, t, &b, &e);
      double s;
#ifdef XC2_MB_X86
      if (isa == GemmIsa::Avx512) s = read_avx512(p + b, e - b);
      else if (isa == GemmIsa::Avx2) s = read_avx2(p + b, e - b);
      else
#endif
        s = read_scalar(p + b, e - b);
      sums[static_cast<size_t>(t)] = s;
    });
    const double sec = seconds_since(t0);
    for (double s : sums) g_sink = g_sink + s;
    best = std::max(best, static_cast<double>(n * sizeof(float)) / sec / 1e9);
  }
  return best;
}

std::unique_ptr<float, void (*)(void*)> aligned_floats(ThreadPool& pool, size_t n) {
  std::unique_ptr<float, void (*)(void*)> buf(
      static_cast<float*>(std::aligned_alloc(4096, (n * sizeof(float) + 4095) / 4096 * 4096)), std::free);
  if (buf) {
    float* p = buf.get();
    pool.run(pool.size(), [&](int ti, int nt) {
      size_t b, e;
      share_blocks(n, nt, ti, &b, &e);  // the share measure_read_bandwidth_gbs() has this thread read
      if (ti == nt - 1) e = n;          // and the tail past the last 64-float block
      for (size_t i = b; i < e; ++i) p[i] = static_cast<float>(i & 63) * (1.0f / 64) - 0.5f;
    });
  }
  return buf;
}

ReadProbe::ReadProbe(ThreadPool& pool, size_t bytes)
    : pool_(pool), buf_(nullptr, std::free), n_(std::max<size_t>(bytes / sizeof(float) / 64 * 64, 64)) {
  buf_ = aligned_floats(pool, n_);
  XC2_CHECK(buf_ != nullptr, Internal, "microbench: cannot allocate ", bytes, " bytes");
}

double ReadProbe::gbs(int reps) { return measure_read_bandwidth_gbs(pool_, buf_.get(), n_, reps); }

double measure_read_bandwidth_gbs(ThreadPool& pool, size_t bytes, int reps) { return ReadProbe(pool, bytes).gbs(reps); }

double read_buffers_gbs(ThreadPool& pool, const std::vector<ReadSpan>& spans) {
  const int nt = pool.size();
  const GemmIsa isa = gemm_resolve_isa(GemmIsa::Auto);
  std::vector<uint64_t> sums(static_cast<size_t>(nt), 0);
  size_t total = 0;
  const auto t0 = Clock::now();
  for (size_t g0 = 0; g0 < spans.size();) {
    size_t g1 = g0 + 1;
    while (g1 < spans.size() && !spans[g1 - 1].barrier_after) ++g1;
    for (size_t i = g0; i < g1; ++i) total += spans[i].bytes / 64 * 64;
    pool.run(nt, [&](int t, int) {
      for (size_t i = g0; i < g1; ++i) {
        const size_t lines = spans[i].bytes / 64;
        const size_t b = lines * static_cast<size_t>(t) / static_cast<size_t>(nt);
        const size_t e = lines * static_cast<size_t>(t + 1) / static_cast<size_t>(nt);
        const uint8_t* p = static_cast<const uint8_t*>(spans[i].data) + b * 64;
        uint64_t v;
#ifdef XC2_MB_X86
        if (isa == GemmIsa::Avx512) v = read_lines_avx512(p, e - b);
        else if (isa == GemmIsa::Avx2) v = read_lines_avx2(p, e - b);
        else
#endif
          v = read_lines_scalar(p, e - b);
        sums[static_cast<size_t>(t)] += v;
      }
    });
    g0 = g1;
  }
  const double sec = seconds_since(t0);
  for (uint64_t v : sums) g_sink = g_sink + static_cast<double>(v & 0xFF);
  return sec > 0 ? static_cast<double>(total) / sec / 1e9 : 0;
}

double measure_copy_bandwidth_gbs(ThreadPool& pool, size_t bytes, int reps) {
  const int nt = pool.size();
  const size_t alloc = (std::max<size_t>(bytes, 4096) + 4095) / 4096 * 4096;
  std::unique_ptr<char, FreeDeleter> src(static_cast<char*>(std::aligned_alloc(4096, alloc)));
  std::unique_ptr<char, FreeDeleter> dst(static_cast<char*>(std::aligned_alloc(4096, alloc)));
  XC2_CHECK(src && dst, Internal, "microbench: cannot allocate 2 x ", alloc, " bytes");
  auto share = [&](int t, size_t* b, size_t* e) {
    const size_t lines = alloc / 64;
    *b = lines * t / nt * 64;
    *e = lines * (t + 1) / nt * 64;
  };
  pool.run(nt, [&](int t, int) {
    size_t b, e;
    share(t, &b, &e);
    std::memset(src.get() + b, 1, e - b);
    std::memset(dst.get() + b, 0, e - b);
  });
  double best = 0;
  for (int r = 0; r < std::max(1, reps); ++r) {
    const auto t0 = Clock::now();
    pool.run(nt, [&](int t, int) {
      size_t b, e;
      share(t, &b, &e);
      std::memcpy(dst.get() + b, src.get() + b, e - b);
    });
    const double sec = seconds_since(t0);
    g_sink = g_sink + dst.get()[alloc / 2];
    best = std::max(best, 2.0 * static_cast<double>(alloc) / sec / 1e9);
  }
  return best;
}

double measure_fma_peak_gflops(ThreadPool& pool, GemmIsa isa, int reps) {
  isa = gemm_resolve_isa(isa);
  const int nt = pool.size();
  int lanes = 16, chains = 16;
  int64_t iters = int64_t{1} << 20;
#ifdef XC2_MB_X86
  if (isa == GemmIsa::Avx512) {
    lanes = 16;
    chains = 24;
    iters = int64_t{1} << 22;  // ~50 ms per rep at 2 FMA/cycle, 4 GHz
  } else if (isa == GemmIsa::Avx2) {
    lanes = 8;
    chains = 12;
    iters = int64_t{1} << 23;
  } else
#endif
  {
    lanes = 1;
    chains = 16;
    iters = int64_t{1} << 22;
  }
  std::vector<double> sums(static_cast<size_t>(nt));
  auto body = [&](int t, int) {
    double s;
#ifdef XC2_MB_X86
    if (isa == GemmIsa::Avx512) s = fma_avx512(iters);
    else if (isa == GemmIsa::Avx2) s = fma_avx2(iters);
    else
#endif
      s = fma_scalar(iters);
    sums[static_cast<size_t>(t)] = s;
  };
  pool.run(nt, body);  // warm-up (clocks, page faults)
  double best = 0;
  for (int r = 0; r < std::max(1, reps); ++r) {
    const auto t0 = Clock::now();
    pool.run(nt, body);
    const double sec = seconds_since(t0);
    for (double s : sums) g_sink = g_sink + s;
    const double flops = 2.0 * static_cast<double>(lanes) * chains * static_cast<double>(iters) * nt;
    best = std::max(best, flops / sec / 1e9);
  }
  return best;
}

}  // namespace xc2::bench
