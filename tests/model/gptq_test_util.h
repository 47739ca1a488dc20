// Random GPTQ linears for the quantized-linear tests (CPU and CUDA): the raw tensors exactly as a checkpoint
// holds them (io/gptq.h: qweight, qzeros with the stored zero - 1, f16 scales, g_idx, bias), their
// io::GptqLinearViews, and the weights they stand for, decoded in double from the format's own formula.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "io/gptq.h"

namespace xc2::test {

struct GptqCase {
  int bits = 4;
  int64_t n = 0, k = 0;
  int64_t group_size = 32;     // -1: per channel; k need not be a multiple of it
  bool act_order = false;      // g_idx: a random permutation of the groups' columns (as GPTQ desc_act writes)
  bool random_groups = false;  // g_idx: every column in a random group (groups of uneven sizes)
  bool sym = false;            // zero point 2^(bits-1) everywhere
  bool bias = false;
  std::string str() const;     // for SCOPED_TRACE
};

struct RandomGptq {
  GptqCase c;
  int64_t groups = 0;
  std::vector<int32_t> qweight, qzeros, g_idx;
  std::vector<uint16_t> scales, bias;  // f16
  std::vector<double> w;               // [n][k], input column order: scale * (q - zero)
  io::TensorView qweight_v, qzeros_v, scales_v, g_idx_v, bias_v;
  io::GptqLinearViews views;           // points into this object (which is why it is handed out by pointer)
};

std::unique_ptr<RandomGptq> make_random_gptq(const GptqCase& c, uint32_t seed);

// y[m, n] = x . w^T (+ bias) (+ y0 when given) in double.
std::vector<double> gptq_reference_linear(const RandomGptq& g, const std::vector<float>& x, int64_t m,
                                          const std::vector<float>* y0);

}  // namespace xc2::test
