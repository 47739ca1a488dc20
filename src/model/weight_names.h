// Verbatim Hugging Face tensor names of InternLM-XComposer2 (model-spec §4), typo included
// ("pre_layrnorm"). The only place these strings are spelled.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io/config.h"

namespace xc2::model::names {

inline std::string layer(int i) { return "model.layers." + std::to_string(i) + "."; }
inline const char* tok_embeddings() { return "model.tok_embeddings.weight"; }
inline const char* final_norm() { return "model.norm.weight"; }
inline const char* output() { return "output.weight"; }
// Decoder linears with Partial LoRA, relative to layer(i): "attention.wqkv", "attention.wo",
// "feed_forward.w1", "feed_forward.w3", "feed_forward.w2"; + ".weight", ".Plora_A.weight", ".Plora_B.weight".
inline std::string plora_base(int i, const char* lin) { return layer(i) + lin; }
inline std::string plora_a(int i, const char* lin) { return plora_base(i, lin) + ".Plora_A.weight"; }
inline std::string plora_b(int i, const char* lin) { return plora_base(i, lin) + ".Plora_B.weight"; }
// Whether a checkpoint name belongs to a decoder layer, and whether it is a Partial-LoRA adapter (A or B).
inline bool in_decoder_layer(const std::string& name) { return name.rfind("model.layers.", 0) == 0; }
inline bool is_plora_adapter(const std::string& name) { return name.find(".Plora_") != std::string::npos; }

inline std::string vit(const std::string& rest) { return "vit.vision_tower.vision_model." + rest; }
inline std::string vit_layer(int l, const std::string& rest) {
  return vit("encoder.layers." + std::to_string(l) + "." + rest);
}
inline std::string vision_proj(int idx, const char* what) {
  return "vision_proj." + std::to_string(idx) + "." + what;
}

// One tensor of a checkpoint: its name, shape, and whether it is a norm's scale (a RMSNorm or LayerNorm
// weight, 1 at initialisation; everything else is a matrix, a bias or an embedding).
struct WeightSpec {
  std::string name;
  std::vector<int64_t> shape;
  bool norm_scale = false;
};

// Every tensor of a checkpoint with config `c`, LoRA rank `lora_rank` and projector width `proj_hidden`, in
// the upstream order: the decoder (embeddings, per layer 2 norms and 5 Partial-LoRA linears, final norm,
// output head), the ViT (position table already at the model's grid, `post_layernorm` included) and the
// projector. 942 tensors for XC2-VL-7B (models/README.md).
inline std::vector<WeightSpec> checkpoint_layout(const io::ModelConfig& c, int64_t lora_rank, int64_t proj_hidden) {
  const int64_t D = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
  const int64_t qkv = static_cast<int64_t>(c.num_attention_heads + 2 * c.num_key_value_heads) * c.head_dim();
  const int64_t Dv = c.vision.hidden_size, Iv = c.vision.intermediate_size, p = c.vision.patch_size, g = c.grid();
  std::vector<WeightSpec> t;
  t.push_back({tok_embeddings(), {V, D}});
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    t.push_back({layer(i) + "attention_norm.weight", {D}, true});
    t.push_back({layer(i) + "ffn_norm.weight", {D}, true});
    auto plora = [&](const char* lin, int64_t out, int64_t in) {
      t.push_back({plora_base(i, lin) + ".weight", {out, in}});
      t.push_back({plora_a(i, lin), {lora_rank, in}});
      t.push_back({plora_b(i, lin), {out, lora_rank}});
    };
    plora("attention.wqkv", qkv, D);
    plora("attention.wo", D, static_cast<int64_t>(c.num_attention_heads) * c.head_dim());
    plora("feed_forward.w1", I, D);
    plora("feed_forward.w3", I, D);
    plora("feed_forward.w2", D, I);
  }
  t.push_back({final_norm(), {D}, true});
  t.push_back({output(), {V, D}});
  t.push_back({vit("embeddings.class_embedding"), {Dv}});
  t.push_back({vit("embeddings.patch_embedding.weight"), {Dv, 3, p, p}});
  t.push_back({vit("embeddings.position_embedding.weight"), {g * g + 1, Dv}});
  t.push_back({vit("pre_layrnorm.weight"), {Dv}, true});
  t.push_back({vit("pre_layrnorm.bias"), {Dv}});
  for (int l = 0; l < c.vision.num_hidden_layers; ++l) {
    for (const char* ln : {"layer_norm1", "layer_norm2"}) {
      t.push_back({vit_layer(l, std::string(ln) + ".weight"), {Dv}, true});
      t.push_back({vit_layer(l, std::string(ln) + ".bias"), {Dv}});
    }
    for (const char* pr : {"q_proj", "k_proj", "v_proj", "out_proj"}) {
      t.push_back({vit_layer(l, std::string("self_attn.") + pr + ".weight"), {Dv, Dv}});
      t.push_back({vit_layer(l, std::string("self_attn.") + pr + ".bias"), {Dv}});
    }
    t.push_back({vit_layer(l, "mlp.fc1.weight"), {Iv, Dv}});
    t.push_back({vit_layer(l, "mlp.fc1.bias"), {Iv}});
    t.push_back({vit_layer(l, "mlp.fc2.weight"), {Dv, Iv}});
    t.push_back({vit_layer(l, "mlp.fc2.bias"), {Dv}});
  }
  t.push_back({vit("post_layernorm.weight"), {Dv}, true});
  t.push_back({vit("post_layernorm.bias"), {Dv}});
  t.push_back({vision_proj(0, "weight"), {proj_hidden, Dv}});
  t.push_back({vision_proj(0, "bias"), {proj_hidden}});
  t.push_back({vision_proj(2, "weight"), {D, proj_hidden}});
  t.push_back({vision_proj(2, "bias"), {D}});
  return t;
}

}  // namespace xc2::model::names
