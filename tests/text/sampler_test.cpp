// Sampler semantics (Hugging Face generate(), model-spec §11.3). Oracle: hand-computed expectations
// on small logit vectors, and empirical frequencies against the exact filtered softmax.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <vector>

#include "text/sampler.h"

namespace xc2::text {
namespace {

TEST(Sampler, RepetitionPenaltyOncePerDistinctIdWithSignRule) {
  std::vector<float> l = {2.0f, -2.0f, 1.0f, 0.0f};
  apply_repetition_penalty(l, {0, 1, 0, 0, 3, -5, 99}, 2.0f);  // repeats, out-of-range ids ignored
  EXPECT_EQ(l, (std::vector<float>{1.0f, -4.0f, 1.0f, 0.0f}));
}

TEST(Sampler, GreedyIsArgmaxAfterPenaltyLowestIdOnTies) {
  Sampler s(1);
  SamplingParams p;
  p.do_sample = false;
  p.repetition_penalty = 1.0f;
  std::vector<float> l = {1.0f, 3.0f, 3.0f, -1.0f};
  EXPECT_EQ(s.next(l, {}, p), 1);
  p.repetition_penalty = 1.5f;
  l = {1.0f, 3.0f, 2.5f, -1.0f};
  EXPECT_EQ(s.next(l, {1}, p), 2);  // 3 / 1.5 = 2 < 2.5
}

// Empirical distribution of `n` draws.
std::map<int, double> draw(const std::vector<float>& logits, const SamplingParams& p, int n, uint64_t seed) {
  Sampler s(seed);
  std::map<int, double> f;
  for (int i = 0; i < n; ++i) {
    std::vector<float> l = logits;
    f[s.next(l, {}, p)] += 1.0 / n;
  }
  return f;
}

TEST(Sampler, TopKKeepsTiesAndTopPKeepsTheSmallestMass) {
  const std::vector<float> logits = {std::log(0.5f), std::log(0.2f), std::log(0.2f), std::log(0.1f)};
  SamplingParams p;
  p.top_p = 1.0f;
  p.top_k = 2;  // the 2nd largest is tied with the 3rd: both kept
  auto f = draw(logits, p, 20000, 7);
  EXPECT_EQ(f.count(3), 0u);
  EXPECT_NEAR(f[0], 0.5 / 0.9, 0.02);
  EXPECT_NEAR(f[1], 0.2 / 0.9, 0.02);
  p.top_k = 0;
  p.top_p = 0.6f;  // ascending cumsum 0.1, 0.3, 0.5 <= 0.4 removes {3} and one 0.2: HF keeps the 0.5 and one 0.2
  f = draw(logits, p, 20000, 8);
  EXPECT_EQ(f.count(3), 0u);
  EXPECT_EQ(f.count(1), 0u);  // of the tied pair, the stable ascending sort puts id 1 first: removed
  EXPECT_NEAR(f[0], 0.5 / 0.7, 0.02);
  EXPECT_NEAR(f[2], 0.2 / 0.7, 0.02);
  p.top_p = 0.3f;  // only the most likely token survives
  f = draw(logits, p, 2000, 9);
  EXPECT_EQ(f.size(), 1u);
  EXPECT_EQ(f.begin()->first, 0);
}

TEST(Sampler, TemperatureSharpensAndSeedsReproduce) {
  const std::vector<float> logits = {0.0f, std::log(2.0f)};
  SamplingParams p;
  p.top_p = 1.0f;
  p.top_k = 0;
  p.temperature = 0.5f;  // probabilities 1:4
  const auto f = draw(logits, p, 20000, 3);
  EXPECT_NEAR(f.at(1), 0.8, 0.02);
  EXPECT_EQ(draw(logits, p, 500, 42), draw(logits, p, 500, 42));
  EXPECT_NE(draw(logits, p, 500, 42), draw(logits, p, 500, 43));
}

}  // namespace
}  // namespace xc2::text
