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

text::SamplingParams sampling_params(const GenerationOptions& o) {
  text::SamplingParams sp;
  sp.do_sample = o.do_sample;
  sp.temperature = o.temperature;
  sp.top_k = o.top_k;
  sp.top_p = o.top_p;
  sp.repetition_penalty = o.repetition_penalty;
  return sp;
}

StopText::StopText(std::vector<std::string> stops) : stops_(std::move(stops)) {}

std::string StopText::push(const std::string& piece) {
  if (hit_) return {};
  // A stop string that ends in the new piece starts at most (longest - 1) bytes before it.
  size_t longest = 0;
  for (const std::string& s : stops_) longest = std::max(longest, s.size());
  const size_t from = text_.size() > longest ? text_.size() - longest + 1 : 0;
  text_ += piece;
  size_t cut = std::string::npos;
  for (const std::string& s : stops_) cut = std::min(cut, text_.find(s, std::min(from, emitted_)));
  if (cut != std::string::npos) {
    hit_ = true;
    text_.resize(cut);
    std::string out = text_.substr(emitted_);
    emitted_ = text_.size();
    return out;
  }
  // Hold back the longest tail that is a proper prefix of a stop string (it starts at a character boundary,
  // as the stop string does).
  size_t hold = 0;
  for (const std::string& s : stops_)
    for (size_t n = std::min(s.size() - 1, text_.size()); n > hold; --n)
      if (text_.compare(text_.size() - n, n, s, 0, n) == 0) {
        hold = n;
        break;
      }
  const size_t safe = std::max(emitted_, text_.size() - hold);
  std::string out = text_.substr(emitted_, safe - emitted_);
  emitted_ = safe;
  return out;
}

std::string StopText::flush() {
  std::string out = text_.substr(emitted_);
  emitted_ = text_.size();
  return out;
}

SequenceRun::SequenceRun(EngineImpl& m, GenSequence& s, const GenerationOptions& o)
    : m_(m), seq_(&s), o_(o), sp_(sampling_params(o)), stops_(m.stop_set(o)), ctx_limit_(m.context_limit()) {
  sampler_ = std::make_unique<text::Sampler>(s.result->seed);
  stream_ = std::make_unique<text::StreamDecoder>(*m.tok);
  if (!o.stop_strings.empty()) stop_text_ = std::make_unique<StopText>(o.stop_strings);
}

int32_t SequenceRun::choose(std::vector<float>& logits) { return sampler_->next(logits, seq_->penalty_history, sp_); }

bool SequenceRun::accept(int32_t id, int step, Clock::time_point t_start) {
  GenSequence& s = *seq_;
  GenerationResult& r = *s.result;
  if (step == 0) r.timings.first_token_ms = ms_since(t_start);
  r.tokens.push_back(id);  // a stop token is dropped by finish_result()
  if (stops_.count(id)) {
    r.stop_reason = m_.stop_reason(id);
    return false;
  }
  s.penalty_history.push_back(id);
  std::string piece = stream_->push(id);
  if (stop_text_) {
    piece = stop_text_->push(piece);
    if (stop_text_->hit()) {
      r.stop_reason = StopReason::StopString;
      if (!piece.empty() && s.on_text) s.on_text(piece);
      return false;
    }
  }
  if (!piece.empty() && s.on_text && !s.on_text(piece)) {
    r.stop_reason = StopReason::Cancelled;
    return false;
  }
  if (step + 1 >= o_.max_new_tokens) return false;  // max_new_tokens reached
  if (s.cache->length() + 1 > ctx_limit_) {
    r.stop_reason = StopReason::ContextFull;
    return false;
  }
  return true;
}

