// Verbatim Hugging Face tensor names of InternLM-XComposer2 (model-spec §4), typo included
// ("pre_layrnorm"). The only place these strings are spelled.
#pragma once

#include <string>

namespace xc2::model::names {

inline std::string layer(int i) { return "model.layers." + std::to_string(i) + "."; }
inline const char* tok_embeddings() { return "model.tok_embeddings.weight"; }
inline const char* final_norm() { return "model.norm.weight"; }
inline const char* output() { return "output.weight"; }
// Decoder linears with Partial LoRA, relative to layer(i): "attention.wqkv", "attention.wo",
// "feed_forward.w1", "feed_forward.w3", "feed_forward.w2"; + ".weight", ".Plora_A.weight", ".Plora_B.weight".
inline std::string plora_base(int i, const char* lin) { return layer(i) + lin; }

inline std::string vit(const std::string& rest) { return "vit.vision_tower.vision_model." + rest; }
inline std::string vit_layer(int l, const std::string& rest) {
  return vit("encoder.layers." + std::to_string(l) + "." + rest);
}
inline std::string vision_proj(int idx, const char* what) {
  return "vision_proj." + std::to_string(idx) + "." + what;
}

}  // namespace xc2::model::names
