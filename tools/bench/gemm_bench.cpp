// xc2_gemm_bench: CPU GEMM throughput against this machine's measured limits.
//   limits:  streaming read / copy bandwidth and peak f32 FMA rate (tools/bench/microbench.h), per thread count
//   prefill: m = 1225 (image prompt) x the model's linears -> ms, GFLOP/s, % of FMA peak
//   decode:  m = 1 x the model's linears and the LM head -> ms, weight GB/s, % of read bandwidth
//            (weights rotate over enough copies that each call streams from DRAM, not the LLC)
//   sweep:   rows vs packed path over m, to place the threshold (gemm_uses_rows_path)
//   quant:   bf16 against GPTQ W8 and W4 (group size 128) on the decoder's linears, side by side: decode m = 1 and
//            4 (weights rotated from DRAM; speed-up against the ideal byte ratio, GB/s against the read bandwidth)
//            and prefill m = --m (exact path, and the int8 path with the kernel qlinear_int8 picks)
//   qdecode: the quant suite's decode rows alone (m = 1 and 4)
//   qprefill: the quant suite's prefill alone, short: GPTQ (group 128) at m = --m on the decoder's linears, and the
//            PLoRA A / B shapes with one scale per row (--qshape, --bits), the exact path (--isa) and every int8
//            kernel this CPU has (AVX-512 VNNI, AVX-VNNI, AVX2)
//   qplora:  the int8 path of the decoder's linears with the PLoRA B delta (rank 256, 8-bit) on the image rows of an
//            image prompt (1225 of 1290 rows), run as separate calls and fused into the main pass, alternating
//   qstep:   one decode step's quantized linears in model order (8 layers of wqkv, wo, w1, w3, w2 at --bits, group
//            128, and an 8-bit output head), each split across the threads as qlinear_int8 runs it (m = 1), against
//            a plain read of the same buffers in the same order with the same per-linear barriers (2 streams per
//            thread), and the streaming read of a 1 GiB buffer (the `limits` figure xc2 bench's roofline uses);
//            --reps rounds (at least 5), the three alternating, so each round's ratios compare the same minute
//   attn:    one decode step's attention (one query, 32 heads on 8 KV heads of 128, f32 cache) over 8 layers' caches
//            at --kv positions, against a plain read of the same K and V rows (per-layer barriers) and the 1 GiB
//            streaming read, alternating as qstep; GB/s = the K and V bytes the step must read / time; then one
//            layer's prefill attention at --m positions from 0 (causal), ms and GFLOP/s of the keys each query sees
// Each case: one warm-up call, then `--reps` timed calls (decode: at least one per weight copy);
// best and median wall time. Run on an idle machine for honest numbers.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/half.h"
#include "core/thread_pool.h"
#include "cpu/cpu_kernels.h"
#include "cpu/gemm.h"
#include "cpu/qgemm.h"
#include "microbench.h"

namespace {

using namespace xc2;
using namespace xc2::kernels::cpu;
using namespace xc2::bench;
using Clock = std::chrono::steady_clock;

struct Shape {
  const char* name;
  int64_t m, n, k;
};

struct Options {
  std::vector<int> threads;
  std::vector<DType> dtypes = {DType::BF16, DType::F16, DType::F32};
  std::vector<std::string> suites = {"limits", "prefill", "decode"};
  int reps = 3;
  int64_t prefill_m = 1225;
  size_t bw_bytes = size_t{1} << 30;
  size_t decode_rotate_bytes = size_t{768} << 20;
  GemmOptions gemm;
  std::vector<Shape> custom;
  std::vector<std::string> custom_names;
  bool lm_head_all_dtypes = false;
  std::vector<std::string> qshapes;  // qprefill: wqkv,wo,w1/w3,w2,plora_a,plora_b (default all)
  std::vector<int> qbits = {8, 4};   // qprefill
  bool qcold = false;                // qprefill: weights rotated over copies (streamed from DRAM)
  std::vector<int64_t> kv_lengths = {1300, 4096};  // attn
};

void usage() {
  std::printf(
      "usage: xc2_gemm_bench [options]\n"
      "  --suite LIST     limits,prefill,decode,sweep,quant,qdecode,qprefill,qplora,qstep,attn (default limits,prefill,decode)\n"
      "  --threads LIST   thread counts (default 1,<all>)\n"
      "  --dtype LIST     bf16,f16,f32 (default all three)\n"
      "  --reps N         timed calls per case (default 3)\n"
      "  --m M            prefill rows (default 1225)\n"
      "  --shape M,N,K    add a custom case (suite 'custom'; repeatable)\n"
      "  --isa X          auto|scalar|avx2|avx512\n"
      "  --path X         auto|rows|packed\n"
      "  --kc/--mc/--nc N packed-path block sizes\n"
      "  --bw-mib N       buffer for the bandwidth measurement (default 1024)\n"
      "  --lm-head-all    decode the LM head in every dtype (default bf16 only; f32 is 1.5 GB)\n"
      "  --qshape LIST    qprefill shapes: wqkv,wo,w1/w3,w2,plora_a,plora_b (default all)\n"
      "  --bits LIST      qprefill / qstep weight bits: 8,4 (default both)\n"
      "  --qcold          qprefill: weights rotate over copies (768 MiB), streamed from DRAM as in a model\n"
      "  --kv LIST        attn: cache lengths (default 1300,4096)\n");
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  size_t b = 0;
  while (b <= s.size()) {
    const size_t e = s.find(',', b);
    out.push_back(s.substr(b, e == std::string::npos ? std::string::npos : e - b));
    if (e == std::string::npos) break;
    b = e + 1;
  }
  return out;
}

DType parse_dtype(const std::string& s) {
  if (s == "bf16") return DType::BF16;
  if (s == "f16") return DType::F16;
  if (s == "f32") return DType::F32;
  std::fprintf(stderr, "unknown dtype '%s'\n", s.c_str());
  std::exit(2);
}

const char* dtype_short(DType d) { return d == DType::BF16 ? "bf16" : d == DType::F16 ? "f16" : "f32"; }

bool parse(int argc, char** argv, Options* o) {
  o->threads = {1};
  if (hardware_threads() > 1) o->threads.push_back(hardware_threads());
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--suite") {
      o->suites = split_list(next());
    } else if (a == "--threads") {
      o->threads.clear();
      for (const auto& t : split_list(next())) o->threads.push_back(std::atoi(t.c_str()));
    } else if (a == "--dtype") {
      o->dtypes.clear();
      for (const auto& t : split_list(next())) o->dtypes.push_back(parse_dtype(t));
    } else if (a == "--reps") {
      o->reps = std::max(1, std::atoi(next().c_str()));
    } else if (a == "--m") {
      o->prefill_m = std::atoll(next().c_str());
    } else if (a == "--shape") {
      const auto v = split_list(next());
      if (v.size() != 3) return false;
      o->custom_names.push_back("custom");
      o->custom.push_back({"custom", std::atoll(v[0].c_str()), std::atoll(v[1].c_str()), std::atoll(v[2].c_str())});
      if (std::find(o->suites.begin(), o->suites.end(), "custom") == o->suites.end()) o->suites.push_back("custom");
    } else if (a == "--isa") {
      const std::string v = next();
      o->gemm.isa = v == "scalar" ? GemmIsa::Scalar : v == "avx2" ? GemmIsa::Avx2 : v == "avx512" ? GemmIsa::Avx512
                                                                                                  : GemmIsa::Auto;
    } else if (a == "--path") {
      const std::string v = next();
      o->gemm.path = v == "rows" ? GemmPath::Rows : v == "packed" ? GemmPath::Packed : GemmPath::Auto;
    } else if (a == "--kc") {
      o->gemm.kc = std::atoll(next().c_str());
    } else if (a == "--mc") {
      o->gemm.mc = std::atoll(next().c_str());
    } else if (a == "--nc") {
      o->gemm.nc = std::atoll(next().c_str());
    } else if (a == "--bw-mib") {
      o->bw_bytes = static_cast<size_t>(std::atoll(next().c_str())) << 20;
    } else if (a == "--lm-head-all") {
      o->lm_head_all_dtypes = true;
    } else if (a == "--qshape") {
      o->qshapes = split_list(next());
    } else if (a == "--kv") {
      o->kv_lengths.clear();
      for (const auto& t : split_list(next())) o->kv_lengths.push_back(std::max<int64_t>(1, std::atoll(t.c_str())));
    } else if (a == "--qcold") {
      o->qcold = true;
    } else if (a == "--bits") {
      o->qbits.clear();
      for (const auto& t : split_list(next())) o->qbits.push_back(std::atoi(t.c_str()));
    } else {
      return false;
    }
  }
  return true;
}

