// xc2 bench (tools/bench/bench.h): the checks and dispatch, and the workload both devices run through the
// public API (bench_internal.h).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "bench_internal.h"
#include "core/check.h"
#include "core/mmap_file.h"

namespace xc2 {
namespace bench {

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

std::string fmt(double v, int prec) {
  char b[64];
  std::snprintf(b, sizeof(b), "%.*f", prec, v);
  return b;
}

// ---- FLOPs --------------------------------------------------------------------------------------------

ModelFigures::ModelFigures(const io::ModelConfig& config, int64_t lora_rank) : c(config), vt(config.visual_tokens()) {
  const int64_t D = c.hidden_size, I = c.intermediate_size, H = c.num_attention_heads, Hk = c.num_key_value_heads;
  const int64_t d = c.head_dim();
  layer_params = (H + 2 * Hk) * d * D + D * H * d + 3 * D * I;
  lora_params = lora_rank * ((D + (H + 2 * Hk) * d) + (H * d + D) + 2 * (D + I) + (I + D));
}

double ModelFigures::vit_flops() const {
  const int64_t D = c.hidden_size, Dv = c.vision.hidden_size, Iv = c.vision.intermediate_size, nv = vt + 1;
  const int64_t p = c.vision.patch_size;
  return 2.0 * nv * (4.0 * Dv * Dv + 2.0 * Dv * Iv) * c.vision.num_hidden_layers +
         4.0 * nv * nv * Dv * c.vision.num_hidden_layers + 2.0 * vt * 3 * p * p * Dv + 2.0 * vt * (Dv * D + D * D);
}

double ModelFigures::prefill_flops(int64_t T) const {
  const int64_t L = c.num_hidden_layers, D = c.hidden_size, V = c.vocab_size;
  return 2.0 * T * L * layer_params + 2.0 * vt * L * lora_params +
         2.0 * static_cast<double>(T) * T * c.head_dim() * c.num_attention_heads * L + 2.0 * D * V;
}

// ---- the workload -------------------------------------------------------------------------------------

namespace {

std::unique_ptr<Engine> load_engine(const BenchOptions& o, const std::string& dir, const std::string& device,
                                    const std::string& dtype, bool exact_quant, double* ms) {
  std::cerr << "xc2 bench: loading " << dir << (device == "cuda" ? " onto the GPU" : "") << " ...\n";
  EngineOptions eo;
  eo.model_dir = dir;
  eo.device = parse_device(device);
  eo.threads = o.threads;
  eo.dtype = parse_dtype(dtype);
  eo.exact_quant = exact_quant;
  const auto t0 = Clock::now();
  std::unique_ptr<Engine> e = Engine::load(eo);
  e->diagnostics().synchronize();
  *ms = ms_since(t0);
  return e;
}

// About n text tokens, spread over the vocabulary (ids valid for any vocabulary size): the text of those ids,
// lengthened or shortened until it tokenizes to n tokens (exactly, for the synthetic tokenizer).
std::string bench_text(Engine& e, int n) {
  const int64_t vocab = e.info().vocab_size;
  std::vector<int32_t> ids(static_cast<size_t>(4 * n));
  for (size_t i = 0; i < ids.size(); ++i)
    ids[i] = static_cast<int32_t>((1000 + (static_cast<int64_t>(i) * 7919) % 50000) % vocab);
  std::string best;
  int64_t best_miss = -1;
  int64_t k = n;
  for (int attempt = 0; attempt < 8; ++attempt) {
    const std::string text = e.detokenize({ids.begin(), ids.begin() + k});
    const int64_t got = static_cast<int64_t>(e.tokenize(text, false).size());
    if (best_miss < 0 || std::abs(got - n) < best_miss) {
      best = text;
      best_miss = std::abs(got - n);
    }
    if (got == n) break;
    k = std::clamp<int64_t>(k + n - got, 1, static_cast<int64_t>(ids.size()));
  }
  return best;
}

}  // namespace

Workload::Workload(const BenchOptions& o, const std::string& dir, const std::string& device, const std::string& dtype,
                   bool exact_quant)
    : dir_(dir),
      engine_(load_engine(o, dir, device, dtype, exact_quant, &load_ms_)),
      fig_(io::ModelConfig::load(path_join(dir, "config.json")), engine_->info().lora_rank),
      text_(bench_text(*engine_, o.text_tokens)) {}

std::string Workload::model_line() const {
  const ModelInfo& i = engine_->info();
  return dir_ + " (" + i.variant + ", " + std::to_string(i.n_layers) + " decoder layers, " +
         std::to_string(i.vision_layers) + " ViT layers";
}

Engine::PreparedImage Workload::image(uint64_t seed) const {
  const int64_t S = fig_.c.img_size;
  Engine::PreparedImage img;
  img.path = "bench-" + std::to_string(seed);
  img.pixels.resize(static_cast<size_t>(3 * S * S));
  uint64_t st = seed;
  for (float& v : img.pixels) {
    st = st * 6364136223846793005ull + 1442695040888963407ull;
    v = static_cast<float>((st >> 40) % 2000) / 1000.0f - 1.0f;
  }
  return img;
}

ImageHandle Workload::encode(double* ms) {
  const std::vector<Engine::PreparedImage> images = {image(42)};
  EngineDiagnostics d = diag();
  d.synchronize();
  const auto t0 = Clock::now();
  ImageHandle h = engine_->encode_prepared(images).at(0);
  d.synchronize();
  if (ms) *ms = ms_since(t0);
  return h;
}

Request Workload::request(const ImageHandle& image) const {
  Request r;
  r.text = place_image_markers(text_, 1);
  r.images = {image};
  r.style = PromptStyle::ChatImage;
  return r;
}

GenerationOptions Workload::greedy(int max_new_tokens) {
  GenerationOptions g;
  g.max_new_tokens = max_new_tokens;
  g.do_sample = false;
  g.repetition_penalty = 1.0f;
  g.ignore_eos = true;
  g.seed = 0;
  return g;
}

GenerationResult Workload::generate(const ImageHandle& image, int new_tokens, const StreamCallback& on_text) {
  GenerationResult r = engine_->generate(request(image), greedy(new_tokens), on_text);
  XC2_CHECK(r.stop_reason == StopReason::MaxNewTokens || r.stop_reason == StopReason::Cancelled, Internal,
            "bench: generation stopped early (", stop_reason_name(r.stop_reason), ")");
  return r;
}

// generate_batch() prefills the B prompts one by one (not timed here), then decodes them in lockstep: steps + 1
// tokens each, i.e. `steps` batched decode steps, all in each sequence's decode_ms.
double Workload::batched_decode_tok_s(const ImageHandle& image, int B, int steps) {
  const std::vector<Request> requests(static_cast<size_t>(B), request(image));
  const std::vector<Engine::BatchResult> out = engine_->generate_batch(requests, greedy(steps + 1));
  double decode_ms = 0;
  for (const Engine::BatchResult& b : out) {
    XC2_CHECK(b.error.empty(), Internal, "bench: batched decode failed: ", b.error);
    XC2_CHECK(static_cast<int>(b.result.tokens.size()) == steps + 1, Internal, "bench: batched decode gave ",
              b.result.tokens.size(), " tokens, expected ", steps + 1);
    decode_ms = std::max(decode_ms, b.result.timings.decode_ms);
  }
  return static_cast<double>(B) * steps * 1000.0 / decode_ms;
}

}  // namespace bench

BenchReport run_bench(const BenchOptions& o) {
  XC2_CHECK(o.decoder_layers >= 1 && o.vision_layers >= 1, InvalidArgument, "bench needs at least one layer");
  XC2_CHECK(o.decode_steps >= 1 && o.repeats >= 1 && o.text_tokens >= 1, InvalidArgument,
            "bench: decode steps, repeats and text tokens must be >= 1");
  XC2_CHECK(o.device == "cpu" || o.device == "cuda", InvalidArgument, "bench: unknown device '", o.device, "'");
  if (o.device == "cuda") {  // before writing gigabytes of synthetic checkpoint
    XC2_CHECK(built_with_cuda(), Unsupported, "this xc2 was built without CUDA (rebuild with -DXC2_WITH_CUDA=ON)");
    XC2_CHECK(cuda_device_available(), Cuda, "bench --device cuda: no usable CUDA device (compute capability 8.0+)");
    XC2_CHECK(o.decode_steps >= 4, InvalidArgument, "bench --device cuda needs --decode-steps >= 4");
  }
  const std::string dir = o.model_dir.empty() ? bench::ensure_synthetic(o) : o.model_dir;
  return o.device == "cuda" ? bench::run_bench_cuda(o, dir) : bench::run_bench_cpu(o, dir);
}

}  // namespace xc2
