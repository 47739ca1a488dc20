// The generation loop, one for every caller: Engine::generate (one sequence, streamed, on a GPU through the
// device-resident decoder), Engine::generate_batch (sequences decoded in lockstep) and ChatSession turns; and
// its per-sequence half (SequenceRun: choose a token, apply the stop rules, stream), which the continuous-batching
// scheduler (engine/scheduler.cpp) shares, so that both give the same tokens.
#pragma once

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "engine/engine_impl.h"

namespace xc2::engine {

// One sequence to generate: its prompt rows continue `cache`.
struct GenSequence {
  model::KvCache* cache = nullptr;
  EngineImpl::Assembled prompt;
  std::vector<int32_t> penalty_history;  // ids the repetition penalty covers before the first generated token
  GenerationResult* result = nullptr;    // start_result() applied; the answer goes here
  // Non-null: a failure while prefilling this sequence is reported here and the others go on; null: it throws.
  std::string* error = nullptr;
  StreamCallback on_text;  // streamed pieces (complete UTF-8); returning false cancels this sequence
};

// Holds back streamed text that could be the start of a stop string, and finds the first stop string.
class StopText {
 public:
  explicit StopText(std::vector<std::string> stops);
  // Appends `piece`; returns the text that may be streamed now (never any part of a stop string).
  std::string push(const std::string& piece);
  // The text held back (at the end, when no stop string came).
  std::string flush();
  bool hit() const { return hit_; }
  const std::string& text() const { return text_; }  // everything so far, cut before the stop string once hit

 private:
  std::vector<std::string> stops_;
  std::string text_;
  size_t emitted_ = 0;
  bool hit_ = false;
};

// One sequence while it generates (host logits path): its sampler, stream decoder and stop rules.
class SequenceRun {
 public:
  SequenceRun(EngineImpl& m, GenSequence& s, const GenerationOptions& o);
  GenSequence& seq() { return *seq_; }
  text::Sampler& sampler() { return *sampler_; }
  // The token for `logits` ([vocab], modified: penalty and warpers).
  int32_t choose(std::vector<float>& logits);
  // Takes the id chosen at `step` (0-based): records it, applies the stop rules and streams the text; true while
  // the sequence goes on (then `id` is to be fed back), false when it stopped (result().stop_reason says why).
  bool accept(int32_t id, int step, Clock::time_point t_start);
  // Ends the sequence: streams what is left and fills in the decode time.
  void finish(Clock::time_point t_decode_start);
  // The stop reason Cancelled (the caller cancels between steps).
  void cancel() { seq_->result->stop_reason = StopReason::Cancelled; }
  // After finish(): the result's tokens and text (finish_result() with the stop-string cut).
  void complete();

 private:
  EngineImpl& m_;
  GenSequence* seq_;
  const GenerationOptions& o_;
  text::SamplingParams sp_;
  std::set<int32_t> stops_;
  int64_t ctx_limit_;
  std::unique_ptr<text::Sampler> sampler_;
  std::unique_ptr<text::StreamDecoder> stream_;
  std::unique_ptr<StopText> stop_text_;  // null: no stop strings
};

text::SamplingParams sampling_params(const GenerationOptions& o);

// Prefills every sequence on its cache, then decodes them together, one token each per step, the weights read
// once per step for all of them (a sequence leaves when it stops). A lone sequence decodes on the device where
// the backend can (engine/device_decoder.h). Each sequence gets exactly the tokens it would get alone.
// On return a sequence's cache holds its prompt and every generated token except the last one chosen.
void generate(EngineImpl& m, std::vector<GenSequence>& seqs, const GenerationOptions& o, Clock::time_point t_start);

// Checks the options (Error{InvalidArgument}).
void check_options(const GenerationOptions& o);

}  // namespace xc2::engine
