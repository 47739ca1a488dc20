// The generation loop (engine/generate.h).
#include "engine/generate.h"

#include <algorithm>
#include <cmath>
#include <memory>

#include "core/check.h"
#include "engine/beam_search.h"
#include "engine/device_decoder.h"
#include "text/sampler.h"
#include "text/tokenizer.h"

namespace xc2::engine {
namespace {

text::SamplingParams sampling_params(const GenerationOptions& o) {
  text::SamplingParams sp;
  sp.do_sample = o.do_sample;
  sp.temperature = o.temperature;
  sp.top_k = o.top_k;
  sp.top_p = o.top_p;
  sp.repetition_penalty = o.repetition_penalty;
  return sp;
}

// A sequence while it is generated.
struct Live {
  GenSequence* seq = nullptr;
  std::unique_ptr<text::Sampler> sampler;
  std::unique_ptr<text::StreamDecoder> stream;
  std::unique_ptr<DeviceDecoder> device;  // a lone sequence on a device-decode backend
  std::vector<float> logits;             // [vocab]: the next choice (host path)
  bool done = false;
};

}  // namespace

void check_options(const GenerationOptions& o) {
  XC2_CHECK(o.max_new_tokens >= 0, InvalidArgument, "max_new_tokens must be >= 0");
  XC2_CHECK(o.temperature > 0 || !o.do_sample, InvalidArgument, "temperature must be > 0");
  XC2_CHECK(o.top_p > 0 && o.top_p <= 1, InvalidArgument, "top_p must be in (0, 1]");
  XC2_CHECK(o.top_k >= 0, InvalidArgument, "top_k must be >= 0");
  XC2_CHECK(o.repetition_penalty > 0, InvalidArgument, "repetition_penalty must be > 0");
  XC2_CHECK(o.num_beams >= 1 && o.num_beams <= 64, InvalidArgument, "the number of beams must be in 1..64");
  XC2_CHECK(o.num_beams == 1 || !o.do_sample, InvalidArgument,
            "beam search is deterministic (Hugging Face num_beams with do_sample=False): no sampling with beams");
  XC2_CHECK(std::isfinite(o.length_penalty), InvalidArgument, "length_penalty must be a finite number");
}

void generate(EngineImpl& m, std::vector<GenSequence>& seqs, const GenerationOptions& o, Clock::time_point t_start) {
  check_options(o);
  if (o.num_beams > 1) {  // each sequence on its own, its beams decoded together
    for (GenSequence& s : seqs) {
      try {
        beam_search(m, s, o, t_start);
        m.finish_result(*s.result);
      } catch (const Error& e) {
        if (!s.error) throw;
        *s.result = GenerationResult{};
        *s.error = e.what();
      }
    }
    return;
  }
  const text::SamplingParams sp = sampling_params(o);
  const std::set<int32_t> stops = m.stop_set(o);
  const int64_t ctx_limit = m.context_limit();
  model::XComposer2& model = *m.model;

  // Prefill, one sequence at a time (an image prompt is a full GEMM already).
  std::vector<Live> live;
  for (GenSequence& s : seqs) {
    GenerationResult& r = *s.result;
    try {
      Live l;
      l.seq = &s;
      l.sampler = std::make_unique<text::Sampler>(r.seed);
      l.stream = std::make_unique<text::StreamDecoder>(*m.tok);
      model::KvCache& cache = *s.cache;
      const int64_t end_of_prompt = cache.length() + s.prompt.rows.rows();
      if (seqs.size() == 1)
        l.device = DeviceDecoder::create(model, cache, sp, s.penalty_history, end_of_prompt,
                                         std::min<int64_t>(o.max_new_tokens, ctx_limit + 1 - end_of_prompt));
      const auto t0 = Clock::now();
      if (l.device) l.device->prefill(s.prompt.rows, s.prompt.spans);
      else l.logits = model.forward(s.prompt.rows, s.prompt.spans, cache, 1);
      r.timings.prefill_ms = ms_since(t0);
      s.prompt.rows = Tensor();
      r.stop_reason = StopReason::MaxNewTokens;
      live.push_back(std::move(l));
    } catch (const Error& e) {
      if (!s.error) throw;
      r = GenerationResult{};
      *s.error = e.what();
    }
  }

  // Decode in lockstep; a sequence leaves the batch when it stops.
  const auto t_dec = Clock::now();
  auto finish = [&](Live& l) {
    GenerationResult& r = *l.seq->result;
    r.timings.decode_ms = ms_since(t_dec);
    const std::string rest = l.stream->finish();
    if (!rest.empty() && l.seq->on_text && r.stop_reason != StopReason::Cancelled) l.seq->on_text(rest);
  };
  const int64_t vocab = m.cfg().vocab_size;
  for (int step = 0; step < o.max_new_tokens && !live.empty(); ++step) {
    std::vector<Live> next;
    std::vector<int32_t> feed;
    std::vector<model::KvCache*> caches;
    for (Live& l : live) {
      GenSequence& s = *l.seq;
      GenerationResult& r = *s.result;
      const int32_t id = l.device ? l.device->select(*l.sampler) : l.sampler->next(l.logits, s.penalty_history, sp);
      if (step == 0) r.timings.first_token_ms = ms_since(t_start);
      bool done = true;
      r.tokens.push_back(id);  // a stop token is dropped by finish_result()
      if (stops.count(id)) {
        r.stop_reason = m.stop_reason(id);
      } else {
        s.penalty_history.push_back(id);
        const std::string piece = l.stream->push(id);
        if (!piece.empty() && s.on_text && !s.on_text(piece)) {
          r.stop_reason = StopReason::Cancelled;
        } else if (step + 1 < o.max_new_tokens) {  // else: max_new_tokens reached
          if (s.cache->length() + 1 > ctx_limit) r.stop_reason = StopReason::ContextFull;
          else done = false;
        }
      }
      if (done) {
        finish(l);
        continue;
      }
      feed.push_back(id);
      caches.push_back(s.cache);
      next.push_back(std::move(l));
    }
    live = std::move(next);
    if (live.empty()) break;
    if (live[0].device) {
      live[0].device->feed(feed[0]);  // a lone sequence (device decoders are made for one only)
    } else {
      const std::vector<float> logits = model.decode_batch(feed, caches);
      for (size_t b = 0; b < live.size(); ++b)
        live[b].logits.assign(logits.begin() + static_cast<std::ptrdiff_t>(b * vocab),
                              logits.begin() + static_cast<std::ptrdiff_t>((b + 1) * vocab));
    }
  }
  for (Live& l : live) finish(l);  // max_new_tokens == 0
  for (GenSequence& s : seqs)
    if (!s.error || s.error->empty()) m.finish_result(*s.result);
}

}  // namespace xc2::engine