void SequenceRun::finish(Clock::time_point t_decode_start) {
  GenSequence& s = *seq_;
  GenerationResult& r = *s.result;
  r.timings.decode_ms = ms_since(t_decode_start);
  std::string rest = stream_->finish();
  if (stop_text_ && r.stop_reason != StopReason::StopString) {
    rest = stop_text_->push(rest);
    if (stop_text_->hit()) r.stop_reason = StopReason::StopString;
    else rest += stop_text_->flush();
  }
  if (!rest.empty() && s.on_text && r.stop_reason != StopReason::Cancelled) s.on_text(rest);
}

void SequenceRun::complete() {
  GenerationResult& r = *seq_->result;
  m_.finish_result(r);
  if (r.stop_reason == StopReason::StopString) r.text = stop_text_->text();
}

namespace {

// A sequence of generate() while it is generated.
struct Live {
  SequenceRun* run = nullptr;
  std::unique_ptr<DeviceDecoder> device;  // a lone sequence on a device-decode backend
  std::vector<float> logits;             // [vocab]: the next choice (host path)
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
  XC2_CHECK(o.num_beams == 1 || o.stop_strings.empty(), Unsupported, "stop strings do not combine with beam search");
  for (const std::string& s : o.stop_strings) XC2_CHECK(!s.empty(), InvalidArgument, "a stop string is empty");
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
  const int64_t ctx_limit = m.context_limit();
  model::XComposer2& model = *m.model;

  // Prefill, one sequence at a time (an image prompt is a full GEMM already).
  std::vector<std::unique_ptr<SequenceRun>> runs(seqs.size());  // null: failed to prefill
  std::vector<Live> live;
  for (size_t i = 0; i < seqs.size(); ++i) {
    GenSequence& s = seqs[i];
    GenerationResult& r = *s.result;
    try {
      auto run = std::make_unique<SequenceRun>(m, s, o);
      Live l;
      l.run = run.get();
      model::KvCache& cache = *s.cache;
      const int64_t end_of_prompt = cache.length() + s.prompt.rows.rows();
      // The most tokens the answer can take within the context.
      const int64_t answer = std::max<int64_t>(0, std::min<int64_t>(o.max_new_tokens, ctx_limit + 1 - end_of_prompt));
      if (seqs.size() == 1)
        l.device = DeviceDecoder::create(model, cache, sp, s.penalty_history, end_of_prompt, answer);
      // The cache's room for the whole answer now: grown at the first decode step instead, it was copied (the
      // prompt's 325 MB at the full size with one image) into fresh memory. Capacity never written takes none.
      if (!l.device) cache.reserve(end_of_prompt + answer);
      const auto t0 = Clock::now();
      if (l.device) l.device->prefill(s.prompt.rows, s.prompt.spans);
      else l.logits = model.forward(s.prompt.rows, s.prompt.spans, cache, 1);
      r.timings.prefill_ms = ms_since(t0);
      s.prompt.rows = Tensor();
      r.stop_reason = StopReason::MaxNewTokens;
      live.push_back(std::move(l));
      runs[i] = std::move(run);
    } catch (const Error& e) {
      if (!s.error) throw;
      r = GenerationResult{};
      *s.error = e.what();
    }
  }

  // Decode in lockstep; a sequence leaves the batch when it stops.
  const auto t_dec = Clock::now();
  const int64_t vocab = m.cfg().vocab_size;
  for (int step = 0; step < o.max_new_tokens && !live.empty(); ++step) {
    std::vector<Live> next;
    std::vector<int32_t> feed;
    std::vector<model::KvCache*> caches;
    for (Live& l : live) {
      const int32_t id = l.device ? l.device->select(l.run->sampler()) : l.run->choose(l.logits);
      if (!l.run->accept(id, step, t_start)) {
        l.run->finish(t_dec);
        continue;
      }
      feed.push_back(id);
      caches.push_back(l.run->seq().cache);
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
  for (Live& l : live) l.run->finish(t_dec);  // max_new_tokens == 0
  for (auto& run : runs)
    if (run) run->complete();
}

}  // namespace xc2::engine
