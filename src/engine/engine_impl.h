// Engine::Impl (private to src/engine): the loaded model, tokenizer and backend, and the request helpers
// shared by Engine, the generation loop (engine/generate.h) and ChatSession.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "model/xcomposer2.h"
#include "text/prompt.h"
#include "text/sampler.h"
#include "text/tokenizer.h"
#include "xc2/engine.h"

namespace xc2 {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0);

class EncodedImage {
 public:
  std::string path;
  Tensor rows;           // [visual_tokens, hidden] on the engine's device
  double load_ms = 0;    // decode + preprocess
  double vision_ms = 0;  // share of the ViT + projector batch
};

struct Engine::Impl {
  EngineOptions options;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<model::XComposer2> model;
  std::shared_ptr<text::Tokenizer> tok;
  ModelInfo info;
  std::set<int32_t> default_stops;

  // A request turned into decoder rows.
  struct Assembled {
    Tensor rows;                        // [T, hidden]
    std::vector<model::RowSpan> spans;  // image rows
    std::vector<int32_t> tokens;        // per row: id or -1
    int64_t n_text_tokens = 0;
    double load_ms = 0, vision_ms = 0;
  };

  const io::ModelConfig& cfg() const { return model->config(); }

  // The request's text as prompt segments, with the marker count checked.
  text::Prompt tokenize_request(const Request& r) const;
  // The rows of `prompt` (`images[k]` fills image segment k), to be appended to a cache already holding
  // `already_in_cache` positions; a prompt past max_length is an error unless `truncate` (then it is cut).
  Assembled assemble(const text::Prompt& prompt, const std::vector<ImageHandle>& images, bool truncate,
                     int64_t already_in_cache);
  // assemble() of a whole request; *penalty_history: the ids its repetition penalty starts with.
  Assembled assemble_request(const Request& request, bool truncate, std::vector<int32_t>* penalty_history);

  std::set<int32_t> stop_set(const GenerationOptions& o) const;
  StopReason stop_reason(int32_t stop_id) const;
  // Positions beyond which generation stops with StopReason::ContextFull.
  int64_t context_limit() const;
  // Drops a stop token left at the end of r.tokens and decodes the text.
  void finish_result(GenerationResult& r) const;
};

// Engine's private Impl, for the code of src/engine.
struct EngineAccess {
  using Impl = Engine::Impl;
  static Impl& impl(Engine& e) { return *e.impl_; }
};
using EngineImpl = EngineAccess::Impl;

// A result with the prompt's sizes and timings filled in and its seed chosen.
GenerationResult start_result(const EngineImpl::Assembled& a, const GenerationOptions& o);

}  // namespace xc2
