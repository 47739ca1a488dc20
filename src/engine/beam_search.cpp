// Beam search (engine/beam_search.h).
#include "engine/beam_search.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <set>
#include <tuple>
#include <vector>

#include "core/check.h"
#include "model/kv_pool.h"
#include "text/tokenizer.h"

namespace xc2::engine {
namespace {

struct Beam {
  model::SeqId seq = -1;
  std::vector<int32_t> tokens;  // generated so far
  double score = 0;             // sum of the processed log-probabilities
  std::vector<float> logits;    // [vocab]: the next step's
};

struct Candidate {
  double score;
  int beam;
  int32_t token;
};

// The N best finished hypotheses (HF BeamHypotheses).
class Hypotheses {
 public:
  Hypotheses(int n, double length_penalty, size_t prefix) : n_(n), lp_(length_penalty), prefix_(prefix) {}
  double norm(size_t length) const { return std::pow(static_cast<double>(std::max<size_t>(length, 1)), lp_); }
  void add(const std::vector<int32_t>& tokens, double sum_logprobs, int32_t stop) {
    const double score = sum_logprobs / norm(prefix_ + tokens.size());
    if (static_cast<int>(hyps_.size()) < n_ || score > worst_) {
      hyps_.push_back({score, tokens, stop});
      if (static_cast<int>(hyps_.size()) > n_) {
        std::vector<std::pair<double, size_t>> order;
        for (size_t i = 0; i < hyps_.size(); ++i) order.emplace_back(hyps_[i].score, i);
        std::sort(order.begin(), order.end());
        hyps_.erase(hyps_.begin() + static_cast<std::ptrdiff_t>(order[0].second));
        worst_ = order[1].first;
      } else {
        worst_ = std::min(score, worst_);
      }
    }
  }
  bool is_done(double best_sum_logprobs, size_t cur_len) const {
    return static_cast<int>(hyps_.size()) >= n_ && worst_ >= best_sum_logprobs / norm(cur_len);
  }
  struct Hyp {
    double score;
    std::vector<int32_t> tokens;
    int32_t stop;  // -1: ended by the length limit
  };
  // The best; the later one among equal scores (HF: a stable sort, then the last).
  const Hyp& best() const {
    size_t b = 0;
    for (size_t i = 1; i < hyps_.size(); ++i)
      if (hyps_[i].score >= hyps_[b].score) b = i;
    return hyps_[b];
  }

