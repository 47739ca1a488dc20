// Typed view of a model folder's config.json (model-spec §2, §3).
// Standard InternLM-XComposer2 keys plus the xc2 extensions `vision_config` and `plora_scale`.
#pragma once

#include <string>

namespace xc2::io {

struct VisionConfig {        // HF CLIPVisionConfig key names; defaults = CLIP ViT-L/14-336
  int hidden_size = 1024;
  int intermediate_size = 4096;
  int num_hidden_layers = 24;
  int num_attention_heads = 16;
  int patch_size = 14;
  int image_size = 336;      // native pretraining size (position table grid = image_size / patch_size)
  double layer_norm_eps = 1e-5;
  std::string hidden_act = "quick_gelu";  // "quick_gelu" or "gelu" (exact)

  int head_dim() const { return hidden_size / num_attention_heads; }
  int native_grid() const { return image_size / patch_size; }
};

struct ModelConfig {
  std::string source;        // path of the config.json (for messages)
  std::string model_type;    // "internlmxcomposer2"
  std::string architecture;  // architectures[0], "InternLMXComposer2ForCausalLM"

  // InternLM2 decoder
  int hidden_size = 4096;
  int intermediate_size = 14336;
  int num_attention_heads = 32;
  int num_key_value_heads = 8;
  int num_hidden_layers = 32;
  int vocab_size = 92544;
  int max_position_embeddings = 32768;
  int max_length = 4096;     // prompt truncation length used by upstream chat()
  double rms_norm_eps = 1e-5;
  double rope_theta = 1e6;
  std::string rope_scaling_type;  // "" (none), "dynamic" or "linear"
  double rope_scaling_factor = 1.0;
  bool bias = false;
  bool tie_word_embeddings = false;
  int bos_token_id = 1, eos_token_id = 2, pad_token_id = 2;
  std::string torch_dtype = "bfloat16";

  // Vision side
  int img_size = 490;        // input resolution of the XC2 model (224 or 490 upstream)
  VisionConfig vision;
  double plora_scale = 1.0;

  int head_dim() const { return hidden_size / num_attention_heads; }
  int grid() const { return img_size / vision.patch_size; }  // patches per side
  int visual_tokens() const { return grid() * grid(); }      // per image: 256 (224 px), 1225 (490 px)
  // "XC2-VL-7B", "XC2-7B" for the two official shapes, else "custom (<img_size> px)".
  std::string variant() const;

  // Parses and validates (positive sizes, divisibility, known activation names, ...).
  // Errors: Error{NotFound} / Error{Io} / Error{InvalidArgument}, naming the file and the key.
  static ModelConfig load(const std::string& config_json_path);
  static ModelConfig parse(const std::string& json_text, const std::string& source_name);
};

}  // namespace xc2::io