// How many copies of a weight of `bytes` make each call stream it from DRAM (768 MiB in all, at least 2).
size_t rotate_copies(const Options& o, size_t bytes) {
  return std::max<size_t>(2, (o.decode_rotate_bytes + bytes - 1) / bytes);
}

// q and copies of it, enough for rotate_copies() (or q alone where !rotate).
std::vector<QuantMatrix> quant_copies(const Options& o, const QuantMatrix& q, bool rotate = true) {
  return std::vector<QuantMatrix>(rotate ? rotate_copies(o, q.bytes()) : 1, q);
}

// Weights [n, k] in a dtype, `copies` independent buffers (decode rotates over them).
struct Weights {
  DType dtype;
  int64_t n, k;
  std::vector<std::vector<uint16_t>> h;
  std::vector<std::vector<float>> f;
  const void* copy(size_t i) const {
    return dtype == DType::F32 ? static_cast<const void*>(f[i % f.size()].data()) : h[i % h.size()].data();
  }
  size_t count() const { return dtype == DType::F32 ? f.size() : h.size(); }
};

uint64_t g_rng = 0x9e3779b97f4a7c15ull;
inline float next_uniform() {  // xorshift64*, in [-1, 1)
  g_rng ^= g_rng >> 12;
  g_rng ^= g_rng << 25;
  g_rng ^= g_rng >> 27;
  const uint64_t r = g_rng * 0x2545f4914f6cdd1dull;
  return static_cast<float>(static_cast<double>(r >> 40) / 8388608.0 - 1.0);
}

Weights make_weights(DType dt, int64_t n, int64_t k, size_t copies) {
  Weights w{dt, n, k, {}, {}};
  const size_t count = static_cast<size_t>(n * k);
  if (dt == DType::F32) {
    w.f.resize(copies);
    w.f[0].resize(count);
    for (auto& v : w.f[0]) v = next_uniform() * 0.05f;
    for (size_t c = 1; c < copies; ++c) w.f[c] = w.f[0];
  } else {
    w.h.resize(copies);
    w.h[0].resize(count);
    for (auto& v : w.h[0]) v = dt == DType::F16 ? f32_to_f16(next_uniform() * 0.05f) : f32_to_bf16(next_uniform() * 0.05f);
    for (size_t c = 1; c < copies; ++c) w.h[c] = w.h[0];
  }
  return w;
}

struct Timing {
  double best_ms = 0, median_ms = 0;
  double limit = 0;  // best of the limit measured before each timed call (0 when none)
};

