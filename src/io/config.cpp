// config.json -> ModelConfig (model-spec §2, §3). Absent or null keys keep their defaults, except
// model_type and img_size, which are required. Every present key is type-checked; sizes must be
// positive and divide as the model needs (hidden % heads, heads % kv_heads, img_size % patch, ...).
// Keys the engine does not use (attn_implementation, auto_map, use_cache, ...) are ignored.
#include "io/config.h"

#include <climits>
#include <cmath>
#include <string>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "core/mmap_file.h"

namespace xc2::io {
namespace {

using json = nlohmann::json;

std::string show(const json& v) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > 40) s = s.substr(0, 37) + "...";
  return s;
}

// Typed access to one JSON object, with messages naming the file and the (dotted) key.
class Keys {
 public:
  Keys(const json& obj, std::string source, std::string prefix)
      : obj_(obj), source_(std::move(source)), prefix_(std::move(prefix)) {}

  const json* find(const char* key) const {
    const auto it = obj_.find(key);
    return it == obj_.end() || it->is_null() ? nullptr : &*it;
  }
  [[noreturn]] void fail(const char* key, const std::string& what) const {
    XC2_THROW(InvalidArgument, source_, " key '", prefix_, key, "' ", what);
  }
  void positive_int(const char* key, int* out) const {
    const json* v = find(key);
    if (v == nullptr) return;
    if (!v->is_number_integer()) fail(key, "must be an integer (got " + show(*v) + ")");
    const bool ok = v->is_number_unsigned()
                        ? v->get<uint64_t>() >= 1 && v->get<uint64_t>() <= static_cast<uint64_t>(INT_MAX)
                        : v->get<int64_t>() >= 1 && v->get<int64_t>() <= INT_MAX;
    if (!ok) fail(key, "must be a positive integer (got " + show(*v) + ")");
    *out = static_cast<int>(v->get<int64_t>());
  }
  void token_id(const char* key, int* out) const {
    const json* v = find(key);
    if (v == nullptr) return;
    if (!v->is_number_integer() || (!v->is_number_unsigned() && v->get<int64_t>() < 0) ||
        (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT_MAX))) {
      fail(key, "must be a token id >= 0 (got " + show(*v) + ")");
    }
    *out = static_cast<int>(v->get<int64_t>());
  }
  void positive_number(const char* key, double* out) const {
    const json* v = find(key);
    if (v == nullptr) return;
    if (!v->is_number()) fail(key, "must be a number (got " + show(*v) + ")");
    const double d = v->get<double>();
    if (!(d > 0) || !std::isfinite(d)) fail(key, "must be a positive number (got " + show(*v) + ")");
    *out = d;
  }
  void finite_number(const char* key, double* out) const {
    const json* v = find(key);
    if (v == nullptr) return;
    if (!v->is_number() || !std::isfinite(v->get<double>())) fail(key, "must be a finite number (got " + show(*v) + ")");
    *out = v->get<double>();
  }
  void boolean(const char* key, bool* out) const {
    const json* v = find(key);
    if (v == nullptr) return;
    if (!v->is_boolean()) fail(key, "must be true or false (got " + show(*v) + ")");
    *out = v->get<bool>();
  }
  bool string(const char* key, std::string* out) const {
    const json* v = find(key);
    if (v == nullptr) return false;
    if (!v->is_string()) fail(key, "must be a string (got " + show(*v) + ")");
    *out = v->get<std::string>();
    return true;
  }

 private:
  const json& obj_;
  std::string source_, prefix_;
};

void parse_vision(const json& j, const std::string& source, VisionConfig* vc) {
  const Keys k(j, source, "vision_config.");
  k.positive_int("hidden_size", &vc->hidden_size);
  k.positive_int("intermediate_size", &vc->intermediate_size);
  k.positive_int("num_hidden_layers", &vc->num_hidden_layers);
  k.positive_int("num_attention_heads", &vc->num_attention_heads);
  k.positive_int("patch_size", &vc->patch_size);
  k.positive_int("image_size", &vc->image_size);
  k.positive_number("layer_norm_eps", &vc->layer_norm_eps);
  k.string("hidden_act", &vc->hidden_act);
  if (vc->hidden_act != "quick_gelu" && vc->hidden_act != "gelu") {
    k.fail("hidden_act", "'" + vc->hidden_act + "' is not supported (expected 'quick_gelu' or 'gelu')");
  }
  if (vc->hidden_size % vc->num_attention_heads != 0) {
    k.fail("hidden_size", std::to_string(vc->hidden_size) + " is not divisible by vision_config.num_attention_heads " +
                              std::to_string(vc->num_attention_heads));
  }
  if (vc->image_size % vc->patch_size != 0) {
    k.fail("image_size", std::to_string(vc->image_size) + " is not divisible by vision_config.patch_size " +
                             std::to_string(vc->patch_size));
  }
}

}  // namespace

std::string ModelConfig::variant() const {
  if (hidden_size == 4096 && num_hidden_layers == 32) {
    if (img_size == 490) return "XC2-VL-7B";
    if (img_size == 224) return "XC2-7B";
  }
  return "custom (" + std::to_string(img_size) + " px)";
}

