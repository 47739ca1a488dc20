// The generation settings of each step of the composition protocol, private to xc2::compose (the
// driver uses them; the tests check them).
#pragma once

#include <cstdint>

#include "xc2/compose.h"

namespace xc2::compose {

constexpr int32_t kDemoStopToken = 92397;  // the demo's extra stopping criterion (model-spec §12.1)

// The settings of one step: `base`'s sampling settings (do_sample, temperature, top_k, top_p,
// repetition_penalty), the seed, truncate_prompt on (upstream cuts silently), and the step's
// max_new_tokens: base's for the article (ignore_eos too), 200 for slots and captions, 10 for the
// selection; for edits base's ignore_eos, and the caller sets max_new_tokens (500 - prompt positions). kDemoStopToken
// is added to the stop ids when the vocabulary has it (vocab_size > 92397).
GenerationOptions step_options(Step step, const GenerationOptions& base, uint64_t seed, int vocab_size);

}  // namespace xc2::compose
