// CPU GEMM driver: validation, ISA dispatch, threading, cache blocking, and the portable scalar kernels.
//   y[m, n] (+)= sum_k x[m, k] * widen(w[n, k]) (+ bias[n]);  f32 accumulation, weights widened exactly.
// Packed path loop nest (per thread, over its own [m0, m1) x [n0, n1) range; threads never share outputs):
//   for jc in m by nc:          x panel  [nc x kc]  packed per (jc, pc)            (L3 / L2)
//     for pc in k by kc:
//       for ic in n by mc:      w block  [mc x kc]  widened + transposed once     (L2)
//         for jr in nc by mr:   x micro-panel [kc x mr]                           (L1)
//           for ir in mc by nr: w micro-panel [kc x nr] -> tile(mr x nr) += ...   (streams from L2)
// Each y element is summed in the order k = 0, 1, ..., (kc-sized partial sums added to y in k order),
// whatever the thread count, so results are identical for any number of threads.
#include "cpu/gemm.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include "core/check.h"
#include "core/half.h"
#include "core/log.h"
#include "cpu/gemm_internal.h"

namespace xc2::kernels::cpu {
namespace detail {
namespace {

// ---- scalar kernels (portable; the compiler may auto-vectorise the fixed-size inner loops) ---------

constexpr int kScalarMr = 4;
constexpr int kScalarNr = 8;
constexpr int kScalarLanes = 8;

inline float widen_one(const void* w, DType dtype, int64_t idx) {
  switch (dtype) {
    case DType::F32: return static_cast<const float*>(w)[idx];
    case DType::F16: return f16_to_f32(static_cast<const uint16_t*>(w)[idx]);
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(w)[idx]);
    case DType::I32: break;  // never a GEMM weight
  }
  return 0.0f;
}

void widen_row(const void* w, DType dtype, int64_t len, float* dst) {
  switch (dtype) {
    case DType::F32: std::memcpy(dst, w, static_cast<size_t>(len) * sizeof(float)); break;
    case DType::F16: {
      const uint16_t* s = static_cast<const uint16_t*>(w);
      for (int64_t i = 0; i < len; ++i) dst[i] = f16_to_f32(s[i]);
      break;
    }
    case DType::BF16: {
      const uint16_t* s = static_cast<const uint16_t*>(w);
      for (int64_t i = 0; i < len; ++i) dst[i] = bf16_to_f32(s[i]);
      break;
    }
    case DType::I32: break;  // never a GEMM weight
  }
}

void scalar_pack_w(const void* w, DType dtype, int64_t ldw, int64_t rows, int64_t klen, float* dst) {
  const int64_t panels = (rows + kScalarNr - 1) / kScalarNr;
  for (int64_t p = 0; p < panels; ++p) {
    float* d = dst + p * klen * kScalarNr;
    for (int j = 0; j < kScalarNr; ++j) {
      const int64_t r = p * kScalarNr + j;
      if (r < rows) {
        for (int64_t kk = 0; kk < klen; ++kk) d[kk * kScalarNr + j] = widen_one(w, dtype, r * ldw + kk);
      } else {
        for (int64_t kk = 0; kk < klen; ++kk) d[kk * kScalarNr + j] = 0.0f;
      }
    }
  }
}

// Padding rows of the last micro-panel are zeroed: the scalar tile computes all kScalarMr rows.
void scalar_pack_x(const float* x, int64_t ldx, int64_t rows, int64_t klen, float* dst) {
  const int64_t padded = (rows + kScalarMr - 1) / kScalarMr * kScalarMr;
  for (int64_t r = 0; r < padded; ++r) {
    float* d = dst + (r / kScalarMr) * klen * kScalarMr + (r % kScalarMr);
    if (r < rows) {
      const float* s = x + r * ldx;
      for (int64_t kk = 0; kk < klen; ++kk) d[kk * kScalarMr] = s[kk];
    } else {
      for (int64_t kk = 0; kk < klen; ++kk) d[kk * kScalarMr] = 0.0f;
    }
  }
}

void scalar_tile(int64_t klen, const float* xp, const float* wp, float* y, int64_t ldy, int rows, int cols,
                 bool load_c, const float* bias) {
  float acc[kScalarMr][kScalarNr] = {};
  for (int64_t kk = 0; kk < klen; ++kk) {
    const float* b = wp + kk * kScalarNr;
    for (int i = 0; i < kScalarMr; ++i) {
      const float a = xp[kk * kScalarMr + i];
      for (int j = 0; j < kScalarNr; ++j) acc[i][j] += a * b[j];
    }
  }
  for (int i = 0; i < rows; ++i) {
    float* yr = y + i * ldy;
    for (int j = 0; j < cols; ++j) {
      float v = acc[i][j];
      if (load_c) v = yr[j] + v;
      if (bias) v = v + bias[j];
      yr[j] = v;
    }
  }
}

void scalar_rows(const float* x, int64_t ldx, const void* w, DType dtype, int64_t ldw, const float* bias, float* y,
                 int64_t ldy, int64_t m, int64_t k, int64_t n0, int64_t n1, bool accumulate, float* scratch) {
  for (int64_t j = n0; j < n1; ++j) {
    const float* wr;
    if (dtype == DType::F32) {
      wr = static_cast<const float*>(w) + j * ldw;
    } else {
      widen_row(static_cast<const char*>(w) + j * ldw * 2, dtype, k, scratch);
      wr = scratch;
    }
    for (int64_t i = 0; i < m; ++i) {
      const float* xr = x + i * ldx;
      float lane[kScalarLanes] = {};
      int64_t kk = 0;
      for (; kk + kScalarLanes <= k; kk += kScalarLanes)
        for (int l = 0; l < kScalarLanes; ++l) lane[l] += xr[kk + l] * wr[kk + l];
      for (int l = 0; kk + l < k; ++l) lane[l] += xr[kk + l] * wr[kk + l];
      const float s = ((lane[0] + lane[4]) + (lane[2] + lane[6])) + ((lane[1] + lane[5]) + (lane[3] + lane[7]));
      float v = s;
      if (accumulate) v = y[i * ldy + j] + v;
      if (bias) v = v + bias[j];
      y[i * ldy + j] = v;
    }
  }
}

// ---- per-thread scratch ------------------------------------------------------------------------------

struct FreeDeleter {
  void operator()(float* p) const { std::free(p); }
};

struct AlignedBuffer {
  std::unique_ptr<float, FreeDeleter> ptr;
  float* data = nullptr;
  size_t cap = 0;  // floats
  float* ensure(size_t n) {
    if (n > cap) {
      ptr.reset();
      const size_t bytes = ((n * sizeof(float) + 63) / 64) * 64;
      ptr.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
      data = ptr.get();
      cap = data ? n : 0;
    }
    return data;
  }
};

// Owned by the calling thread and handed to the tasks by index, so worker threads never allocate for a GEMM they
// help with (one a pool task calls itself, as the prefill attention's, uses that thread's own).
struct Scratch {
  AlignedBuffer bias;
  std::vector<AlignedBuffer> x, w, src;  // per task; src: blocks of a WeightSource
  bool reserve(int tasks, size_t x_floats, size_t w_floats, size_t src_floats = 0) {
    if (static_cast<int>(x.size()) < tasks) {
      x.resize(static_cast<size_t>(tasks));
      w.resize(static_cast<size_t>(tasks));
      src.resize(static_cast<size_t>(tasks));
    }
    for (int t = 0; t < tasks; ++t) {
      if (x_floats && !x[static_cast<size_t>(t)].ensure(x_floats)) return false;
      if (w_floats && !w[static_cast<size_t>(t)].ensure(w_floats)) return false;
      if (src_floats && !src[static_cast<size_t>(t)].ensure(src_floats)) return false;
    }
    return true;
  }
};

thread_local Scratch tls_scratch;

// ---- ISA selection -----------------------------------------------------------------------------------

struct CpuFeatures {
  bool avx2 = false, avx512 = false;
};

// Detected once: CPUID is a VM exit under virtualisation (microseconds), far too slow per call.
const CpuFeatures& cpu_features() {
  static const CpuFeatures f = [] {
    CpuFeatures r;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    unsigned a = 0, b = 0, c = 0, d = 0;
    const bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29)) != 0;
    r.avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
    r.avx512 = r.avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#endif
    return r;
  }();
  return f;
}

