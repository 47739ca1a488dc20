// GPTQ checkpoints as AutoGPTQ and Transformers write them (checkpoint_format "gptq", the "old" packing).
// For a Linear(in = k, out = n), p = 32 / bits values per int32 word, G = 1 (group_size -1) or ceil(k / group_size):
//   <base>.qweight  I32 [k / p, n]        value k of column n: word k / p, bits (k % p) * bits, little end first
//   <base>.qzeros   I32 [G, ceil(n / p)]  zero of (group, column n): word n / p, bits (n % p) * bits, stored - 1
//   <base>.scales   F16 [G, n]            (BF16 and F32 are read too)
//   <base>.g_idx    I32 [k]               group of input row k (act-order: any permutation of the groups);
//                                         optional, k / group_size when absent
//   <base>.bias     [n]                   optional
//   w[n, k] = scales[g, n] * (q[k, n] - (stored_zero[g, n] + 1)),  g = g_idx[k]
// Settings: config.json "quantization_config" (quant_method "gptq"), else quantize_config.json.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "io/checkpoint.h"
#include "io/weight_store.h"

namespace xc2::io {

struct GptqConfig {
  int bits = 4;              // 4 or 8
  int64_t group_size = 128;  // -1: one group over the input dimension (per channel)
  bool desc_act = false;     // act-order (g_idx permutes the groups)
  bool sym = true;
  // The output head ("output", the lm_head): quantized when "lm_head" is true (AutoGPTQ / GPTQModel), with bits
  // and group size from a GPTQModel "dynamic" rule matching "output" when there is one ({"+:^output$": {"bits":
  // 8}} is what `xc2 quantize --head-bits 8` writes for a 4-bit folder), else the folder's.
  bool lm_head = false;
  int head_bits = 0;            // set when lm_head
  int64_t head_group_size = 0;  // set when lm_head
  std::string source;        // the file the settings came from (for messages)

  // The settings of the output head's tensors (lm_head only).
  GptqConfig head() const {
    GptqConfig h = *this;
    h.bits = head_bits;
    h.group_size = head_group_size;
    return h;
  }
};

// The GPTQ settings of a model folder; nullopt for a 16-bit folder. Error{Unsupported} / Error{Io} naming the
// file for settings xc2 cannot run (bits other than 4 and 8, another quant_method or checkpoint_format, a
// group size of 0 or below -1, ...).
std::optional<GptqConfig> read_gptq_config(const std::string& model_dir);
std::optional<GptqConfig> parse_gptq_config(const std::string& config_json_text, const std::string& quantize_config_text,
                                            const std::string& source);

// Number of quantization groups over k input rows.
int64_t gptq_groups(int64_t k, int64_t group_size);

// The tensors of one quantized linear [n, k], fetched from `ws` and checked: dtypes, every shape against n, k
// and the config, g_idx values in [0, G). Errors name the tensor (ShapeMismatch, or NotFound when qweight,
// qzeros or scales are missing).
struct GptqLinearViews {
  std::string base;  // "model.layers.0.attention.wqkv" (or "...wqkv.linear")
  const TensorView* qweight = nullptr;
  const TensorView* qzeros = nullptr;
  const TensorView* scales = nullptr;
  const TensorView* g_idx = nullptr;  // may be null
  const TensorView* bias = nullptr;   // may be null
  int64_t n = 0, k = 0, groups = 0;
  int bits = 0;
  int64_t group_size = 0;  // as configured (-1 kept)
};
// `linear` is the 16-bit weight's prefix ("model.layers.0.attention.wqkv"); its GPTQ tensors are read under that
// prefix or under `<linear>.linear` (the official 4-bit releases' module name); views.base is the one found.
GptqLinearViews get_gptq_linear(WeightStore& ws, const std::string& linear, int64_t n, int64_t k,
                                const GptqConfig& cfg);

// Whether a checkpoint holds a GPTQ tensor set for `base` (its qweight).
bool has_gptq_linear(const Checkpoint& ckpt, const std::string& base);

}  // namespace xc2::io
