// Random GPTQ linears for the quantized-linear tests (the CPU kernels, the io layer, CUDA): the raw tensors exactly
// as a checkpoint holds them (qweight, qzeros with the stored zero - 1, f16 scales, g_idx, bias) and the weights
// they stand for, decoded in double from the format's own formula. The io views on top of them:
// tests/model/gptq_test_util.h.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

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

struct GptqRaw {
  GptqCase c;
  int64_t groups = 0;
  std::vector<int32_t> qweight, qzeros, g_idx;  // [k / (32 / bits), n], [groups, ceil(n / (32 / bits))], [k]
  std::vector<uint16_t> scales, bias;           // f16: [groups, n], [n]
  std::vector<double> w;                        // [n][k], input column order: scale * (q - zero)
};

// Fills *d with a random linear of case c (the same seed, the same tensors).
void fill_random_gptq(const GptqCase& c, uint32_t seed, GptqRaw* d);

}  // namespace xc2::test
