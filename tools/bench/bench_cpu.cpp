// xc2 bench on the CPU: the machine's limits measured with the engine's thread count (tools/bench/microbench.h),
// then ViT, prefill, decode and batched decode through the public API, against those limits.
#include <sys/resource.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "bench_internal.h"
#include "core/env.h"
#include "core/mmap_file.h"
#include "core/thread_pool.h"
#include "cpu/gemm.h"
#include "cpu/qgemm.h"
#include "microbench.h"

namespace xc2::bench {
namespace {

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) {
      const size_t c = line.find(':');
      return c == std::string::npos ? line : line.substr(c + 2);
    }
  return "unknown CPU";
}

double peak_rss_gib() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / (1024.0 * 1024.0);  // ru_maxrss is in KiB
}

// Best of o.repeats: ViT, prefill (one image + text) and decode of one sequence.
struct Measured {
  double vit_ms = 1e30, prefill_ms = 1e30, decode_ms = 1e30;
  double last_decode_ms = 0;  // the latest run's
  int64_t T = 0;
  double decode_tok_s(int steps) const { return steps * 1000.0 / decode_ms; }
  // One run: the ViT, then decode_steps + 1 tokens (the first from the prefill's logits); keeps the best times.
  ImageHandle run_once(Workload& w, const BenchOptions& o) {
    double ms = 0;
    ImageHandle img = w.encode(&ms);
    vit_ms = std::min(vit_ms, ms);
    const GenerationResult r = w.generate(img, o.decode_steps + 1);
    prefill_ms = std::min(prefill_ms, r.timings.prefill_ms);
    decode_ms = std::min(decode_ms, r.timings.decode_ms);
    last_decode_ms = r.timings.decode_ms;
    T = r.prompt_positions;
    return img;
  }
};

Measured measure(Workload& w, const BenchOptions& o, const std::string& what, ImageHandle* img_out) {
  Measured m;
  ImageHandle img;
  for (int rep_i = 0; rep_i < o.repeats; ++rep_i) {
    std::cerr << "xc2 bench: " << what << "run " << rep_i + 1 << "/" << o.repeats << " ...\n";
    img = m.run_once(w, o);
  }
  if (img_out) *img_out = img;
  return m;
}

// Bytes of the weight files in a model folder (what a loaded quantized model keeps resident, roughly).
double folder_weight_bytes(const std::string& dir) {
  double sum = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string ext = e.path().extension().string();
    if (ext == ".safetensors" || ext == ".bin") sum += static_cast<double>(e.file_size(ec));
  }
  return sum;
}

std::string pct(double v) { return fmt(100.0 * v, 0) + "%"; }

}  // namespace

