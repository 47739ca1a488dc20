// DeviceDecoder (model/device_decoder.h): device-resident decode steps, replayed from a recorded graph.
#include "engine/device_decoder.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "core/check.h"
#include "core/env.h"
#include "core/log.h"

namespace xc2::engine {
std::unique_ptr<DeviceDecoder> DeviceDecoder::create(XComposer2& model, KvCache& cache,
                                                     const text::SamplingParams& params,
                                                     const std::vector<int32_t>& history, int64_t end_of_prompt,
                                                     int64_t max_new_tokens) {
  Backend& be = model.backend();
  if (!be.supports_device_decode() || !env_flag("XC2_DEVICE_DECODE", true)) return nullptr;
  const int64_t last = end_of_prompt + std::max<int64_t>(max_new_tokens, 1);
  // Decode steps run at L = end_of_prompt + 1 .. last; one recorded step needs one RoPE base.
  if (model.rope_theta_for(end_of_prompt + 1) != model.rope_theta_for(last)) {
    XC2_LOG_DEBUG("device decode off: the RoPE base changes within " << end_of_prompt + 1 << ".." << last);
    return nullptr;
  }
  std::unique_ptr<DeviceDecoder> d(new DeviceDecoder(model, cache, params));
  d->theta_ = model.rope_theta_for(last);
  d->history_ = history;
  cache.reserve(last + 1);  // fixed addresses for the recorded step
  d->vocab_ = model.config().vocab_size;
  d->token_ = be.ints(1);
  d->pos_ = be.ints(1);
  d->cand_ = be.ints(1 + 2 * kCandidates);
  d->penalize_ = params.repetition_penalty != 1.0f;
  if (d->penalize_) {
    d->seen_ = be.ints(d->vocab_);
    std::vector<int32_t> mask(static_cast<size_t>(d->vocab_), 0);
    for (int32_t id : history)
      if (id >= 0 && id < d->vocab_) mask[static_cast<size_t>(id)] = 1;
    be.write_ints(d->seen_, mask);
  }
  d->step_logits_ = be.empty({1, d->vocab_});
  d->step_rows_ = be.empty({1, model.config().hidden_size});
  return d;
}

DeviceDecoder::DeviceDecoder(XComposer2& model, KvCache& cache, const text::SamplingParams& params)
    : model_(model), be_(model.backend()), cache_(cache), params_(params) {
  use_graphs_ = be_.supports_graphs() && env_flag("XC2_CUDA_GRAPHS", true);
}

void DeviceDecoder::prefill(const Tensor& rows, const std::vector<RowSpan>& spans) {
  model::DecoderBatch b;
  b.rows = rows;
  b.seqs.push_back({&cache_, 0, rows.rows(), nullptr, 0});
  b.image_spans = spans;
  b.out_rows = {rows.rows() - 1};
  prefill_logits_ = model_.forward(b);
  logits_ = &prefill_logits_;
  be_.synchronize();
}

int32_t DeviceDecoder::select(text::Sampler& sampler) {
  XC2_CHECK(logits_ != nullptr, Internal, "DeviceDecoder::select before prefill");
  const float penalty = penalize_ ? params_.repetition_penalty : 1.0f;
  if (!params_.do_sample) {
    be_.select_greedy(*logits_, seen_, penalty, token_);
    return be_.read_ints(token_, 1)[0];
  }
  if (params_.top_k > 0 && params_.top_k < vocab_) {
    const float temperature = params_.temperature > 0 ? params_.temperature : 1.0f;
    be_.select_candidates(*logits_, seen_, penalty, temperature, params_.top_k, cand_);
    const std::vector<int32_t> v = be_.read_ints(cand_, 1 + 2 * kCandidates);
    const int32_t count = v[0];
    if (count >= 1 && count <= kCandidates) {
      std::vector<std::pair<int32_t, float>> c(static_cast<size_t>(count));
      for (int32_t i = 0; i < count; ++i) {
        float f;
        std::memcpy(&f, &v[static_cast<size_t>(1 + kCandidates + i)], 4);
        c[static_cast<size_t>(i)] = {v[static_cast<size_t>(1 + i)], f};
      }
      std::sort(c.begin(), c.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
      std::vector<int32_t> ids(c.size());
      std::vector<float> vals(c.size());
      for (size_t i = 0; i < c.size(); ++i) ids[i] = c[i].first, vals[i] = c[i].second;
      return sampler.next_from_candidates(ids, std::move(vals), params_);
    }
    XC2_LOG_DEBUG("device decode: " << count << " top-k candidates (ties), sampling on the whole row");
  }
  std::vector<float> row(static_cast<size_t>(vocab_));
  be_.to_host_f32(*logits_, row.data());
  return sampler.next(row, history_, params_);
}

void DeviceDecoder::enqueue_step() {
  if (penalize_) be_.mark_seen(seen_, token_);
  model_.embed(TokenIds::in(token_, 1), step_rows_);
  model::DecoderBatch b;
  b.rows = step_rows_;
  b.seqs.push_back({&cache_, 0, 1, &pos_, theta_});
  b.out_rows = {0};
  model_.forward(b, &step_logits_);
  be_.add_to(pos_, 1);
}

void DeviceDecoder::feed(int32_t id) {
  XC2_CHECK(id >= 0 && id < vocab_, InvalidArgument, "token id ", id, " is outside the vocabulary (", vocab_,
            " entries)");
  XC2_CHECK(cache_.length() < cache_.capacity(), Internal, "DeviceDecoder: the KV cache reservation is used up");
  history_.push_back(id);
  if (steps_ == 0) be_.write_ints(pos_, {static_cast<int32_t>(cache_.length())});
  be_.write_ints(token_, {id});
  const bool record = use_graphs_ && steps_ >= 1 && (!graph_ || graph_cache_ptr_ != cache_.k(0).data);
  if (record) {
    be_.graph_begin();
    try {
      enqueue_step();
    } catch (...) {
      try {
        be_.graph_end();
      } catch (...) {
      }
      throw;
    }
    graph_ = be_.graph_end();
    graph_cache_ptr_ = cache_.k(0).data;
  }
  if (use_graphs_ && graph_) {
    be_.graph_launch(graph_);
    ++replays_;
  } else {
    enqueue_step();
  }
  logits_ = &step_logits_;
  cache_.set_length(cache_.length() + 1);
  ++steps_;
}

}  // namespace xc2::engine
