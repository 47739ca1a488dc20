// Random GPTQ linears for the quantized-linear tests (CPU and CUDA): the raw tensors and the weights they stand
// for (tests/support/gptq_random.h) with their io::GptqLinearViews (io/gptq.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "io/gptq.h"
#include "support/gptq_random.h"

namespace xc2::test {

struct RandomGptq : GptqRaw {
  io::TensorView qweight_v, qzeros_v, scales_v, g_idx_v, bias_v;
  io::GptqLinearViews views;           // points into this object (which is why it is handed out by pointer)
};

std::unique_ptr<RandomGptq> make_random_gptq(const GptqCase& c, uint32_t seed);

// y[m, n] = x . w^T (+ bias) (+ y0 when given) in double.
std::vector<double> gptq_reference_linear(const RandomGptq& g, const std::vector<float>& x, int64_t m,
                                          const std::vector<float>* y0);

}  // namespace xc2::test