bool cpu_has(GemmIsa isa) {
  switch (isa) {
    case GemmIsa::Auto:
    case GemmIsa::Scalar: return true;
    case GemmIsa::Avx2: return cpu_features().avx2;
    case GemmIsa::Avx512: return cpu_features().avx512;
  }
  return false;
}

const IsaKernels* kernels_for(GemmIsa isa) {
  switch (isa) {
    case GemmIsa::Avx512: return avx512_kernels();
    case GemmIsa::Avx2: return avx2_kernels();
    default: return scalar_kernels();
  }
}

GemmIsa best_isa() {
  if (gemm_isa_supported(GemmIsa::Avx512)) return GemmIsa::Avx512;
  if (gemm_isa_supported(GemmIsa::Avx2)) return GemmIsa::Avx2;
  return GemmIsa::Scalar;
}

GemmIsa env_isa() {
  static const GemmIsa isa = [] {
    const char* env = std::getenv("XC2_GEMM_ISA");
    if (!env || !*env) return GemmIsa::Auto;
    const std::string s(env);
    if (s == "scalar") return GemmIsa::Scalar;
    if (s == "avx2") return GemmIsa::Avx2;
    if (s == "avx512") return GemmIsa::Avx512;
    XC2_LOG_WARN("XC2_GEMM_ISA='" << s << "' is not one of scalar, avx2, avx512; ignored");
    return GemmIsa::Auto;
  }();
  return isa;
}

