// Beam search for one sequence: Hugging Face generate(num_beams=N, do_sample=False) as upstream chat() ran it
// (transformers 4.33, early_stopping=False, length_penalty as given). The beams share the prompt's KV rows
// through the sequence pool (fork on the first extra child), and each step decodes all beams in one batch.
//
// The algorithm (the reference, tools/reference/xc2_ref.py Model.beam_search, is written from the same text):
// - HF's input_ids: the prompt ids on the input_ids path (text-only chat: GenSequence::penalty_history holds
//   them), nothing on the inputs_embeds path (images); its length cur_len counts in the length penalty;
// - per step and live beam: log_softmax(logits), then the repetition penalty on that beam's input_ids
//   (log-probs are <= 0: multiplied by the penalty), plus the beam's running score;
// - the 2N best (beam, token) pairs (ties: lower beam, then lower id); in that order a stop token of rank < N
//   closes a hypothesis (the beam's ids, score sum / len ** length_penalty), any other token extends a beam
//   until there are N;
// - the N best hypotheses are kept; done once there are N and the worst >= the step's best candidate score /
//   cur_len ** length_penalty; else stop after max_new_tokens, the live beams joining the hypotheses;
// - the answer: the best hypothesis (the later one among equal scores). A zero length counts as 1.
#pragma once

#include "engine/generate.h"

namespace xc2::engine {

// Prefills s.prompt on s.cache, then searches. On return s.cache holds the prompt and the answer's tokens
// except its last one (as after engine::generate); s.result has the answer, its score and stop reason.
void beam_search(EngineImpl& m, GenSequence& s, const GenerationOptions& o, Clock::time_point t_start);

}  // namespace xc2::engine
