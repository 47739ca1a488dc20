// Next-token selection with Hugging Face `generate()` semantics (model-spec §11.3):
//   repetition penalty (once per distinct id in `history`: logit < 0 ? logit * p : logit / p)
//   -> [sampling only] temperature -> top-k (keep logits >= the k-th largest, ties kept)
//   -> top-p (drop the ascending-sorted prefix whose cumulative probability <= 1 - top_p; the most
//      likely token always stays) -> softmax -> one draw from a seeded std::mt19937_64.
//   Greedy: repetition penalty, then argmax (lowest id on ties).
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace xc2::text {

struct SamplingParams {
  bool do_sample = true;
  float temperature = 1.0f;
  int top_k = 50;          // 0: off
  float top_p = 1.0f;      // 1: off
  float repetition_penalty = 1.0f;  // 1: off
};

// Applies the repetition penalty in place. `history`: the ids the penalty covers (duplicates allowed).
void apply_repetition_penalty(std::vector<float>& logits, const std::vector<int32_t>& history, float penalty);
// Index of the largest logit, lowest index on ties.
int32_t argmax(const std::vector<float>& logits);

class Sampler {
 public:
  explicit Sampler(uint64_t seed) : rng_(seed) {}
  // Modifies `logits` (penalty, warpers) and returns the chosen id.
  int32_t next(std::vector<float>& logits, const std::vector<int32_t>& history, const SamplingParams& params);
  // The same draw as next() (do_sample) from the survivors of top-k only: `ids` (ascending) are every id whose
  // logit, after the penalty and the temperature, is >= the top_k-th largest (ties kept), and `values` those
  // logits (penalty and temperature already applied). Ids outside `ids` would be -inf after top-k in next(),
  // so top-p, the softmax and the random draw see the same numbers in the same order: same token, same RNG
  // state. Used by the device decode path, which selects the candidates on the GPU.
  int32_t next_from_candidates(const std::vector<int32_t>& ids, std::vector<float> values, const SamplingParams& params);

 private:
  // top-k, top-p, softmax and the draw on logits already penalised and divided by the temperature.
  int32_t draw(std::vector<float>& logits, const SamplingParams& params);

  std::mt19937_64 rng_;
};

}  // namespace xc2::text
