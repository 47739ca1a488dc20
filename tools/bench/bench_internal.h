// What the parts of `xc2 bench` share (tools/bench/bench*.cpp): the synthetic checkpoint, the reference run,
// the workload (one image prompt, greedy decoding) driven through the public API, and the FLOP and byte counts
// the rows are reported against.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bench.h"
#include "io/config.h"
#include "xc2/engine.h"

namespace xc2::bench {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0);
std::string fmt(double v, int prec = 2);

// ---- bench_checkpoint.cpp ----
// The synthetic checkpoint folder for `o` under o.work_dir (config.json, tokenizer.model, model.safetensors),
// written where missing.
std::string ensure_synthetic(const BenchOptions& o);

// The GPTQ copy of `dir` that --quant measures (xc2 quantize: round to nearest, asymmetric, group size
// o.quant_group_size, output head o.quant_head_bits), "<dir>-W<bits>g<group>[h<head bits>]", written where missing.
std::string ensure_quantized(const BenchOptions& o, const std::string& dir, int bits);
// The rows' name for that copy: "W<bits>", "W<bits> head <head bits>".
std::string quant_tag(const BenchOptions& o, int bits);

// ---- bench_reference.cpp ----
struct RefNumbers {
  bool ok = false;
  std::string dtype;
  double vit_ms = 0, prefill_ms = 0, decode_tok_s = 0;
  std::string error;
};
// Runs tools/reference/bench_ref.py on `model_dir` (CPU: float32 and bfloat16; CUDA: bfloat16).
std::vector<RefNumbers> run_reference(const BenchOptions& o, const std::string& model_dir, int threads);

// ---- bench.cpp: the workload ----
// FLOPs of the phases, from the model's dimensions.
struct ModelFigures {
  ModelFigures(const io::ModelConfig& c, int64_t lora_rank);
  double vit_flops() const;                  // one image: ViT + projector
  double prefill_flops(int64_t T) const;     // T positions, one image's rows among them
  io::ModelConfig c;
  int64_t vt = 0, layer_params = 0, lora_params = 0;
};

// The engine under test and the benchmark prompt: one image, then a BOS and o.text_tokens text tokens (as
// near as the model's tokenizer allows), as [image][BOS text] through PromptStyle::ChatImage.
class Workload {
 public:
  // Loads the engine (timed: load_ms()); progress on stderr.
  Workload(const BenchOptions& o, const std::string& dir, const std::string& device, const std::string& dtype,
           bool exact_quant = false);
  Engine& engine() { return *engine_; }
  EngineDiagnostics diag() { return engine_->diagnostics(); }
  const ModelFigures& figures() const { return fig_; }
  double load_ms() const { return load_ms_; }
  std::string model_line() const;  // "<dir> (<variant>, L decoder layers, V ViT layers"

  // A random image (pixels in [-1, 1) from `seed`) as Engine::prepare_image() would give it.
  Engine::PreparedImage image(uint64_t seed) const;
  // The benchmark image through the ViT and projector; *ms: the wall time, the device synchronised.
  ImageHandle encode(double* ms);
  Request request(const ImageHandle& image) const;
  // generate() of `new_tokens` greedy tokens past any end-of-sequence token.
  GenerationResult generate(const ImageHandle& image, int new_tokens, const StreamCallback& on_text = {});
  // Batched decode: B copies of the benchmark prompt (with `image`) through generate_batch(), `steps`
  // decode steps each; tokens per second summed over the batch.
  double batched_decode_tok_s(const ImageHandle& image, int B, int steps);
  void release() { engine_.reset(); }  // frees the model (before the reference runs)
  bool loaded() const { return engine_ != nullptr; }

  static GenerationOptions greedy(int max_new_tokens);

 private:
  std::string dir_;
  double load_ms_ = 0;
  std::unique_ptr<Engine> engine_;
  ModelFigures fig_;
  std::string text_;
};

// ---- bench_cpu.cpp, bench_cuda.cpp ----
BenchReport run_bench_cpu(const BenchOptions& o, const std::string& dir);
BenchReport run_bench_cuda(const BenchOptions& o, const std::string& dir);

}  // namespace xc2::bench