 private:
  int n_;
  double lp_;
  size_t prefix_;
  std::vector<Hyp> hyps_;
  double worst_ = 1e9;
};

// log_softmax(logits) with the repetition penalty on `seen` (HF: once per distinct id; < 0: * p, else / p).
std::vector<double> processed_log_probs(const std::vector<float>& logits, const std::set<int32_t>& seen,
                                        float penalty) {
  double mx = -INFINITY;
  for (float v : logits) mx = std::max(mx, static_cast<double>(v));
  double sum = 0;
  for (float v : logits) sum += std::exp(static_cast<double>(v) - mx);
  const double lse = mx + std::log(sum);
  std::vector<double> lp(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) lp[i] = static_cast<double>(logits[i]) - lse;
  if (penalty != 1.0f)
    for (int32_t id : seen) {
      double& v = lp[static_cast<size_t>(id)];
      v = v < 0 ? v * penalty : v / penalty;
    }
  return lp;
}

}  // namespace

void beam_search(EngineImpl& m, GenSequence& s, const GenerationOptions& o, Clock::time_point t_start) {
  model::XComposer2& model = *m.model;
  GenerationResult& r = *s.result;
  const int n = o.num_beams;
  const std::set<int32_t> stops = m.stop_set(o);
  const int64_t ctx_limit = m.context_limit();
  const int64_t vocab = m.cfg().vocab_size;
  const std::vector<int32_t> prefix = s.penalty_history;  // HF's input_ids before the answer

  const auto t0 = Clock::now();
  model::KvCache& prompt_cache = *s.cache;
  const int64_t prompt_end = prompt_cache.length() + s.prompt.rows.rows();
  std::vector<float> first = model.forward(s.prompt.rows, s.prompt.spans, prompt_cache, 1);
  r.timings.prefill_ms = ms_since(t0);
  s.prompt.rows = Tensor();

  const auto t_dec = Clock::now();
  auto pool = model.new_pool();
  std::vector<Beam> beams(1);
  beams[0].seq = pool->alloc();
  pool->get(beams[0].seq).copy_prefix(prompt_cache, prompt_end);
  beams[0].logits = std::move(first);
  Hypotheses hyps(n, o.length_penalty, prefix.size());
  bool done = false;
  StopReason limit = StopReason::MaxNewTokens;
  std::vector<std::tuple<int, int32_t, double>> next;  // (parent beam, token, score)
  for (int generated = 0; o.max_new_tokens > 0;) {
    const size_t cur_len = prefix.size() + static_cast<size_t>(generated);
    // The 2N best (beam, token) pairs.
    std::vector<Candidate> cands;
    for (size_t b = 0; b < beams.size(); ++b) {
      std::set<int32_t> seen(prefix.begin(), prefix.end());
      seen.insert(beams[b].tokens.begin(), beams[b].tokens.end());
      const std::vector<double> lp = processed_log_probs(beams[b].logits, seen, o.repetition_penalty);
      std::vector<int32_t> ids(static_cast<size_t>(vocab));
      for (int32_t i = 0; i < vocab; ++i) ids[static_cast<size_t>(i)] = i;
      const size_t k = std::min<size_t>(static_cast<size_t>(2 * n), ids.size());
      std::partial_sort(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(k), ids.end(), [&](int32_t a, int32_t c) {
        return lp[static_cast<size_t>(a)] > lp[static_cast<size_t>(c)] ||
               (lp[static_cast<size_t>(a)] == lp[static_cast<size_t>(c)] && a < c);
      });
      for (size_t i = 0; i < k; ++i)
        cands.push_back({lp[static_cast<size_t>(ids[i])] + beams[b].score, static_cast<int>(b), ids[i]});
    }
    std::sort(cands.begin(), cands.end(), [](const Candidate& a, const Candidate& c) {
      return std::tie(c.score, a.beam, a.token) < std::tie(a.score, c.beam, c.token);
    });
    if (cands.size() > static_cast<size_t>(2 * n)) cands.resize(static_cast<size_t>(2 * n));
    next.clear();
    for (size_t rank = 0; rank < cands.size() && static_cast<int>(next.size()) < n; ++rank) {
      const Candidate& c = cands[rank];
      if (stops.count(c.token)) {
        if (rank < static_cast<size_t>(n)) hyps.add(beams[static_cast<size_t>(c.beam)].tokens, c.score, c.token);
      } else {
        next.emplace_back(c.beam, c.token, c.score);
      }
    }
    done = done || hyps.is_done(cands[0].score, cur_len);
    if (generated == 0) r.timings.first_token_ms = ms_since(t_start);
    ++generated;
    const bool full = prompt_end + generated + 1 > ctx_limit;
    if (done || generated >= o.max_new_tokens || full || next.empty()) {
      if (full && !done && generated < o.max_new_tokens) limit = StopReason::ContextFull;
      std::vector<Beam> last;
      for (const auto& [b, t, v] : next) {
        std::vector<int32_t> tokens(beams[static_cast<size_t>(b)].tokens);
        tokens.push_back(t);
        last.push_back(Beam{-1, std::move(tokens), v, {}});
      }
      beams = std::move(last);
      break;
    }
    // The new beams: a parent's sequence goes to its first child, further children fork it; unused ones are freed.
    std::vector<Beam> children;
    std::vector<bool> claimed(beams.size(), false);
    for (const auto& [b, t, v] : next) {
      const size_t pb = static_cast<size_t>(b);
      const model::SeqId seq = claimed[pb] ? pool->fork(beams[pb].seq) : beams[pb].seq;
      claimed[pb] = true;
      std::vector<int32_t> tokens(beams[pb].tokens);
      tokens.push_back(t);
      children.push_back(Beam{seq, std::move(tokens), v, {}});
    }
    for (size_t b = 0; b < beams.size(); ++b)
      if (!claimed[b]) pool->free(beams[b].seq);
    beams = std::move(children);
    std::vector<int32_t> feed;
    std::vector<model::KvCache*> caches;
    for (const Beam& b : beams) {
      feed.push_back(b.tokens.back());
      caches.push_back(&pool->get(b.seq));
    }
    const std::vector<float> logits = model.decode_batch(feed, caches);
    for (size_t b = 0; b < beams.size(); ++b)
      beams[b].logits.assign(logits.begin() + static_cast<std::ptrdiff_t>(b * static_cast<size_t>(vocab)),
                             logits.begin() + static_cast<std::ptrdiff_t>((b + 1) * static_cast<size_t>(vocab)));
  }
  if (!done)
    for (const Beam& b : beams) hyps.add(b.tokens, b.score, -1);

  r.tokens.clear();
  bool ends_with_stop = false;
  if (o.max_new_tokens > 0) {
    const Hypotheses::Hyp& best = hyps.best();
    ends_with_stop = best.stop >= 0;
    r.tokens = std::vector<int32_t>(best.tokens);
    r.beam_score = best.score;
    r.stop_reason = best.stop >= 0 ? m.stop_reason(best.stop) : limit;
    if (best.stop >= 0) r.tokens.push_back(best.stop);  // dropped by finish_result()
  }
  // The session's cache: the prompt and the answer except its last token (the last chosen one).
  const size_t keep = r.tokens.empty() ? 0 : r.tokens.size() - 1;
  if (keep > 0) {
    const std::vector<int32_t> body(r.tokens.begin(), r.tokens.begin() + static_cast<std::ptrdiff_t>(keep));
    model.forward(model.embed_tokens(body), {}, prompt_cache, 0);
  }
  r.timings.decode_ms = ms_since(t_dec);
  if (s.on_text) {  // the answer's text at once, as the streamed path would have given it
    text::StreamDecoder stream(*m.tok);
    std::string text;
    for (size_t i = 0; i + (ends_with_stop ? 1 : 0) < r.tokens.size(); ++i) text += stream.push(r.tokens[i]);
    text += stream.finish();
    if (!text.empty()) s.on_text(text);
  }
}

}  // namespace xc2::engine
