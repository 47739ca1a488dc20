// Shared by the model tests (CPU and CUDA): the decoder's input rows of a prompt, built as the engine
// builds them (text segments embedded, image segments copied from the encoded images), and the skip of
// the CUDA cases on machines without a GPU (support/backend_test_util.h).
#pragma once

#include <cstdint>
#include <vector>

#include "backends/backend.h"
#include "model/xcomposer2.h"
#include "support/backend_test_util.h"  // XC2_SKIP_IF_NO_CUDA
#include "text/prompt.h"

namespace xc2::test {

// Rows [prompt.n_positions(vt), hidden] on `be`; image segment k takes rows k*vt .. k*vt+vt-1 of
// `image_rows`. `spans` receives the image row ranges.
// n token ids in [3, vocab) from a seeded generator (no BOS, EOS or UNK).
std::vector<int32_t> random_ids(size_t n, int32_t vocab, uint32_t seed);

Tensor assemble_rows(Backend& be, model::XComposer2& model, const text::Prompt& prompt, const Tensor& image_rows,
                     std::vector<model::RowSpan>& spans);

}  // namespace xc2::test
