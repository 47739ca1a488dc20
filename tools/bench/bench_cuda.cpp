// xc2 bench --device cuda: the same phases on GPU 0 through the public API (decode through generate(), which
// runs the device decode path with a recorded graph), plus captioning and the memory a 4096-token context
// needs, against the measured device copy bandwidth (xc2/diagnostics.h); with --quant, prefill, decode and
// memory again on GPTQ copies of the checkpoint (the CUDA backend's W4A16 / W8A16 linears).
#include <algorithm>
#include <iostream>
#include <string>
#include <utility>

#include "bench_internal.h"
#include "core/check.h"

namespace xc2::bench {
namespace {

// Best of o.repeats runs: the ViT, then two generations from the same image: 3 tokens (the prefill's, an eager
// step and the step that records the graph) and decode_steps + 1; their difference is decode_steps - 2 replayed
// steps.
struct CudaTimes {
  double vit_ms = 1e30, prefill_ms = 1e30, tok_ms = 1e30;
  int64_t T = 0;
};

CudaTimes measure_times(Workload& w, const BenchOptions& o, const std::string& what) {
  CudaTimes t;
  for (int rep_i = 0; rep_i < o.repeats; ++rep_i) {
    std::cerr << "xc2 bench: " << what << "run " << rep_i + 1 << "/" << o.repeats << " ...\n";
    double ms = 0;
    const ImageHandle img = w.encode(&ms);
    t.vit_ms = std::min(t.vit_ms, ms);
    const GenerationResult warm = w.generate(img, 3);
    const GenerationResult r = w.generate(img, o.decode_steps + 1);
    t.prefill_ms = std::min(t.prefill_ms, r.timings.prefill_ms);
    const double steady_ms = r.timings.decode_ms - warm.timings.decode_ms;
    t.tok_ms = std::min(t.tok_ms, steady_ms > 0 ? steady_ms / (o.decode_steps - 2) : r.timings.decode_ms / o.decode_steps);
    t.T = r.prompt_positions;
  }
  return t;
}

// Memory at a full context, as `xc2 chat` runs it: the cache reserved for kMemoryContext positions, one image
// prompt prefilled, a few steps decoded (the step recorded as a graph). m.peak stays 0 when the prompt (T
// positions) does not leave room for that.
constexpr int64_t kMemoryContext = 4096;
struct ContextMemory {
  DeviceMemory m;
  uint64_t kv_bytes = 0;
};

ContextMemory measure_context_memory(Workload& w, EngineDiagnostics& diag, int64_t T, const std::string& what) {
  ContextMemory c;
  if (T + 8 >= kMemoryContext) return c;
  std::cerr << "xc2 bench: " << what << "memory at a " << kMemoryContext << "-token context ...\n";
  diag.synchronize();
  diag.reset_memory_peak();
  int pieces = 0;
  w.generate(w.encode(nullptr), static_cast<int>(kMemoryContext - T - 1),
             [&](const std::string&) { return ++pieces < 5; });  // cancelled after a few steps
  diag.synchronize();
  c.m = diag.memory();
  c.kv_bytes = static_cast<uint64_t>(kMemoryContext) * diag.kv_bytes_per_position();
  return c;
}

// The "GPU memory" row's value (GiB) and note: xc2's peak at the context (the cuBLASLt workspace included), plus
// what the driver holds outside xc2's allocator (the CUDA context, cuBLASLt's handle), measured after the load.
std::pair<double, std::string> gpu_memory_row(const DeviceMemory& at_load, const ContextMemory& c) {
  const double gib = 1024.0 * 1024.0 * 1024.0;
  const uint64_t ctx_overhead = at_load.device_used > at_load.needed + at_load.cached
                                    ? at_load.device_used - at_load.needed - at_load.cached
                                    : 0;
  const double total = static_cast<double>(c.m.peak + ctx_overhead) / gib;
  auto g = [&](uint64_t bytes) { return fmt(static_cast<double>(bytes) / gib); };
  return {total, "needed at a " + std::to_string(kMemoryContext) + "-token context: peak " + g(c.m.peak) +
                     " GiB held by xc2 (weights and fixed buffers " + g(at_load.needed) + ", KV cache " +
                     g(c.kv_bytes) + ", the rest work buffers) + " + g(ctx_overhead) + " CUDA context; " +
                     (total <= 24.0 ? "fits" : "does NOT fit") + " in 24 GiB; driver: " + g(c.m.device_used) +
                     " of " + g(c.m.device_total) + " GiB used (allocator cache included)"};
}

}  // namespace

BenchReport run_bench_cuda(const BenchOptions& o, const std::string& dir) {
  const char* dtype = dtype_name(o.dtype == "f32" ? DType::F32 : o.dtype == "f16" ? DType::F16 : DType::BF16);
  BenchReport rep;
  Workload w(o, dir, "cuda", o.dtype);
  EngineDiagnostics diag = w.diag();
  // What the CUDA context, cuBLASLt and the backend's own buffers take outside xc2's allocator, and what xc2
  // holds once the model is loaded.
  const DeviceMemory m_load = diag.memory();
  rep.machine = diag.backend_name();
  std::cerr << "xc2 bench: measuring the device copy bandwidth ...\n";
  const double copy_bw = diag.measure_copy_bandwidth_gbs();
  const double peak_bw = diag.peak_bandwidth_gbs();
  rep.model = w.model_line() + ", " + dtype + ")";
  const ModelFigures& f = w.figures();
  const int64_t S = f.c.img_size, vt = f.vt;
  const bool graphs = diag.decode_uses_graphs();

  const CudaTimes base = measure_times(w, o, "");
  const double vit_ms = base.vit_ms, prefill_ms = base.prefill_ms, tok_ms = base.tok_ms;
  const int64_t T = base.T;
  const ContextMemory ctx_mem = measure_context_memory(w, diag, T, "");

  // Batched decode of copies of the benchmark prompt.
  std::vector<std::pair<int, double>> batched;
  if (!o.decode_batches.empty()) {
    const ImageHandle img = w.encode(nullptr);
    for (int B : o.decode_batches) {
      std::cerr << "xc2 bench: batched decode, batch " << B << " ...\n";
      batched.push_back({B, w.batched_decode_tok_s(img, B, o.decode_steps)});
    }
  }

  // Captioning as `xc2 caption --batch-size N` runs it: the batch through the ViT at once, each prompt
  // prefilled, then all decoded together.
  double caption_s = 0;
  if (o.caption_batch > 0 && o.caption_tokens > 2) {
    std::cerr << "xc2 bench: captioning " << o.caption_batch << " images (" << o.caption_tokens << " tokens each) ...\n";
    std::vector<Engine::PreparedImage> images;
    for (int i = 0; i < o.caption_batch; ++i) images.push_back(w.image(100 + static_cast<uint64_t>(i)));
    diag.synchronize();
    const auto t0 = Clock::now();
    std::vector<Request> requests;
    for (const ImageHandle& h : w.engine().encode_prepared(images)) requests.push_back(w.request(h));
    for (const Engine::BatchResult& b : w.engine().generate_batch(requests, Workload::greedy(o.caption_tokens)))
      XC2_CHECK(b.error.empty(), Internal, "bench: captioning failed: ", b.error);
    diag.synchronize();
    caption_s = ms_since(t0) / 1000.0;
  }

  const double decode_tok_s = 1000.0 / tok_ms;
  const double ctx = static_cast<double>(T) + o.decode_steps / 2.0;
  const double weight_bytes = static_cast<double>(diag.weight_bytes_per_token());
  const double kv_bytes = ctx * static_cast<double>(diag.kv_bytes_per_position());
  const double bytes_per_token = weight_bytes + kv_bytes;
  const double roofline_tok_s = copy_bw * 1e9 / bytes_per_token;

  auto add = [&](const std::string& n, double v, const std::string& u, const std::string& note) {
    rep.rows.push_back({n, v, u, note});
  };
  add("copy bandwidth", copy_bw, "GB/s",
      "device-to-device, read + write" + (peak_bw > 0 ? "; theoretical peak " + fmt(peak_bw, 0) + " GB/s" : ""));
  add("load", w.load_ms() / 1000.0, "s", "checkpoint to GPU, converted to " + std::string(dtype));
  add("ViT", vit_ms, "ms/img",
      std::to_string(S) + " px image + projector, " + fmt(f.vit_flops() / (vit_ms * 1e9), 1) + " TFLOP/s");
  add("prefill", prefill_ms, "ms",
      std::to_string(T) + " positions (1 image + " + std::to_string(T - vt) + " text), " +
          fmt(f.prefill_flops(T) / (prefill_ms * 1e9), 1) + " TFLOP/s");
  add("decode", decode_tok_s, "tok/s",
      "batch 1, " + std::string(graphs ? "CUDA graph" : "no graph") + "; " + fmt(bytes_per_token / 1e9, 3) +
          " GB per token; copy-bandwidth roofline " + fmt(roofline_tok_s, 1) + " tok/s = " +
          fmt(100.0 * decode_tok_s / roofline_tok_s, 0) + "%" +
          (peak_bw > 0 ? ", " + fmt(100.0 * decode_tok_s * bytes_per_token / (peak_bw * 1e9), 0) + "% of peak" : ""));
  for (const auto& [B, tok_s] : batched) {
    const double roof = B * copy_bw * 1e9 / (weight_bytes + B * kv_bytes);
    add("decode batch " + std::to_string(B), tok_s, "tok/s",
        "summed over " + std::to_string(B) + " sequences, no graph; " + fmt(tok_s / decode_tok_s) +
            "x batch 1; " + fmt(100.0 * tok_s / roof, 0) + "% of the batch-" + std::to_string(B) +
            " copy-bandwidth roofline");
  }
  if (ctx_mem.m.peak > 0) {
    const auto [gib, note] = gpu_memory_row(m_load, ctx_mem);
    add("GPU memory", gib, "GiB", note);
  }
  if (caption_s > 0)
    add("caption", o.caption_batch / caption_s, "img/s",
        "batch " + std::to_string(o.caption_batch) + ": ViT together, prefill one by one, " +
            std::to_string(o.caption_tokens) + " greedy tokens each decoded together");

  // The same prefill, decode and memory on GPTQ copies (xc2 quantize), against the rows above.
  if (!o.quant_bits.empty()) {
    w.release();
    for (int bits : o.quant_bits) {
      const std::string qdir = ensure_quantized(o, dir, bits);
      const std::string tag = quant_tag(o, bits);
      Workload qw(o, qdir, "cuda", o.dtype);
      EngineDiagnostics qdiag = qw.diag();
      const DeviceMemory q_load = qdiag.memory();
      const CudaTimes q = measure_times(qw, o, tag + ": ");
      const ContextMemory q_mem = measure_context_memory(qw, qdiag, q.T, tag + ": ");
      const double q_tok_s = 1000.0 / q.tok_ms;
      const double q_kv = (static_cast<double>(q.T) + o.decode_steps / 2.0) * static_cast<double>(qdiag.kv_bytes_per_position());
      const double q_bytes = static_cast<double>(qdiag.weight_bytes_per_token()) + q_kv;
      const double q_roof = copy_bw * 1e9 / q_bytes;
      add(tag + " prefill", q.prefill_ms, "ms",
          std::to_string(q.T) + " positions; " + fmt(prefill_ms / q.prefill_ms) + "x the " + dtype + " prefill");
      add(tag + " decode", q_tok_s, "tok/s",
          "batch 1, " + std::string(qdiag.decode_uses_graphs() ? "CUDA graph" : "no graph") + "; " +
              fmt(q_bytes / 1e9, 3) + " GB per token; copy-bandwidth roofline " + fmt(q_roof, 1) + " tok/s = " +
              fmt(100.0 * q_tok_s / q_roof, 0) + "%; " + fmt(q_tok_s / decode_tok_s) + "x the " + dtype +
              " decode, ideal " + fmt(bytes_per_token / q_bytes) + "x (bytes ratio)");
      if (q_mem.m.peak > 0) {
        const auto [gib, note] = gpu_memory_row(q_load, q_mem);
        add(tag + " GPU memory", gib, "GiB", note);
      }
    }
  }

  if (o.reference) {
    w.release();
    for (const RefNumbers& rf : run_reference(o, dir, 0)) {
      if (!rf.ok) {
        add("reference", 0, "", "not run: " + rf.error);
        continue;
      }
      add("reference ViT (" + rf.dtype + ", cuda)", rf.vit_ms, "ms/img", "xc2 is " + fmt(rf.vit_ms / vit_ms) + "x");
      add("reference prefill (" + rf.dtype + ", cuda)", rf.prefill_ms, "ms",
          "xc2 is " + fmt(rf.prefill_ms / prefill_ms) + "x (target >= 1.5x)");
      add("reference decode (" + rf.dtype + ", cuda)", rf.decode_tok_s, "tok/s",
          "xc2 is " + fmt(decode_tok_s / rf.decode_tok_s) + "x (target >= 3x)");
    }
  }
  return rep;
}

}  // namespace xc2::bench
