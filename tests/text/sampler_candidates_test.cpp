// Sampler::next_from_candidates (the host half of the device decode path): given the top-k survivors of
// a logits row (penalty and temperature applied the way the device does it), the draw must equal next()
// on the whole row: same token and the same RNG state afterwards. Oracle: Sampler::next() itself.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "text/sampler.h"

namespace xc2::text {
namespace {

// What the device does before the candidates leave it: penalty on seen ids, then / temperature, then
// every id >= the k-th largest value (ties kept), in ascending id order.
void device_candidates(const std::vector<float>& logits, const std::vector<int32_t>& history, const SamplingParams& p,
                       std::vector<int32_t>& ids, std::vector<float>& vals) {
  std::vector<float> w = logits;
  apply_repetition_penalty(w, history, p.repetition_penalty);
  for (float& l : w) l /= p.temperature;
  std::vector<float> sorted = w;
  std::nth_element(sorted.begin(), sorted.begin() + (p.top_k - 1), sorted.end(), std::greater<float>());
  const float kth = sorted[static_cast<size_t>(p.top_k - 1)];
  ids.clear();
  vals.clear();
  for (size_t i = 0; i < w.size(); ++i)
    if (w[i] >= kth) ids.push_back(static_cast<int32_t>(i)), vals.push_back(w[i]);
}

TEST(SamplerCandidates, SameTokensAndRngStateAsTheWholeRow) {
  std::mt19937 gen(7);
  std::normal_distribution<float> nd(0.0f, 3.0f);
  for (int trial = 0; trial < 40; ++trial) {
    SCOPED_TRACE(trial);
    SamplingParams p;
    p.do_sample = true;
    p.temperature = trial % 3 == 0 ? 1.0f : 0.7f;
    p.top_k = 1 + trial % 60;
    p.top_p = trial % 4 == 0 ? 1.0f : 0.8f;
    p.repetition_penalty = trial % 2 ? 1.005f : 1.3f;
    std::vector<float> logits(997);
    for (float& l : logits) l = nd(gen);
    if (trial % 5 == 0)  // ties at the cut
      for (int i = 0; i < 20; ++i) logits[static_cast<size_t>(i * 37)] = 4.0f;
    std::vector<int32_t> history = {3, 17, 17, 500, 996};
    Sampler full(1234 + trial), cand(1234 + trial);
    for (int step = 0; step < 8; ++step) {
      std::vector<float> row = logits;
      const int32_t a = full.next(row, history, p);
      std::vector<int32_t> ids;
      std::vector<float> vals;
      device_candidates(logits, history, p, ids, vals);
      const int32_t b = cand.next_from_candidates(ids, vals, p);
      ASSERT_EQ(a, b) << "step " << step;
      history.push_back(a);
    }
  }
}

}  // namespace
}  // namespace xc2::text
