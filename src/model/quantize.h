// `xc2 quantize`: round-to-nearest GPTQ quantization of the decoder linears (io/gptq.h layout, AutoGPTQ's
// "gptq" checkpoint format) so that tools that read GPTQ read xc2's output too.
// The rounding rule is tools/reference/gptq.py round_to_nearest(), bit for bit:
//   per (group, output row) in f32: xmin = min(0, min w), xmax = max(0, max w); sym: xmax = max(-xmin, xmax),
//   xmin = -xmax when xmin < 0; a group of zeros gets [-1, 1]; scale = f16((xmax - xmin) / maxq) (the smallest
//   f16 subnormal if that is 0); zero = 2^(bits-1) (sym) or clamp(round(-xmin / scale), 1, maxq) (asym: never 0,
//   whose stored zero - 1 does not fit); q = clamp(round(w / scale) + zero, 0, maxq); round half to even.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "io/checkpoint.h"

namespace xc2::model {

struct QuantizeOptions {
  int bits = 4;                 // 4 or 8
  int64_t group_size = 128;     // -1: per channel
  bool sym = false;
  int head_bits = 0;            // 4 or 8: also quantize the output head (lm_head) at these bits; 0: keep it 16-bit
  uint64_t max_shard_bytes = 5000000000ull;
};

// GPTQ tensors of one [n, k] weight (no act-order: g_idx[k] = k / group_size).
struct GptqPacked {
  std::vector<int32_t> qweight;  // [k * bits / 32, n]
  std::vector<int32_t> qzeros;   // [groups, ceil(n * bits / 32)]
  std::vector<uint16_t> scales;  // f16 [groups, n]
  std::vector<int32_t> g_idx;    // [k]
  int64_t groups = 0;
};
GptqPacked rtn_quantize(const io::TensorView& w, int bits, int64_t group_size, bool sym);

// Reads model_dir (safetensors or .bin), writes out_dir: the five decoder linears of every layer as GPTQ tensors
// (and the output head with head_bits), every other tensor verbatim, config.json with quantization_config, the other side files copied.
// progress(done, total, name) after each tensor.
void quantize_checkpoint(const std::string& model_dir, const std::string& out_dir, const QuantizeOptions& opts,
                         const std::function<void(size_t, size_t, const std::string&)>& progress);

}  // namespace xc2::model