ModelConfig ModelConfig::load(const std::string& config_json_path) {
  return parse(read_file(config_json_path), config_json_path);
}

ModelConfig ModelConfig::parse(const std::string& json_text, const std::string& source_name) {
  const json j = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) XC2_THROW(Io, source_name, " is not valid JSON");
  if (!j.is_object()) XC2_THROW(InvalidArgument, source_name, " holds a JSON ", j.type_name(), ", expected an object");
  const Keys k(j, source_name, "");

  ModelConfig c;
  c.source = source_name;
  if (!k.string("model_type", &c.model_type)) {
    XC2_THROW(InvalidArgument, source_name, " has no model_type (expected 'internlmxcomposer2')");
  }
  if (c.model_type != "internlmxcomposer2") {
    XC2_THROW(InvalidArgument, source_name, " model_type '", c.model_type,
              "' is not an InternLM-XComposer2 model (expected 'internlmxcomposer2')");
  }
  if (const json* a = k.find("architectures")) {
    if (!a->is_array() || (!a->empty() && !(*a)[0].is_string())) k.fail("architectures", "must be a list of strings");
    if (!a->empty()) c.architecture = (*a)[0].get<std::string>();
  }

  k.positive_int("hidden_size", &c.hidden_size);
  k.positive_int("intermediate_size", &c.intermediate_size);
  k.positive_int("num_attention_heads", &c.num_attention_heads);
  c.num_key_value_heads = c.num_attention_heads;  // HF InternLM2Config: absent means plain multi-head attention
  k.positive_int("num_key_value_heads", &c.num_key_value_heads);
  k.positive_int("num_hidden_layers", &c.num_hidden_layers);
  k.positive_int("vocab_size", &c.vocab_size);
  k.positive_int("max_position_embeddings", &c.max_position_embeddings);
  k.positive_int("max_length", &c.max_length);
  k.positive_number("rms_norm_eps", &c.rms_norm_eps);
  k.positive_number("rope_theta", &c.rope_theta);
  k.boolean("bias", &c.bias);
  k.boolean("tie_word_embeddings", &c.tie_word_embeddings);
  k.token_id("bos_token_id", &c.bos_token_id);
  k.token_id("eos_token_id", &c.eos_token_id);
  k.token_id("pad_token_id", &c.pad_token_id);
  if (k.string("torch_dtype", &c.torch_dtype) && c.torch_dtype != "bfloat16" && c.torch_dtype != "float16" &&
      c.torch_dtype != "float32") {
    k.fail("torch_dtype", "'" + c.torch_dtype + "' is not supported (expected 'bfloat16', 'float16' or 'float32')");
  }
  std::string act = "silu";
  if (k.string("hidden_act", &act) && act != "silu") k.fail("hidden_act", "'" + act + "' is not supported (expected 'silu')");

  if (const json* rs = k.find("rope_scaling")) {
    if (!rs->is_object()) k.fail("rope_scaling", "must be an object or null (got " + show(*rs) + ")");
    const Keys r(*rs, source_name, "rope_scaling.");
    if (!r.string("type", &c.rope_scaling_type) && !r.string("rope_type", &c.rope_scaling_type)) {
      r.fail("type", "is missing");
    }
    if (c.rope_scaling_type != "dynamic" && c.rope_scaling_type != "linear") {
      r.fail("type", "'" + c.rope_scaling_type + "' is not supported (expected 'dynamic', 'linear' or a null rope_scaling)");
    }
    if (r.find("factor") == nullptr) r.fail("factor", "is missing");
    r.positive_number("factor", &c.rope_scaling_factor);
    if (c.rope_scaling_factor < 1.0) r.fail("factor", "must be >= 1.0 (got " + show((*rs)["factor"]) + ")");
  }

  if (k.find("img_size") == nullptr) {
    XC2_THROW(InvalidArgument, source_name, " has no img_size (the XComposer2 input resolution, 224 or 490)");
  }
  k.positive_int("img_size", &c.img_size);
  if (const json* v = k.find("vision_config")) {
    if (!v->is_object()) k.fail("vision_config", "must be an object (got " + show(*v) + ")");
    parse_vision(*v, source_name, &c.vision);
  }
  k.finite_number("plora_scale", &c.plora_scale);

  if (c.hidden_size % c.num_attention_heads != 0) {
    k.fail("hidden_size", std::to_string(c.hidden_size) + " is not divisible by num_attention_heads " +
                              std::to_string(c.num_attention_heads));
  }
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    k.fail("num_attention_heads", std::to_string(c.num_attention_heads) + " is not divisible by num_key_value_heads " +
                                      std::to_string(c.num_key_value_heads));
  }
  if (c.head_dim() % 2 != 0) {
    k.fail("hidden_size", "gives an odd head_dim " + std::to_string(c.head_dim()) + " (rotary embeddings need it even)");
  }
  if (c.img_size % c.vision.patch_size != 0) {
    k.fail("img_size", std::to_string(c.img_size) + " is not divisible by vision_config.patch_size " +
                           std::to_string(c.vision.patch_size));
  }
  return c;
}

}  // namespace xc2::io
