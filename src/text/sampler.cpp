#include "text/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <unordered_set>

namespace xc2::text {

void apply_repetition_penalty(std::vector<float>& logits, const std::vector<int32_t>& history, float penalty) {
  if (penalty == 1.0f) return;
  std::unordered_set<int32_t> seen;
  for (int32_t id : history) {
    if (id < 0 || static_cast<size_t>(id) >= logits.size() || !seen.insert(id).second) continue;
    float& l = logits[static_cast<size_t>(id)];
    l = l < 0 ? l * penalty : l / penalty;
  }
}

int32_t argmax(const std::vector<float>& logits) {
  int32_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i)
    if (logits[i] > logits[static_cast<size_t>(best)]) best = static_cast<int32_t>(i);
  return best;
}

int32_t Sampler::next(std::vector<float>& logits, const std::vector<int32_t>& history, const SamplingParams& p) {
  apply_repetition_penalty(logits, history, p.repetition_penalty);
  if (!p.do_sample) return argmax(logits);

  if (p.temperature != 1.0f && p.temperature > 0)
    for (float& l : logits) l /= p.temperature;
  return draw(logits, p);
}

int32_t Sampler::next_from_candidates(const std::vector<int32_t>& ids, std::vector<float> values,
                                      const SamplingParams& p) {
  if (ids.empty() || ids.size() != values.size()) return ids.empty() ? 0 : ids[0];
  const int32_t i = draw(values, p);
  return ids[static_cast<size_t>(i)];
}

int32_t Sampler::draw(std::vector<float>& logits, const SamplingParams& p) {
  const float neg_inf = -std::numeric_limits<float>::infinity();
  const size_t V = logits.size();
  if (p.top_k > 0 && static_cast<size_t>(p.top_k) < V) {
    std::vector<float> sorted(logits);
    std::nth_element(sorted.begin(), sorted.begin() + (p.top_k - 1), sorted.end(), std::greater<float>());
    const float kth = sorted[static_cast<size_t>(p.top_k - 1)];
    for (float& l : logits)
      if (l < kth) l = neg_inf;
  }
  if (p.top_p < 1.0f) {
    std::vector<int32_t> order(V);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int32_t a, int32_t b) { return logits[static_cast<size_t>(a)] < logits[static_cast<size_t>(b)]; });
    const float mx = logits[static_cast<size_t>(order.back())];
    double z = 0;
    for (float l : logits) z += std::isinf(l) ? 0.0 : std::exp(static_cast<double>(l - mx));
    double cum = 0;
    for (size_t i = 0; i + 1 < V; ++i) {  // the last (most likely) token is always kept
      float& l = logits[static_cast<size_t>(order[i])];
      if (!std::isinf(l)) cum += std::exp(static_cast<double>(l - mx)) / z;
      if (cum <= 1.0 - p.top_p) l = neg_inf;
      else break;
    }
  }
  const float mx = *std::max_element(logits.begin(), logits.end());
  std::vector<double> probs(V);
  double z = 0;
  for (size_t i = 0; i < V; ++i) {
    probs[i] = std::isinf(logits[i]) ? 0.0 : std::exp(static_cast<double>(logits[i] - mx));
    z += probs[i];
  }
  std::uniform_real_distribution<double> unif(0.0, z);
  const double u = unif(rng_);
  double acc = 0;
  int32_t last_nonzero = argmax(logits);
  for (size_t i = 0; i < V; ++i) {
    if (probs[i] <= 0) continue;
    acc += probs[i];
    last_nonzero = static_cast<int32_t>(i);
    if (u < acc) return static_cast<int32_t>(i);
  }
  return last_nonzero;
}

}  // namespace xc2::text