// One warm-up call, then `calls` timed calls, each on the next weight copy. When `limit` is set, it runs
// (untimed) before every timed call, so the limit and the GEMM sample the same moments of a shared machine.
template <typename LimitFn>
Timing time_gemm(const Weights& w, const std::vector<float>& x, std::vector<float>& y, int64_t m, ThreadPool& pool,
                 const GemmOptions& opts, int calls, LimitFn&& limit) {
  GemmArgs a;
  a.x = x.data();
  a.ldx = w.k;
  a.w_dtype = w.dtype;
  a.ldw = w.k;
  a.y = y.data();
  a.ldy = w.n;
  a.m = m;
  a.n = w.n;
  a.k = w.k;
  a.w = w.copy(w.count() - 1);
  gemm(a, pool, opts);  // warm-up
  std::vector<double> ms;
  double best_limit = 0;
  for (int c = 0; c < calls; ++c) {
    best_limit = std::max(best_limit, limit());
    a.w = w.copy(static_cast<size_t>(c));
    const auto t0 = Clock::now();
    gemm(a, pool, opts);
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return {ms.front(), ms[ms.size() / 2], best_limit};
}

Timing time_gemm(const Weights& w, const std::vector<float>& x, std::vector<float>& y, int64_t m, ThreadPool& pool,
                 const GemmOptions& opts, int calls) {
  return time_gemm(w, x, y, m, pool, opts, calls, [] { return 0.0; });
}

// A touched, 64-byte aligned buffer for interleaved read-bandwidth samples (a misaligned one reads at about
// half speed: every 64-byte load then spans two cache lines).
struct ReadBuffer {
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  std::unique_ptr<float, Free> ptr;
  size_t n = 0;
  explicit ReadBuffer(size_t bytes) : n(bytes / sizeof(float) / 64 * 64) {
    if (n == 0) return;
    ptr.reset(static_cast<float*>(std::aligned_alloc(4096, n * sizeof(float))));
    for (size_t i = 0; i < n; ++i) ptr.get()[i] = 1.0f;
  }
  const float* data() const { return ptr.get(); }
  size_t size() const { return n; }
};

const char* path_name(const GemmOptions& o, int64_t m, int64_t k) {
  GemmPath p = o.path;
  if (p == GemmPath::Auto) p = gemm_uses_rows_path(m, k, o.isa) ? GemmPath::Rows : GemmPath::Packed;
  return p == GemmPath::Rows ? "rows" : "packed";
}

void run_cases(const char* suite, const std::vector<Shape>& shapes, const Options& o, bool decode) {
  std::printf("\n# %s  (best/median of the timed calls%s; before each call, untimed, one sample of the %s,\n"
              "#  whose best is the %% denominator: the GEMM and its limit see the same machine load)\n",
              suite, decode ? ", weights rotated over copies so each call streams from DRAM" : "",
              decode ? "streaming read bandwidth over as many (cold) bytes as the weight" : "FMA peak");
  std::printf("%-14s %-5s %3s %6s %6s %6s %-6s %9s %9s %9s %8s %6s %8s %8s %6s\n", "shape", "dtype", "thr", "m", "n",
              "k", "path", "best_ms", "med_ms", "GFLOP/s", "fma_pk", "%fma", "wGB/s", "read_bw", "%read");
  ReadBuffer rbuf(decode ? size_t{1} << 30 : 0);
  for (DType dt : o.dtypes) {
    for (const Shape& s : shapes) {
      if (decode && std::string(s.name) == "lm_head" && dt != DType::BF16 && !o.lm_head_all_dtypes) continue;
      const size_t wbytes = static_cast<size_t>(s.n * s.k) * dtype_size(dt);
      const size_t copies = decode ? rotate_copies(o, wbytes) : 1;
      const Weights w = make_weights(dt, s.n, s.k, copies);
      std::vector<float> x(static_cast<size_t>(s.m * s.k)), y(static_cast<size_t>(s.m * s.n));
      for (auto& v : x) v = next_uniform();
      for (int t : o.threads) {
        ThreadPool pool(t);
        const int calls = decode ? std::max<int>(o.reps, static_cast<int>(copies)) : o.reps;
        Timing tm;
        if (decode) {
          // The read sample streams as many bytes as the weight, from the next cold window of a 1 GiB
          // buffer: same duration, same chance of catching a quiet moment.
          const size_t window = std::min(rbuf.size(), (wbytes / sizeof(float) + 63) / 64 * 64);
          size_t offset = 0;
          // One untimed pass over the windows about to be sampled: memory left idle for a while reads
          // slowly the first time on this VM (the kernel's DAMON worker, kdamond, is active), while the
          // weight copies were just written; without this the first thread count's samples read at ~half speed.
          for (int c = 0; c < calls; ++c) {
            if (offset + window > rbuf.size()) offset = 0;
            measure_read_bandwidth_gbs(pool, rbuf.data() + offset, window, 1);
            offset += window;
          }
          offset = 0;
          tm = time_gemm(w, x, y, s.m, pool, o.gemm, calls, [&] {
            if (offset + window > rbuf.size()) offset = 0;
            const double gbs = measure_read_bandwidth_gbs(pool, rbuf.data() + offset, window, 1);
            offset += window;
            return gbs;
          });
        } else {
          tm = time_gemm(w, x, y, s.m, pool, o.gemm, calls, [&] { return measure_fma_peak_gflops(pool, o.gemm.isa, 1); });
        }
        const double flops = 2.0 * s.m * s.n * s.k;
        const double gflops = flops / (tm.best_ms * 1e-3) / 1e9;
        const double wgbs = static_cast<double>(wbytes) / (tm.best_ms * 1e-3) / 1e9;
        if (decode) {
          std::printf("%-14s %-5s %3d %6lld %6lld %6lld %-6s %9.3f %9.3f %9.1f %8s %6s %8.2f %8.2f %5.1f%%\n", s.name,
                      dtype_short(dt), t, static_cast<long long>(s.m), static_cast<long long>(s.n),
                      static_cast<long long>(s.k), path_name(o.gemm, s.m, s.k), tm.best_ms, tm.median_ms, gflops, "-", "-",
                      wgbs, tm.limit, 100.0 * wgbs / tm.limit);
        } else {
          std::printf("%-14s %-5s %3d %6lld %6lld %6lld %-6s %9.3f %9.3f %9.1f %8.1f %5.1f%% %8.2f %8s %6s\n", s.name,
                      dtype_short(dt), t, static_cast<long long>(s.m), static_cast<long long>(s.n),
                      static_cast<long long>(s.k), path_name(o.gemm, s.m, s.k), tm.best_ms, tm.median_ms, gflops, tm.limit,
                      100.0 * gflops / tm.limit, wgbs, "-", "-");
        }
        std::fflush(stdout);
      }
    }
  }
}

void run_sweep(const Options& o) {
  std::printf("\n# sweep: rows vs packed path over m (best of %d calls, each on a cold weight copy)\n", o.reps);
  std::printf("%-5s %3s %6s %6s %6s %10s %10s %8s %s\n", "dtype", "thr", "m", "n", "k", "rows_ms", "packed_ms",
              "rows/pk", "faster");
  const int64_t ms[] = {1, 2, 4, 6, 8, 12, 16, 24, 32, 40, 48, 64, 96, 128};
  const std::pair<int64_t, int64_t> nks[] = {{4096, 4096}, {14336, 4096}, {4096, 14336}};
  for (DType dt : o.dtypes) {
    for (const auto& [n, k] : nks) {
      const size_t wbytes = static_cast<size_t>(n * k) * dtype_size(dt);
      const size_t copies = rotate_copies(o, wbytes);
      const Weights w = make_weights(dt, n, k, copies);
      std::vector<float> x(static_cast<size_t>(128 * k)), y(static_cast<size_t>(128 * n));
      for (auto& v : x) v = next_uniform();
      for (int t : o.threads) {
        ThreadPool pool(t);
        for (int64_t m : ms) {
          GemmOptions rows = o.gemm, packed = o.gemm;
          rows.path = GemmPath::Rows;
          packed.path = GemmPath::Packed;
          const int calls = o.reps;  // each call on a different (cold) copy
          const Timing tr = time_gemm(w, x, y, m, pool, rows, calls);
          const Timing tp = time_gemm(w, x, y, m, pool, packed, calls);
          std::printf("%-5s %3d %6lld %6lld %6lld %10.3f %10.3f %8.2f %s\n", dtype_short(dt), t,
                      static_cast<long long>(m), static_cast<long long>(n), static_cast<long long>(k), tr.best_ms,
                      tp.best_ms, tr.best_ms / tp.best_ms, tr.best_ms <= tp.best_ms ? "rows" : "packed");
          std::fflush(stdout);
        }
      }
    }
  }
}

// A random GPTQ linear [n, k] (group size gs), repacked for the CPU.
QuantMatrix make_quant(int bits, int64_t n, int64_t k, int64_t gs) {
  const int p = 32 / bits;
  const int64_t groups = k / gs;
  std::vector<int32_t> qweight(static_cast<size_t>(k / p * n)), qzeros(static_cast<size_t>(groups * ((n + p - 1) / p)));
  std::vector<uint16_t> scales(static_cast<size_t>(groups * n));
  for (auto& v : qweight) v = static_cast<int32_t>(g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull);
  for (auto& v : qzeros) v = static_cast<int32_t>(g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull);
  for (auto& v : scales) v = f32_to_f16(0.001f + 0.01f * std::fabs(next_uniform()));
  GptqTensors t;
  t.bits = bits;
  t.n = n;
  t.k = k;
  t.groups = groups;
  t.group_size = gs;
  t.qweight = qweight.data();
  t.qzeros = qzeros.data();
  t.scales = scales.data();
  return repack_gptq(t);
}

template <typename Fn>
double best_ms(int calls, Fn&& fn) {
  fn();  // warm-up
  double best = 1e30;
  for (int c = 0; c < calls; ++c) {
    const auto t0 = Clock::now();
    fn(c);
    best = std::min(best, std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  return best;
}

void run_quant(const Options& o, bool prefill) {
  struct Q {
    const char* name;
    int64_t n, k, group;
  };
  // The decoder's linears (group 128), and the PLoRA A / B shapes as the fast path runs them (8-bit, one scale
  // per row; B of w1 / w3, the largest).
  const Q shapes[] = {{"wqkv", 6144, 4096, 128}, {"wo", 4096, 4096, 128},      {"w1/w3", 14336, 4096, 128},
                      {"w2", 4096, 14336, 128},  {"plora_a", 256, 4096, 4096}, {"plora_b", 14336, 256, 256}};
  std::printf("\n# quant: bf16 vs GPTQ W8/W4 (group 128), best of %d calls. decode: weights rotated over copies (cold);\n"
              "#  speedup = bf16 ms / ms, ideal = bf16 bytes / bytes, %%ideal = speedup / ideal; %%read = GB/s / read bandwidth.\n"
              "#  prefill m=%lld: exact = f32 math on dequantized weights, int8 = int8 activations (kernel: %s)\n",
              o.reps, static_cast<long long>(o.prefill_m), qint8_kernel_name(qlinear_int8_kernel()));
  std::printf("%-7s %3s %-6s %5s %10s %9s %8s %7s %7s %7s %8s %6s\n", "shape", "thr", "weight", "m", "bytes_MB", "best_ms",
              "speedup", "ideal", "%ideal", "", "GB/s", "%read");
  for (int t : o.threads) {
    ThreadPool pool(t);
    const double read_bw = measure_read_bandwidth_gbs(pool, o.bw_bytes, 5);
    for (const Q& s : shapes) {
      const size_t bf_bytes = static_cast<size_t>(s.n * s.k) * 2;
      const size_t bf_copies = rotate_copies(o, bf_bytes);
      const Weights bf = make_weights(DType::BF16, s.n, s.k, bf_copies);
      const std::vector<QuantMatrix> q8 = quant_copies(o, make_quant(8, s.n, s.k, 128)),
                                     q4 = quant_copies(o, make_quant(4, s.n, s.k, 128));
      for (int64_t m : {int64_t{1}, int64_t{4}}) {
        std::vector<float> x(static_cast<size_t>(m * s.k)), y(static_cast<size_t>(m * s.n));
        for (auto& v : x) v = next_uniform();
        const int calls = std::max<int>(o.reps, static_cast<int>(bf_copies));
        const double bf_ms = time_gemm(bf, x, y, m, pool, o.gemm, calls).best_ms;
        auto row = [&](const char* wname, size_t bytes, double ms) {
          const double speed = bf_ms / ms, ideal = static_cast<double>(bf_bytes) / static_cast<double>(bytes);
          const double gbs = static_cast<double>(bytes) / (ms * 1e-3) / 1e9;
          std::printf("%-7s %3d %-6s %5lld %10.1f %9.3f %8.2f %7.2f %6.1f%% %7s %8.2f %5.1f%%\n", s.name, t, wname,
                      static_cast<long long>(m), static_cast<double>(bytes) / 1e6, ms, speed, ideal, 100.0 * speed / ideal,
                      "", gbs, 100.0 * gbs / read_bw);
        };
        row("bf16", bf_bytes, bf_ms);
        for (auto* qs : {&q8, &q4}) {
          const std::vector<QuantMatrix>& qv = *qs;
          const double ms = best_ms(static_cast<int>(std::max<size_t>(static_cast<size_t>(o.reps), qv.size())), [&](int c = 0) {
            QLinearOptions qo;
            qo.isa = o.gemm.isa;
            qlinear(x.data(), s.k, qv[static_cast<size_t>(c) % qv.size()], y.data(), s.n, m, false, pool, qo);
          });
          row(qv[0].bits == 8 ? "W8" : "W4", qv[0].bytes(), ms);
          if (qlinear_int8_supported(qv[0])) {
            const double ms8 = best_ms(static_cast<int>(std::max<size_t>(static_cast<size_t>(o.reps), qv.size())), [&](int c = 0) {
              qlinear_int8(x.data(), s.k, qv[static_cast<size_t>(c) % qv.size()], y.data(), s.n, m, false, pool);
            });
            row(qv[0].bits == 8 ? "W8-i8" : "W4-i8", qv[0].bytes(), ms8);
          }
        }
      }
      if (!prefill) {
        // The int8 decode kernel's own ceiling: one row of x against 256 outputs x this k, one copy, cache-resident
        // (0.5-1.8 MB), one thread: weight bytes per second it can consume when memory is not the limit.
        ThreadPool one(1);
        for (int bits : {8, 4}) {
          const QuantMatrix hot = make_quant(bits, 256, s.k, 128);
          if (!qlinear_int8_supported(hot)) continue;
          std::vector<float> x(static_cast<size_t>(s.k)), y(256);
          for (auto& v : x) v = next_uniform();
          const double ms = best_ms(std::max(o.reps, 50), [&](int = 0) {
            qlinear_int8(x.data(), s.k, hot, y.data(), 256, 1, false, one);
          });
          std::printf("%-7s %3d %-6s %5d %10.1f %9.4f %8s %7s %7s %7s %8.2f hot, 256 outputs, 1 thread\n", s.name, 1,
                      bits == 8 ? "W8-i8" : "W4-i8", 1, static_cast<double>(hot.bytes()) / 1e6, ms, "", "", "", "",
                      static_cast<double>(hot.bytes()) / (ms * 1e-3) / 1e9);
        }
        continue;
      }
      // Prefill: one copy each (compute-bound).
      const int64_t m = o.prefill_m;
      std::vector<float> x(static_cast<size_t>(m * s.k)), y(static_cast<size_t>(m * s.n));
      for (auto& v : x) v = next_uniform();
      const double bf_ms = time_gemm(bf, x, y, m, pool, o.gemm, o.reps).best_ms;
      const double flops = 2.0 * static_cast<double>(m) * static_cast<double>(s.n) * static_cast<double>(s.k);
      std::printf("%-7s %3d %-6s %5lld %10s %9.1f %8s %7s %7s %7s %8.1f GFLOP/s\n", s.name, t, "bf16", static_cast<long long>(m),
                  "-", bf_ms, "1.00", "", "", "", flops / (bf_ms * 1e-3) / 1e9);
      for (const QuantMatrix* qm : {&q8[0], &q4[0]}) {
        const char* wn = qm->bits == 8 ? "W8" : "W4";
        const double ex = best_ms(o.reps, [&](int = 0) {
          QLinearOptions qo;
          qo.isa = o.gemm.isa;
          qlinear(x.data(), s.k, *qm, y.data(), s.n, m, false, pool, qo);
        });
        std::printf("%-7s %3d %-6s %5lld %10s %9.1f %8.2f %7s %7s %7s %8.1f GFLOP/s (exact)\n", s.name, t, wn,
                    static_cast<long long>(m), "-", ex, bf_ms / ex, "", "", "", flops / (ex * 1e-3) / 1e9);
        if (qlinear_int8_supported(*qm)) {
          const double i8 = best_ms(o.reps, [&](int = 0) { qlinear_int8(x.data(), s.k, *qm, y.data(), s.n, m, false, pool); });
          std::printf("%-7s %3d %-6s %5lld %10s %9.1f %8.2f %7s %7s %7s %8.1f GOP/s (int8)\n", s.name, t, wn,
                      static_cast<long long>(m), "-", i8, bf_ms / i8, "", "", "", flops / (i8 * 1e-3) / 1e9);
        }
      }
      std::fflush(stdout);
    }
  }
}

// The quant suite's prefill rows alone, with every int8 kernel: short enough for a shared machine.
void run_qprefill(const Options& o) {
  struct Q {
    const char* name;
    int64_t n, k, group;
  };
  // The decoder's linears (group 128), and the PLoRA A / B shapes as the fast path runs them (8-bit, one scale
  // per row; B of w1 / w3, the largest).
  const Q shapes[] = {{"wqkv", 6144, 4096, 128}, {"wo", 4096, 4096, 128},      {"w1/w3", 14336, 4096, 128},
                      {"w2", 4096, 14336, 128},  {"plora_a", 256, 4096, 4096}, {"plora_b", 14336, 256, 256}};
  std::vector<QInt8Kernel> kernels;
  for (QInt8Kernel k : {QInt8Kernel::Avx512Vnni, QInt8Kernel::AvxVnni, QInt8Kernel::Avx2})
    if (qint8_kernel_available(k)) kernels.push_back(k);
  const int64_t m = o.prefill_m;
  std::printf("\n# qprefill: GPTQ (group 128) prefill m=%lld, best of %d calls; exact = f32 math on dequantized weights\n"
              "#  (isa %s), int8 = int8 activations per kernel; x exact = exact ms / ms\n",
              static_cast<long long>(m), o.reps, gemm_isa_name(gemm_resolve_isa(o.gemm.isa)));
  std::printf("%-7s %3s %-6s %5s %-18s %9s %9s %8s\n", "shape", "thr", "weight", "m", "path", "best_ms", "GOP/s",
              "x exact");
  for (int t : o.threads) {
    ThreadPool pool(t);
    for (const Q& s : shapes) {
      if (!o.qshapes.empty() && std::find(o.qshapes.begin(), o.qshapes.end(), s.name) == o.qshapes.end()) continue;
      std::vector<float> x(static_cast<size_t>(m * s.k)), y(static_cast<size_t>(m * s.n));
      for (auto& v : x) v = next_uniform();
      const double ops = 2.0 * static_cast<double>(m) * static_cast<double>(s.n) * static_cast<double>(s.k);
      for (int bits : o.qbits) {
        // --qcold: the weights rotate over copies (768 MiB in all), so that each call streams them from DRAM as a
        // model's layers do, not from the last-level cache.
        const std::vector<QuantMatrix> qms = quant_copies(o, make_quant(bits, s.n, s.k, s.group), o.qcold);
        size_t next = 0;
        auto qm_next = [&]() -> const QuantMatrix& { return qms[next++ % qms.size()]; };
        const int calls = o.qcold ? std::max<int>(o.reps, static_cast<int>(qms.size())) : o.reps;
        const std::string wn = "W" + std::to_string(bits);
        QLinearOptions qo;
        qo.isa = o.gemm.isa;
        const double ex =
            best_ms(calls, [&](int = 0) { qlinear(x.data(), s.k, qm_next(), y.data(), s.n, m, false, pool, qo); });
        std::printf("%-7s %3d %-6s %5lld %-18s %9.1f %9.1f %8.2f\n", s.name, t, wn.c_str(), static_cast<long long>(m),
                    (std::string("exact ") + gemm_isa_name(gemm_resolve_isa(o.gemm.isa))).c_str(), ex,
                    ops / (ex * 1e-3) / 1e9, 1.0);
        for (QInt8Kernel k : kernels) {
          const double i8 =
              best_ms(calls, [&](int = 0) { qlinear_int8(x.data(), s.k, qm_next(), y.data(), s.n, m, false, pool, k); });
          std::printf("%-7s %3d %-6s %5lld %-18s %9.1f %9.1f %8.2f\n", s.name, t, wn.c_str(), static_cast<long long>(m),
                      (std::string("int8 ") + qint8_kernel_name(k)).c_str(), i8, ops / (i8 * 1e-3) / 1e9, ex / i8);
        }
        std::fflush(stdout);
      }
    }
  }
}

// The PLoRA B delta of the image rows: separate accumulating calls after the main product, against the deltas fused
// into its pass (QInt8Extra), and the main product alone; the calls alternate so that all see the same machine.
void run_qplora(const Options& o) {
  struct Q {
    const char* name;
    int64_t n, k;
  };
  const Q shapes[] = {{"wqkv", 6144, 4096}, {"wo", 4096, 4096}, {"w1/w3", 14336, 4096}, {"w2", 4096, 14336}};
  const int64_t m = 1290, img0 = 50, img = 1225, rank = 256;
  std::printf("\n# qplora: int8 path, GPTQ (group 128) x %lld rows + the PLoRA B delta (rank %lld, 8-bit) on rows "
              "[%lld, %lld), best of %d alternating calls\n",
              static_cast<long long>(m), static_cast<long long>(rank), static_cast<long long>(img0),
              static_cast<long long>(img0 + img), o.reps);
  std::printf("%-7s %3s %-6s %8s %12s %10s %9s %8s\n", "shape", "thr", "weight", "main_ms", "separate_ms", "fused_ms",
              "B_sep_ms", "B_fused");
  for (int t : o.threads) {
    ThreadPool pool(t);
    for (const Q& s : shapes) {
      if (!o.qshapes.empty() && std::find(o.qshapes.begin(), o.qshapes.end(), s.name) == o.qshapes.end()) continue;
      std::vector<float> x(static_cast<size_t>(m * s.k)), y(static_cast<size_t>(m * s.n)),
          d(static_cast<size_t>(img * rank)), bw(static_cast<size_t>(s.n * rank));
      for (auto& v : x) v = next_uniform();
      for (auto& v : d) v = next_uniform();
      for (auto& v : bw) v = 0.01f * next_uniform();
      const QuantMatrix b = quantize_rtn8(bw.data(), DType::F32, s.n, rank, pool);
      const std::vector<QInt8Extra> extra = {{&b, d.data(), rank, img0, img}};
      for (int bits : o.qbits) {
        const QuantMatrix w = make_quant(bits, s.n, s.k, 128);
        auto main_only = [&] { qlinear_int8(x.data(), s.k, w, y.data(), s.n, m, false, pool); };
        auto separate = [&] {
          main_only();
          qlinear_int8(d.data(), rank, b, y.data() + img0 * s.n, s.n, img, true, pool);
        };
        auto fused = [&] { qlinear_int8(x.data(), s.k, w, y.data(), s.n, m, false, pool, QInt8Kernel::Auto, &extra); };
        separate();
        fused();
        double best_main = 1e30, best_sep = 1e30, best_fused = 1e30;
        for (int r = 0; r < o.reps; ++r) {
          const auto t0 = Clock::now();
          main_only();
          const auto t1 = Clock::now();
          separate();
          const auto t2 = Clock::now();
          fused();
          const auto t3 = Clock::now();
          best_main = std::min(best_main, std::chrono::duration<double, std::milli>(t1 - t0).count());
          best_sep = std::min(best_sep, std::chrono::duration<double, std::milli>(t2 - t1).count());
          best_fused = std::min(best_fused, std::chrono::duration<double, std::milli>(t3 - t2).count());
        }
        std::printf("%-7s %3d W%-5d %8.1f %12.1f %10.1f %9.1f %8.1f\n", s.name, t, bits, best_main, best_sep,
                    best_fused, best_sep - best_main, best_fused - best_main);
        std::fflush(stdout);
      }
    }
  }
}

// The middle value of the alternating rounds' ratios (qstep, attn).
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// One decode step's quantized linears (qlinear_int8, m = 1) against plain reads: see the file comment.
void run_qstep(const Options& o) {
  struct Q {
    const char* name;
    int64_t n, k;
  };
  const Q layer[] = {{"wqkv", 6144, 4096}, {"wo", 4096, 4096}, {"w1", 14336, 4096}, {"w3", 14336, 4096},
                     {"w2", 4096, 14336}};
  constexpr int kLayers = 8;
  const int rounds = std::max(o.reps, 5);
  std::printf("\n# qstep: a decode step's int8 kernels (m = 1) vs a plain read of the same buffers (same order, per-linear\n"
              "#  barriers, 2 streams per thread) vs the 1 GiB streaming read; %d decoder layers, group 128, 8-bit head;\n"
              "#  %d alternating rounds; GB/s = the buffers' bytes / time\n",
              kLayers, rounds);
  std::printf("%3s %-4s %3s %9s %9s %9s %10s %9s %12s %11s\n", "thr", "bits", "rnd", "step_ms", "kern_GB/s",
              "read_GB/s", "1GiB_GB/s", "kern/read", "kern/1GiB", "read/1GiB");
  for (int t : o.threads) {
    ThreadPool pool(t);
    // The 1 GiB buffer as measure_read_bandwidth_gbs(pool, bytes) makes it (aligned_floats: with a std::vector's
    // data 16 bytes past a page, every load split across two lines, that read ran at 52-55 GB/s against 72).
    const size_t bw_n = o.bw_bytes / sizeof(float) / 64 * 64;
    const auto bw_buf = aligned_floats(pool, bw_n);
    const float* bw = bw_buf.get();
    if (!bw) {
      std::fprintf(stderr, "qstep: cannot allocate %zu bytes\n", bw_n * sizeof(float));
      return;
    }
    for (int bits : o.qbits) {
      std::vector<QuantMatrix> ws;
      for (int l = 0; l < kLayers; ++l)
        for (const Q& q : layer) ws.push_back(make_quant(bits, q.n, q.k, 128));
      ws.push_back(make_quant(8, 92544, 4096, 128));
      if (!std::all_of(ws.begin(), ws.end(), [](const QuantMatrix& w) { return qlinear_int8_supported(w); })) {
        std::printf("%3d W%-3d (no int8 kernel for these weights on this CPU)\n", t, bits);
        continue;
      }
      std::vector<ReadSpan> spans;
      size_t bytes = 0;
      for (const QuantMatrix& w : ws) {
        spans.push_back({w.q.data(), w.q.size() * sizeof(uint32_t), false});
        spans.push_back({w.scale.data(), w.scale.size() * sizeof(float), false});
        spans.push_back({w.zero_m1.data(), w.zero_m1.size(), true});
      }
      for (const ReadSpan& r : spans) bytes += r.bytes / 64 * 64;
      std::vector<float> x(14336), y(92544);
      for (auto& v : x) v = next_uniform();
      auto step = [&] {
        for (const QuantMatrix& w : ws) qlinear_int8(x.data(), w.k, w, y.data(), w.n, 1, false, pool);
      };
      step();  // warm-ups (the first read of the 1 GiB buffer after the weights are made ran at a third of the rest)
      read_buffers_gbs(pool, spans);
      measure_read_bandwidth_gbs(pool, bw, bw_n, 1);
      std::vector<double> r_kr, r_k1, r_r1;
      for (int r = 0; r < rounds; ++r) {
        const auto t0 = Clock::now();
        step();
        const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
        const double kern = static_cast<double>(bytes) / (ms * 1e6);
        const double read = read_buffers_gbs(pool, spans);
        const double gib = measure_read_bandwidth_gbs(pool, bw, bw_n, 1);
        r_kr.push_back(kern / read);
        r_k1.push_back(kern / gib);
        r_r1.push_back(read / gib);
        std::printf("%3d W%-3d %3d %9.2f %9.1f %9.1f %10.1f %8.0f%% %11.0f%% %10.0f%%\n", t, bits, r, ms, kern, read,
                    gib, 100 * kern / read, 100 * kern / gib, 100 * read / gib);
        std::fflush(stdout);
      }
      std::printf("%3d W%-3d med %9s %9s %9s %10s %8.0f%% %11.0f%% %10.0f%%   (%.2f GB per step)\n", t, bits, "", "",
                  "", "", 100 * median(r_kr), 100 * median(r_k1), 100 * median(r_r1), static_cast<double>(bytes) / 1e9);
    }
  }
}

void run_attn(const Options& o) {
  constexpr int64_t kHeads = 32, kKvHeads = 8, kHeadDim = 128, kLayers = 8, kRow = kKvHeads * kHeadDim;
  const int rounds = std::max(o.reps, 5);
  std::printf("\n# attn: a decode step's attention (1 query, %lld heads on %lld KV heads of %lld, f32 cache), %lld layers, vs a\n"
              "#  plain read of the same K and V rows (per-layer barriers) vs the 1 GiB streaming read; %d alternating\n"
              "#  rounds; GB/s = K and V bytes / time\n",
              static_cast<long long>(kHeads), static_cast<long long>(kKvHeads), static_cast<long long>(kHeadDim),
              static_cast<long long>(kLayers), rounds);
  std::printf("%3s %6s %3s %9s %9s %9s %10s %9s %12s\n", "thr", "n_kv", "rnd", "step_ms", "attn_GB/s", "read_GB/s",
              "1GiB_GB/s", "attn/read", "attn/1GiB");
  // n_q queries at the end of n_kv cached positions (causal), dense rows.
  auto args = [](const float* q, const float* k, const float* v, float* out, int64_t n_q, int64_t n_kv) {
    kernels::AttentionArgs a;
    a.q = q;
    a.q_stride = kHeads * kHeadDim;
    a.k = k;
    a.v = v;
    a.kv_stride = kRow;
    a.out = out;
    a.out_stride = kHeads * kHeadDim;
    a.n_q = n_q;
    a.n_kv = n_kv;
    a.n_heads = kHeads;
    a.n_kv_heads = kKvHeads;
    a.head_dim = kHeadDim;
    a.q_pos0 = n_kv - n_q;
    a.scale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));
    return a;
  };
  for (int t : o.threads) {
    ThreadPool pool(t);
    const size_t bw_n = o.bw_bytes / sizeof(float) / 64 * 64;
    auto bw_buf = aligned_floats(pool, bw_n);
    for (int64_t n_kv : o.kv_lengths) {
      const size_t cache_n = static_cast<size_t>(n_kv * kRow);
      std::vector<std::unique_ptr<float, void (*)(void*)>> ks, vs;
      for (int64_t l = 0; l < kLayers; ++l) {
        ks.push_back(aligned_floats(pool, cache_n));
        vs.push_back(aligned_floats(pool, cache_n));
      }
      auto q = aligned_floats(pool, kHeads * kHeadDim), out = aligned_floats(pool, kHeads * kHeadDim);
      if (!bw_buf || !q || !out ||
          !std::all_of(ks.begin(), ks.end(), [](const auto& b) { return b != nullptr; }) ||
          !std::all_of(vs.begin(), vs.end(), [](const auto& b) { return b != nullptr; })) {
        std::fprintf(stderr, "attn: cannot allocate the caches\n");
        return;
      }
      std::vector<ReadSpan> spans;
      for (int64_t l = 0; l < kLayers; ++l) {
        spans.push_back({ks[static_cast<size_t>(l)].get(), cache_n * sizeof(float), false});
        spans.push_back({vs[static_cast<size_t>(l)].get(), cache_n * sizeof(float), true});
      }
      const double bytes = 2.0 * kLayers * static_cast<double>(cache_n * sizeof(float));
      auto step = [&] {
        for (int64_t l = 0; l < kLayers; ++l)
          attention(args(q.get(), ks[static_cast<size_t>(l)].get(), vs[static_cast<size_t>(l)].get(), out.get(), 1,
                         n_kv),
                    pool);
      };
      step();
      read_buffers_gbs(pool, spans);
      measure_read_bandwidth_gbs(pool, bw_buf.get(), bw_n, 1);
      std::vector<double> r_ar, r_a1;
      for (int r = 0; r < rounds; ++r) {
        const auto t0 = Clock::now();
        step();
        const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
        const double att = bytes / (ms * 1e6);
        const double read = read_buffers_gbs(pool, spans);
        const double gib = measure_read_bandwidth_gbs(pool, bw_buf.get(), bw_n, 1);
        r_ar.push_back(att / read);
        r_a1.push_back(att / gib);
        std::printf("%3d %6lld %3d %9.3f %9.1f %9.1f %10.1f %8.0f%% %11.0f%%\n", t, static_cast<long long>(n_kv), r, ms,
                    att, read, gib, 100 * att / read, 100 * att / gib);
        std::fflush(stdout);
      }
      std::printf("%3d %6lld med %9s %9s %9s %10s %8.0f%% %11.0f%%   (%.1f MB per step)\n", t,
                  static_cast<long long>(n_kv), "", "", "", "", 100 * median(r_ar), 100 * median(r_a1), bytes / 1e6);
    }
    // The prefill's attention: --m queries from position 0 (causal), one layer, best of --reps calls.
    const int64_t n = o.prefill_m;
    auto qp = aligned_floats(pool, static_cast<size_t>(n * kHeads * kHeadDim));
    auto kp = aligned_floats(pool, static_cast<size_t>(n * kRow)), vp = aligned_floats(pool, static_cast<size_t>(n * kRow));
    auto op = aligned_floats(pool, static_cast<size_t>(n * kHeads * kHeadDim));
    if (!qp || !kp || !vp || !op) {
      std::fprintf(stderr, "attn: cannot allocate the prefill buffers\n");
      return;
    }
    const kernels::AttentionArgs a = args(qp.get(), kp.get(), vp.get(), op.get(), n, n);
    // Causal: query i sees i + 1 keys; QK and PV each 2 flops per (query, key, head, column).
    const double flops = 4.0 * static_cast<double>(kHeads * kHeadDim) * static_cast<double>(n) * static_cast<double>(n + 1) / 2;
    const double ms = best_ms(o.reps, [&](int = 0) { attention(a, pool); });
    std::printf("%3d prefill %lld queries (causal): %.1f ms per layer, %.1f GFLOP/s (QK and PV, the keys each query sees)\n",
                t, static_cast<long long>(n), ms, flops / (ms * 1e6));
    std::fflush(stdout);
  }
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!parse(argc, argv, &o)) {
    usage();
    return 2;
  }
  auto has = [&](const char* s) { return std::find(o.suites.begin(), o.suites.end(), s) != o.suites.end(); };
  std::printf("# xc2_gemm_bench  gemm_isa=%s (requested %s)  hardware_threads=%d\n",
              gemm_isa_name(gemm_resolve_isa(o.gemm.isa)), gemm_isa_name(o.gemm.isa), hardware_threads());

  if (has("limits")) {
    std::printf("\n# limits  (read: sum of a %zu MiB buffer; copy: memcpy, read+write bytes; fma: %s)\n",
                o.bw_bytes >> 20, gemm_isa_name(gemm_resolve_isa(o.gemm.isa)));
    std::printf("%3s %10s %10s %12s\n", "thr", "read_GB/s", "copy_GB/s", "fma_GFLOP/s");
    for (int t : o.threads) {
      ThreadPool pool(t);
      const double read = measure_read_bandwidth_gbs(pool, o.bw_bytes, 7);
      const double copy = measure_copy_bandwidth_gbs(pool, o.bw_bytes / 2, 5);
      const double fma = measure_fma_peak_gflops(pool, o.gemm.isa, 7);
      std::printf("%3d %10.2f %10.2f %12.1f\n", t, read, copy, fma);
      std::fflush(stdout);
    }
  }

  const int64_t pm = o.prefill_m;
  if (has("prefill")) {
    const std::vector<Shape> prefill = {
        {"wqkv", pm, 6144, 4096},      {"wo", pm, 4096, 4096},          {"w1/w3", pm, 14336, 4096},
        {"w2", pm, 4096, 14336},       {"plora_a", pm, 256, 4096},      {"plora_b", pm, 4096, 256},
        {"vit_qkv", 1226, 1024, 1024}, {"vit_fc1", 1226, 4096, 1024},   {"vit_fc2", 1226, 1024, 4096},
        {"proj_fc1", 1225, 4096, 1024}, {"proj_fc2", 1225, 4096, 4096},
    };
    run_cases("prefill", prefill, o, false);
  }
  if (has("decode")) {
    const std::vector<Shape> decode = {
        {"wqkv", 1, 6144, 4096}, {"wo", 1, 4096, 4096},      {"w1/w3", 1, 14336, 4096},
        {"w2", 1, 4096, 14336},  {"lm_head", 1, 92544, 4096}, {"w1/w3 m=4", 4, 14336, 4096},
    };
    run_cases("decode", decode, o, true);
  }
  if (has("custom")) run_cases("custom", o.custom, o, o.custom.empty() || gemm_uses_rows_path(o.custom[0].m, o.custom[0].k, o.gemm.isa));
  if (has("sweep")) run_sweep(o);
  if (has("quant")) run_quant(o, true);
  if (has("qdecode")) run_quant(o, false);
  if (has("qprefill")) run_qprefill(o);
  if (has("qplora")) run_qplora(o);
  if (has("qstep")) run_qstep(o);
  if (has("attn")) run_attn(o);
  return 0;
}