// ---- drivers -----------------------------------------------------------------------------------------

// Resolved block sizes for one call.
struct Blocking {
  int64_t kc, mc, nc;
};

inline const char* w_at(const GemmArgs& a, int64_t row, int64_t col) {
  return static_cast<const char*>(a.w) + (row * a.ldw + col) * static_cast<int64_t>(dtype_size(a.w_dtype));
}

// xbuf: >= round_up(min(nc, m1 - m0), mr) * min(kc, k) floats; wbuf: >= round_up(min(mc, n1 - n0), nr) * min(kc, k);
// sbuf (a WeightSource only): >= min(mc, n1 - n0) * min(kc, k).
void packed_range(const GemmArgs& a, const float* bias, const PackedKernels& pk, const Blocking& bl, int64_t m0,
                  int64_t m1, int64_t n0, int64_t n1, float* xbuf, float* wbuf, float* sbuf) {
  if (m0 >= m1 || n0 >= n1) return;
  const int64_t mr = pk.mr, nr = pk.nr;
  for (int64_t jc = m0; jc < m1; jc += bl.nc) {
    const int64_t mlen = std::min<int64_t>(bl.nc, m1 - jc);
    for (int64_t pc = 0; pc < a.k; pc += bl.kc) {
      const int64_t klen = std::min<int64_t>(bl.kc, a.k - pc);
      const bool load_c = pc > 0 || a.accumulate;
      const bool last = pc + klen >= a.k;
      pk.pack_x(a.x + jc * a.ldx + pc, a.ldx, mlen, klen, xbuf);
      for (int64_t ic = n0; ic < n1; ic += bl.mc) {
        const int64_t nlen = std::min<int64_t>(bl.mc, n1 - ic);
        if (a.w_source && a.w_source->pack) {
          a.w_source->pack(a.w_source->ctx, ic, nlen, pc, klen, wbuf, static_cast<int>(nr));
        } else if (a.w_source) {
          a.w_source->fill(a.w_source->ctx, ic, nlen, pc, klen, sbuf, klen);
          pk.pack_w(sbuf, DType::F32, klen, nlen, klen, wbuf);
        } else {
          pk.pack_w(w_at(a, ic, pc), a.w_dtype, a.ldw, nlen, klen, wbuf);
        }
        for (int64_t jr = 0; jr < mlen; jr += mr) {
          const int rows = static_cast<int>(std::min<int64_t>(mr, mlen - jr));
          const float* xp = xbuf + (jr / mr) * klen * mr;
          float* yrow = a.y + (jc + jr) * a.ldy;
          for (int64_t ir = 0; ir < nlen; ir += nr) {
            const int cols = static_cast<int>(std::min<int64_t>(nr, nlen - ir));
            pk.tile(klen, xp, wbuf + (ir / nr) * klen * nr, yrow + ic + ir, a.ldy, rows, cols, load_c,
                    last && bias ? bias + ic + ir : nullptr);
          }
        }
      }
    }
  }
}