BenchReport run_bench_cpu(const BenchOptions& o, const std::string& dir) {
  const int threads = o.threads > 0 ? o.threads : hardware_threads();
  BenchReport rep;
  rep.machine = cpu_model() + ", " + std::to_string(threads) + " threads, GEMM " + kernels::cpu::gemm_isa();

  // Machine limits first, with the same number of threads, while memory is still free (the pool measures the read
  // bandwidth again before the quantized pairs below).
  ThreadPool mb_pool(threads);
  std::cerr << "xc2 bench: measuring memory bandwidth and FMA peak ...\n";
  const double read_bw = measure_read_bandwidth_gbs(mb_pool);
  const double copy_bw = measure_copy_bandwidth_gbs(mb_pool);
  const double fma_peak = measure_fma_peak_gflops(mb_pool);

  Workload w(o, dir, "cpu", "auto");
  EngineDiagnostics diag = w.diag();
  rep.model = w.model_line() + ") on " + diag.backend_name();
  const ModelFigures& f = w.figures();
  const int64_t S = f.c.img_size, vt = f.vt;

  ImageHandle img;
  const Measured base = measure(w, o, "", &img);
  const double vit_ms = base.vit_ms, prefill_ms = base.prefill_ms, decode_ms = base.decode_ms;
  const int64_t T = base.T;
  std::vector<std::pair<int, double>> batched;
  for (int B : o.decode_batches) {
    std::cerr << "xc2 bench: batched decode, batch " << B << " ...\n";
    batched.push_back({B, w.batched_decode_tok_s(img, B, o.decode_steps)});
  }
  img.reset();

  const double decode_tok_s = o.decode_steps * 1000.0 / decode_ms;
  const double ctx = static_cast<double>(T) + o.decode_steps / 2.0;
  const double weight_bytes = static_cast<double>(diag.weight_bytes_per_token());
  const double kv_bytes = ctx * static_cast<double>(diag.kv_bytes_per_position());
  const double bytes_per_token = weight_bytes + kv_bytes;
  const double roofline_tok_s = read_bw * 1e9 / bytes_per_token;
  const double prefill_gflops = f.prefill_flops(T) / (prefill_ms * 1e6);
  const double vit_gflops = f.vit_flops() / (vit_ms * 1e6);

  auto add = [&](const std::string& n, double v, const std::string& u, const std::string& note) {
    rep.rows.push_back({n, v, u, note});
  };
  add("read bandwidth", read_bw, "GB/s", "streaming read, " + std::to_string(threads) + " threads");
  add("copy bandwidth", copy_bw, "GB/s", "read + write");
  add("f32 FMA peak", fma_peak, "GFLOP/s", std::string("the GEMM's instructions (") + kernels::cpu::gemm_isa() + ")");
  add("ViT", 1000.0 / vit_ms, "img/s",
      fmt(vit_ms, 1) + " ms per " + std::to_string(S) + " px image, " + fmt(vit_gflops, 1) + " GFLOP/s = " +
          fmt(100.0 * vit_gflops / fma_peak, 0) + "% of FMA peak");
  add("prefill", T * 1000.0 / prefill_ms, "pos/s",
      std::to_string(T) + " positions (1 image + " + std::to_string(T - vt) + " text) in " + fmt(prefill_ms, 1) +
          " ms, " + fmt(prefill_gflops, 1) + " GFLOP/s = " + fmt(100.0 * prefill_gflops / fma_peak, 0) +
          "% of FMA peak");
  add("decode", decode_tok_s, "tok/s",
      fmt(bytes_per_token / 1e9, 3) + " GB read per token; roofline " + fmt(roofline_tok_s, 2) + " tok/s; " +
          fmt(100.0 * decode_tok_s / roofline_tok_s, 0) + "% of the read-bandwidth roofline");
  for (const auto& [B, tok_s] : batched) {
    const double roof = B * read_bw * 1e9 / (weight_bytes + B * kv_bytes);
    add("decode batch " + std::to_string(B), tok_s, "tok/s",
        "summed over " + std::to_string(B) + " sequences; " + fmt(tok_s / decode_tok_s) + "x batch 1; " +
            fmt(100.0 * tok_s / roof, 0) + "% of the batch-" + std::to_string(B) + " read-bandwidth roofline");
  }
  add("peak RSS", peak_rss_gib(), "GiB", "process maximum resident set");

  // The same workload on GPTQ copies (xc2 quantize), fast and exact, against the rows above. Where memory allows
  // both models at once, each quantized run alternates with a run of the 16-bit model and the ratios come from
  // those pairs (best of o.repeats each), so that a slow phase of the machine falls on both sides of a ratio;
  // the read bandwidth is measured again before each pair and the rooflines use the best seen. The bandwidth on a
  // shared machine changes from minute to minute (35-82 GB/s within an hour on the dev VM), so each quantized run
  // is also judged against the read bandwidth measured right before and right after it (the higher of the two).
  if (!o.quant_bits.empty()) {
    const double bf_bytes = bytes_per_token;
    double best_bw = read_bw;
    ReadProbe probe(mb_pool);
    for (int bits : o.quant_bits) {
      const std::string qdir = ensure_quantized(o, dir, bits);
      const std::string tag = quant_tag(o, bits);
      const double need = 1.3 * folder_weight_bytes(qdir) + 2e9;  // room to load it next to the 16-bit model
      for (bool exact : {false, true}) {
        const bool paired = w.loaded() && static_cast<double>(mem_available_bytes()) > need;
        if (!paired) w.release();
        Workload qw(o, qdir, "cpu", "auto", exact);
        const std::string path = exact ? "exact" : qw.diag().backend_name().find("int8") != std::string::npos
                                                       ? std::string("int8 activations (") +
                                                             kernels::cpu::qint8_kernel_name(
                                                                 kernels::cpu::qlinear_int8_kernel()) + ")"
                                                       : "exact (no int8 kernel)";
        Measured q, b16;
        double pair_bw = 0;
        ImageHandle q_img;
        std::vector<std::pair<double, double>> q_runs;  // per quantized run: decode tok/s, bandwidth around it
        for (int rep_i = 0; rep_i < o.repeats; ++rep_i) {
          if (paired) {
            pair_bw = std::max(pair_bw, probe.gbs());
            std::cerr << "xc2 bench: 16-bit (paired with " << tag << " " << path << "): run " << rep_i + 1 << "/"
                      << o.repeats << " ...\n";
            b16.run_once(w, o);
          }
          std::cerr << "xc2 bench: " << tag << " " << path << ": run " << rep_i + 1 << "/" << o.repeats << " ...\n";
          const double bw_before = probe.gbs();
          q_img = q.run_once(qw, o);
          const double bw_around = std::max(bw_before, probe.gbs());
          q_runs.push_back({o.decode_steps * 1000.0 / q.last_decode_ms, bw_around});
          best_bw = std::max(best_bw, bw_around);
        }
        // Batched decode (serve, caption --batch-size, beams) on the fast path, against the 16-bit rows above.
        std::vector<std::pair<int, double>> q_batched;
        if (!exact)
          for (int B : o.decode_batches) {
            std::cerr << "xc2 bench: " << tag << " " << path << ": batched decode, batch " << B << " ...\n";
            q_batched.push_back({B, qw.batched_decode_tok_s(q_img, B, o.decode_steps)});
          }
        q_img.reset();
        best_bw = std::max(best_bw, pair_bw);
        const double ref_prefill_ms = paired ? b16.prefill_ms : prefill_ms;
        const double ref_decode_tok_s = paired ? b16.decode_tok_s(o.decode_steps) : decode_tok_s;
        const std::string vs = paired ? "the paired 16-bit runs' " : "the 16-bit ";
        const double q_weight = static_cast<double>(qw.diag().weight_bytes_per_token());
        const double q_bytes = q_weight + kv_bytes;
        const double q_roof = best_bw * 1e9 / q_bytes;
        const double q_tok_s = q.decode_tok_s(o.decode_steps);
        const double ideal = bf_bytes / q_bytes, speedup = q_tok_s / ref_decode_tok_s;
        std::string around;  // each run against the roofline at the bandwidth measured around it
        for (const auto& [tok_s, bw] : q_runs)
          around += (around.empty() ? "" : ", ") + pct(tok_s * q_bytes / (bw * 1e9)) + " at " + fmt(bw, 1);
        add(tag + " prefill (" + path + ")", q.T * 1000.0 / q.prefill_ms, "pos/s",
            fmt(q.prefill_ms, 1) + " ms; " + fmt(ref_prefill_ms / q.prefill_ms) + "x " + vs + "prefill (" +
                fmt(ref_prefill_ms, 1) + " ms)");
        add(tag + " decode (" + path + ")", q_tok_s, "tok/s",
            fmt(q_bytes / 1e9, 3) + " GB read per token; " + fmt(speedup) + "x " + vs + "decode (" +
                fmt(ref_decode_tok_s, 2) + " tok/s), ideal " + fmt(ideal) + "x (bytes ratio): " +
                pct(speedup / ideal) + " of it; " + pct(q_tok_s / q_roof) + " of its own read-bandwidth roofline (" +
                fmt(q_roof, 2) + " tok/s at " + fmt(best_bw, 1) +
                " GB/s, the best read bandwidth measured so far); each run against the roofline at the read "
                "bandwidth measured just before and after it (the higher): " +
                around + " GB/s");
        for (const auto& [B, tok_s] : q_batched) {
          const double roof = B * best_bw * 1e9 / (q_weight + B * kv_bytes);
          double b16_tok_s = 0;
          for (const auto& [B16, t16] : batched)
            if (B16 == B) b16_tok_s = t16;
          add(tag + " decode batch " + std::to_string(B) + " (" + path + ")", tok_s, "tok/s",
              "summed over " + std::to_string(B) + " sequences; " + fmt(tok_s / q_tok_s) + "x its batch 1; " +
                  (b16_tok_s > 0 ? fmt(tok_s / b16_tok_s) + "x the 16-bit batch " + std::to_string(B) +
                                       " row (not paired); "
                                 : std::string()) +
                  pct(tok_s / roof) + " of its batch-" + std::to_string(B) + " read-bandwidth roofline");
        }
        if (paired)
          add(tag + " paired 16-bit (" + path + ")", ref_decode_tok_s, "tok/s",
              "decode; prefill " + fmt(b16.prefill_ms, 1) + " ms; read bandwidth before these pairs " +
                  fmt(pair_bw, 1) + " GB/s");
        add(tag + " peak RSS (" + path + ")", peak_rss_gib(), "GiB",
            paired ? "process maximum so far (the 16-bit model loaded too)" : "process maximum so far");
      }
    }
  }

  if (o.reference) {
    w.release();
    for (const RefNumbers& rf : run_reference(o, dir, threads)) {
      if (!rf.ok) {
        add("reference", 0, "", "not run: " + rf.error);
        continue;
      }
      const double ref_prefill = T * 1000.0 / rf.prefill_ms;
      add("reference ViT (" + rf.dtype + ")", 1000.0 / rf.vit_ms, "img/s",
          "xc2 is " + fmt((1000.0 / vit_ms) / (1000.0 / rf.vit_ms)) + "x");
      add("reference prefill (" + rf.dtype + ")", ref_prefill, "pos/s",
          "xc2 is " + fmt((T * 1000.0 / prefill_ms) / ref_prefill) + "x");
      add("reference decode (" + rf.dtype + ")", rf.decode_tok_s, "tok/s",
          "xc2 is " + fmt(decode_tok_s / rf.decode_tok_s) + "x");
    }
  }
  return rep;
}

}  // namespace xc2::bench
