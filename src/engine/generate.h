// The generation loop, one for every caller: Engine::generate (one sequence, streamed, on a GPU through the
// device-resident decoder), Engine::generate_batch (sequences decoded in lockstep) and ChatSession turns.
#pragma once

#include <string>
#include <vector>

#include "engine/engine_impl.h"

namespace xc2::engine {

// One sequence to generate: its prompt rows continue `cache`.
struct GenSequence {
  model::KvCache* cache = nullptr;
  EngineImpl::Assembled prompt;
  std::vector<int32_t> penalty_history;  // ids the repetition penalty covers before the first generated token
  GenerationResult* result = nullptr;    // start_result() applied; the answer goes here
  // Non-null: a failure while prefilling this sequence is reported here and the others go on; null: it throws.
  std::string* error = nullptr;
  StreamCallback on_text;  // streamed pieces (complete UTF-8); returning false cancels this sequence
};

// Prefills every sequence on its cache, then decodes them together, one token each per step, the weights read
// once per step for all of them (a sequence leaves when it stops). A lone sequence decodes on the device where
// the backend can (engine/device_decoder.h). Each sequence gets exactly the tokens it would get alone.
// On return a sequence's cache holds its prompt and every generated token except the last one chosen.
void generate(EngineImpl& m, std::vector<GenSequence>& seqs, const GenerationOptions& o, Clock::time_point t_start);

// Checks the options (Error{InvalidArgument}).
void check_options(const GenerationOptions& o);

}  // namespace xc2::engine