// Splits [0, units) into `parts` contiguous pieces; returns piece p as [begin, end).
inline void split(int64_t units, int parts, int p, int64_t* begin, int64_t* end) {
  *begin = units * p / parts;
  *end = units * (p + 1) / parts;
}

void k_zero(const GemmArgs& a, const float* bias) {
  for (int64_t i = 0; i < a.m; ++i) {
    float* yr = a.y + i * a.ldy;
    for (int64_t j = 0; j < a.n; ++j) {
      float v = a.accumulate ? yr[j] : 0.0f;
      if (bias) v = v + bias[j];
      yr[j] = v;
    }
  }
}

}  // namespace

const IsaKernels* scalar_kernels() {
  static const IsaKernels k = [] {
    IsaKernels s;
    s.name = "scalar";
    s.rows_max_m = 48;  // measured: docs/perf.md
    s.rows_max_mk = 229376;
    s.packed.mr = kScalarMr;
    s.packed.nr = kScalarNr;
    s.packed.kc = 256;
    s.packed.mc = 256;
    s.packed.nc = 1024;
    s.packed.pack_w = scalar_pack_w;
    s.packed.pack_x = scalar_pack_x;
    s.packed.tile = scalar_tile;
    s.rows = scalar_rows;
    return s;
  }();
  return &k;
}

}  // namespace detail

using namespace detail;

bool gemm_isa_supported(GemmIsa isa) {
  if (isa == GemmIsa::Auto || isa == GemmIsa::Scalar) return true;
  return kernels_for(isa) != nullptr && cpu_has(isa);
}

GemmIsa gemm_resolve_isa(GemmIsa isa) {
  if (isa == GemmIsa::Auto) isa = env_isa();
  if (isa == GemmIsa::Auto) return best_isa();
  if (gemm_isa_supported(isa)) return isa;
  static std::atomic<bool> warned{false};
  if (!warned.exchange(true)) {
    XC2_LOG_WARN("GEMM ISA " << gemm_isa_name(isa) << " not available on this CPU/build; using "
                             << gemm_isa_name(best_isa()));
  }
  return best_isa();
}

const char* gemm_isa_name(GemmIsa isa) {
  switch (isa) {
    case GemmIsa::Auto: return "auto";
    case GemmIsa::Scalar: return "scalar";
    case GemmIsa::Avx2: return "avx2";
    case GemmIsa::Avx512: return "avx512";
  }
  return "?";
}

const char* gemm_isa() { return gemm_isa_name(gemm_resolve_isa(GemmIsa::Auto)); }

namespace {
// Up to this many rows the rows path wins whatever k is (the packed path must widen and transpose all of w).
constexpr int64_t kRowsAlwaysM = 4;

bool rows_path(const IsaKernels& ki, int64_t m, int64_t k) {
  return m <= kRowsAlwaysM || (m <= ki.rows_max_m && m * k <= ki.rows_max_mk);
}
}  // namespace

bool gemm_uses_rows_path(int64_t m, int64_t k, GemmIsa isa) {
  return rows_path(*kernels_for(gemm_resolve_isa(isa)), m, k);
}

void gemm(const GemmArgs& args, ThreadPool& pool) { gemm(args, pool, GemmOptions{}); }

