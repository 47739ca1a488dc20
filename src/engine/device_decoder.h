// DeviceDecoder: prefill and decode steps that keep logits, the next token id and the position in device
// memory (Backend::supports_device_decode(): the CUDA backend). Per step:
//   mark_seen(token) -> XComposer2::forward (ids and position read on the device) -> pos += 1
//                                                                    recorded once as a graph and replayed
//   greedy:   repetition penalty + argmax on the device; only the id comes back (4 bytes);
//   sampling: penalty, / temperature and the top-k survivors on the device; the host finishes with
//             Sampler::next_from_candidates(), which is next()'s arithmetic and RNG on those survivors, so a
//             seed gives the same text as the host path. top_k = 0 (or too many ties) falls back to the
//             whole logits row and Sampler::next().
// The first decode step runs eagerly (it builds RoPE tables, GEMM plans and pool blocks); the second is
// recorded; later steps replay. The KV cache is reserved for the whole generation up front so the recorded
// addresses stay valid.
//
// Environment: XC2_DEVICE_DECODE=0 turns the path off (the engine then uses forward() + the host sampler);
// XC2_CUDA_GRAPHS=0 keeps device selection but enqueues every step without a graph.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "backends/backend.h"
#include "model/xcomposer2.h"
#include "text/sampler.h"

namespace xc2::engine {

using model::KvCache;
using model::RowSpan;
using model::XComposer2;

class DeviceDecoder {
 public:
  // nullptr when the path does not apply: the backend has no device decode, XC2_DEVICE_DECODE=0, or the
  // RoPE base would change during the generation (dynamic NTK past max_position_embeddings).
  // end_of_prompt: cache positions after the prefill; max_new_tokens: the most decode steps that may follow.
  // history: the ids the repetition penalty covers before the first generated token.
  static std::unique_ptr<DeviceDecoder> create(XComposer2& model, KvCache& cache, const text::SamplingParams& params,
                                               const std::vector<int32_t>& history, int64_t end_of_prompt,
                                               int64_t max_new_tokens);

  // Runs the prompt rows through the decoder (XComposer2::forward), keeping the last row's logits on the device,
  // and waits for the device (so prefill timings are honest).
  void prefill(const Tensor& rows, const std::vector<RowSpan>& spans);
  // The next token from the current logits.
  int32_t select(text::Sampler& sampler);
  // Appends `id` at position cache.length(), runs the decode step and advances the cache length.
  void feed(int32_t id);

  bool uses_graphs() const { return use_graphs_; }
  int64_t graph_replays() const { return replays_; }

 private:
  DeviceDecoder(XComposer2& model, KvCache& cache, const text::SamplingParams& params);
  void enqueue_step();

  static constexpr int kCandidates = 1024;  // most top-k survivors taken on the device path

  XComposer2& model_;
  Backend& be_;
  KvCache& cache_;
  text::SamplingParams params_;
  std::vector<int32_t> history_;  // for the whole-row fallback
  double theta_ = 0;
  bool use_graphs_ = true;
  bool penalize_ = false;
  int64_t vocab_ = 0;
  IntBuffer token_, pos_, seen_, cand_;
  Tensor step_rows_;  // [1, hidden]: the fed token's embedding
  Tensor prefill_logits_, step_logits_;
  const Tensor* logits_ = nullptr;  // the current row: prefill_logits_ or step_logits_
  GraphHandle graph_;
  void* graph_cache_ptr_ = nullptr;  // cache.k(0).data when the graph was recorded
  int64_t steps_ = 0, replays_ = 0;
};

}  // namespace xc2::engine