void gemm(const GemmArgs& a, ThreadPool& pool, const GemmOptions& opts) {
  XC2_CHECK(a.m >= 0 && a.n >= 0 && a.k >= 0, InvalidArgument, "gemm: negative size m=", a.m, " n=", a.n,
            " k=", a.k);
  if (a.m == 0 || a.n == 0) return;
  XC2_CHECK(a.y != nullptr, InvalidArgument, "gemm: y is null");
  XC2_CHECK(a.m == 1 || a.ldy >= a.n, InvalidArgument, "gemm: ldy=", a.ldy, " < n=", a.n);
  XC2_CHECK(a.w_source || a.w_dtype == DType::F32 || a.w_dtype == DType::F16 || a.w_dtype == DType::BF16,
            InvalidArgument, "gemm: bad weight dtype");
  XC2_CHECK(a.bias_dtype == DType::F32 || a.bias_dtype == DType::F16 || a.bias_dtype == DType::BF16,
            InvalidArgument, "gemm: bad bias dtype");
  if (a.k > 0) {
    XC2_CHECK(a.x != nullptr && (a.w != nullptr || a.w_source != nullptr), InvalidArgument, "gemm: x or w is null");
    XC2_CHECK(a.m == 1 || a.ldx >= a.k, InvalidArgument, "gemm: ldx=", a.ldx, " < k=", a.k);
    XC2_CHECK(a.w_source || a.n == 1 || a.ldw >= a.k, InvalidArgument, "gemm: ldw=", a.ldw, " < k=", a.k);
  }

  // The calling thread's scratch; tasks on worker threads reach it through this reference (naming
  // tls_scratch inside a task would give the worker's own, empty, instance).
  Scratch& scratch = tls_scratch;

  // Bias as f32 (widened once, by the calling thread).
  const float* bias = nullptr;
  if (a.bias) {
    if (a.bias_dtype == DType::F32) {
      bias = static_cast<const float*>(a.bias);
    } else {
      float* b = scratch.bias.ensure(static_cast<size_t>(a.n));
      XC2_CHECK(b != nullptr, Internal, "gemm: out of memory for bias scratch");
      widen_row(a.bias, a.bias_dtype, a.n, b);
      bias = b;
    }
  }
  if (a.k == 0) {
    k_zero(a, bias);
    return;
  }

  const IsaKernels* isa = kernels_for(gemm_resolve_isa(opts.isa));
  GemmPath path = opts.path;
  if (path == GemmPath::Auto) path = rows_path(*isa, a.m, a.k) ? GemmPath::Rows : GemmPath::Packed;

  int threads = opts.max_threads > 0 ? std::min(opts.max_threads, pool.size()) : pool.size();
  if (a.m * a.n * a.k < (int64_t{1} << 17)) threads = 1;  // waking the pool costs more than the work

  if (path == GemmPath::Rows) {
    // Threads split n into contiguous runs of 16 rows; each weight row is read by one thread, once.
    const int64_t units = (a.n + 15) / 16;
    const int tasks = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, units)));
    // A WeightSource fills 16 rows at a time into the task's block buffer, read once for all m rows.
    XC2_CHECK(scratch.reserve(tasks, 0, static_cast<size_t>(rows_scratch_floats(a.m, a.k)),
                              a.w_source ? static_cast<size_t>(16 * a.k) : 0),
              Internal, "gemm: out of memory for scratch");
    // The task captures one pointer, so std::function keeps it inline (no allocation per call).
    struct Job {
      const GemmArgs* a;
      const IsaKernels* isa;
      const float* bias;
      Scratch* scratch;
      int64_t units;
    } job{&a, isa, bias, &scratch, units};
    // Each output (a dot product over all of k) is computed whole by one task: the split (learned by run_balanced)
    // changes no bits.
    auto body = [j = &job](int t, int64_t b, int64_t e) {
      const GemmArgs& g = *j->a;
      b *= 16;
      e = std::min(e * 16, g.n);
      float* rs = j->scratch->w[static_cast<size_t>(t)].data;
      if (g.w_source) {
        float* blk = j->scratch->src[static_cast<size_t>(t)].data;
        for (int64_t r = b; r < e; r += 16) {
          const int64_t cnt = std::min<int64_t>(16, e - r);
          g.w_source->fill(g.w_source->ctx, r, cnt, 0, g.k, blk, g.k);
          j->isa->rows(g.x, g.ldx, blk, DType::F32, g.k, j->bias ? j->bias + r : nullptr, g.y + r, g.ldy, g.m, g.k, 0,
                       cnt, g.accumulate, rs);
        }
      } else if (b < e) {
        j->isa->rows(g.x, g.ldx, g.w, g.w_dtype, g.ldw, j->bias, g.y, g.ldy, g.m, g.k, b, e, g.accumulate, rs);
      }
    };
    if (tasks == 1) body(0, 0, units); else pool.run_balanced(tasks, units, body);
    return;
  }

  const PackedKernels& pk = isa->packed;
  Blocking bl{opts.kc > 0 ? opts.kc : pk.kc, opts.mc > 0 ? opts.mc : pk.mc, opts.nc > 0 ? opts.nc : pk.nc};
  // Block sizes in whole micro-tiles.
  bl.mc = std::max<int64_t>(pk.nr, bl.mc / pk.nr * pk.nr);
  bl.nc = std::max<int64_t>(pk.mr, bl.nc / pk.mr * pk.mr);
  bl.kc = std::max<int64_t>(1, bl.kc);

  // Thread grid: split n (each thread widens only its own weight rows) unless n is too narrow, then m.
  const int64_t units_n = (a.n + pk.nr - 1) / pk.nr;
  const int64_t units_m = (a.m + pk.mr - 1) / pk.mr;
  int tn = 1, tm = 1;
  if (threads > 1) {
    if (units_n >= 4 * threads) {
      tn = threads;
    } else {
      tn = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, units_n / 2)));
      tm = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads / tn, units_m / 2)));
    }
  }
  // Packing scratch, per task, owned by this (calling) thread and kept between calls.
  const int tasks = tn * tm;
  {
    const int64_t rows_cap = std::min<int64_t>(bl.nc, a.m), cols_cap = std::min<int64_t>(bl.mc, a.n);
    const int64_t klen_cap = std::min<int64_t>(bl.kc, a.k);
    XC2_CHECK(scratch.reserve(tasks, static_cast<size_t>(((rows_cap + pk.mr - 1) / pk.mr) * pk.mr * klen_cap),
                                  static_cast<size_t>(((cols_cap + pk.nr - 1) / pk.nr) * pk.nr * klen_cap),
                                  a.w_source ? static_cast<size_t>(cols_cap * klen_cap) : 0),
              Internal, "gemm: out of memory for packing scratch");
  }
  struct Job {
    const GemmArgs* a;
    const float* bias;
    const PackedKernels* pk;
    Blocking bl;
    Scratch* scratch;
    int64_t units_n, units_m;
    int tn, tm;
  } job{&a, bias, &pk, bl, &scratch, units_n, units_m, tn, tm};
  auto range = [j = &job](int t, int64_t nb, int64_t ne, int64_t mb, int64_t me) {
    const GemmArgs& g = *j->a;
    const int64_t mr = j->pk->mr, nr = j->pk->nr;
    packed_range(g, j->bias, *j->pk, j->bl, mb * mr, std::min(me * mr, g.m), nb * nr, std::min(ne * nr, g.n),
                 j->scratch->x[static_cast<size_t>(t)].data, j->scratch->w[static_cast<size_t>(t)].data,
                 j->scratch->src[static_cast<size_t>(t)].data);
  };
  if (tasks == 1) {
    range(0, 0, units_n, 0, units_m);
  } else if (tm == 1) {
    // Threads split n alone: in proportion to their speeds (run_balanced). Every output element is computed with
    // the same k blocks in the same order whichever task computes it: the same bits.
    pool.run_balanced(tasks, units_n, [&range, units_m](int t, int64_t nb, int64_t ne) { range(t, nb, ne, 0, units_m); });
  } else {
    pool.run(tasks, [&range, &job](int t, int) {
      int64_t nb, ne, mb, me;
      split(job.units_n, job.tn, t % job.tn, &nb, &ne);
      split(job.units_m, job.tm, t / job.tn, &mb, &me);
      range(t, nb, ne, mb, me);
    });
  }
}

}  // namespace xc2::kernels::cpu
