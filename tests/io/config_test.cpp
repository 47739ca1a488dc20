// config.json parsing and validation. Oracle: model-spec §2.1 (the XC2-7B file verbatim), §2.2 and
// §3 (extension keys and their defaults).
#include <string>

#include <gtest/gtest.h>

#include "core/mmap_file.h"
#include "io/config.h"
#include "io/io_test_util.h"
#include "support/test_util.h"

namespace xc2::io {
namespace {

// XC2-7B config.json as published (model-spec §2.1).
const char* kXc2_7b = R"({
  "architectures": ["InternLMXComposer2ForCausalLM"],
  "attn_implementation": "eager",
  "auto_map": {
    "AutoConfig": "configuration_internlm_xcomposer2.InternLMXcomposer2Config",
    "AutoModel": "modeling_internlm_xcomposer2.InternLMXComposer2ForCausalLM",
    "AutoModelForCausalLM": "modeling_internlm_xcomposer2.InternLMXComposer2ForCausalLM"
  },
  "bias": false,
  "bos_token_id": 1,
  "eos_token_id": 2,
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 14336,
  "max_length": 4096,
  "max_position_embeddings": 32768,
  "model_type": "internlmxcomposer2",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "pad_token_id": 2,
  "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 1.0, "type": "dynamic"},
  "rope_theta": 1000000,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.33.1",
  "use_cache": false,
  "vocab_size": 92544,
  "img_size": 224
})";

// kXc2_7b with `key` replaced by `value` (raw JSON), or removed when value is empty.
std::string with(const std::string& key, const std::string& value) {
  std::string s = kXc2_7b;
  const std::string k = "\"" + key + "\": ";
  const size_t at = s.find(k);
  EXPECT_NE(at, std::string::npos) << key;
  size_t end = at + k.size();
  int depth = 0;
  while (end < s.size() && !(depth == 0 && (s[end] == ',' || s[end] == '\n'))) {
    if (s[end] == '{' || s[end] == '[') ++depth;
    if (s[end] == '}' || s[end] == ']') --depth;
    ++end;
  }
  if (value.empty()) {
    if (s[end] == ',') return s.erase(at, end + 1 - at);
    const size_t comma = s.rfind(',', at);  // the last key: drop the comma before it
    return s.erase(comma, end - comma);
  }
  return s.replace(at, end - at, k + value);
}

// A config with extra top-level keys inserted before img_size.
std::string plus(const std::string& extra) {
  std::string s = kXc2_7b;
  return s.insert(s.find("\"img_size\""), extra + ",\n  ");
}

ModelConfig parse(const std::string& text) { return ModelConfig::parse(text, "config.json"); }

TEST(Config, Xc2_7bVerbatim) {
  const ModelConfig c = parse(kXc2_7b);
  EXPECT_EQ(c.source, "config.json");
  EXPECT_EQ(c.model_type, "internlmxcomposer2");
  EXPECT_EQ(c.architecture, "InternLMXComposer2ForCausalLM");
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.intermediate_size, 14336);
  EXPECT_EQ(c.num_attention_heads, 32);
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.num_hidden_layers, 32);
  EXPECT_EQ(c.vocab_size, 92544);
  EXPECT_EQ(c.max_position_embeddings, 32768);
  EXPECT_EQ(c.max_length, 4096);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c.rope_theta, 1e6);
  EXPECT_EQ(c.rope_scaling_type, "dynamic");
  EXPECT_DOUBLE_EQ(c.rope_scaling_factor, 1.0);
  EXPECT_FALSE(c.bias);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_id, 2);
  EXPECT_EQ(c.pad_token_id, 2);
  EXPECT_EQ(c.torch_dtype, "bfloat16");
  EXPECT_EQ(c.img_size, 224);
  EXPECT_EQ(c.head_dim(), 128);
  // Vision defaults: CLIP ViT-L/14-336 (model-spec §3).
  EXPECT_EQ(c.vision.hidden_size, 1024);
  EXPECT_EQ(c.vision.intermediate_size, 4096);
  EXPECT_EQ(c.vision.num_hidden_layers, 24);
  EXPECT_EQ(c.vision.num_attention_heads, 16);
  EXPECT_EQ(c.vision.patch_size, 14);
  EXPECT_EQ(c.vision.image_size, 336);
  EXPECT_DOUBLE_EQ(c.vision.layer_norm_eps, 1e-5);
  EXPECT_EQ(c.vision.hidden_act, "quick_gelu");
  EXPECT_EQ(c.vision.head_dim(), 64);
  EXPECT_EQ(c.vision.native_grid(), 24);
  EXPECT_DOUBLE_EQ(c.plora_scale, 1.0);
  EXPECT_EQ(c.grid(), 16);
  EXPECT_EQ(c.visual_tokens(), 256);
  EXPECT_EQ(c.variant(), "XC2-7B");
}

TEST(Config, VariantsAndExtensions) {
  // XC2-VL: no attn_implementation, img_size 490 (model-spec §2.2).
  std::string vl_text = with("attn_implementation", "");
  vl_text.replace(vl_text.find("\"img_size\": 224"), 15, "\"img_size\": 490");
  EXPECT_EQ(vl_text.find("attn_implementation"), std::string::npos);
  const ModelConfig vl = parse(vl_text);
  EXPECT_EQ(vl.img_size, 490);
  EXPECT_EQ(vl.visual_tokens(), 1225);
  EXPECT_EQ(vl.variant(), "XC2-VL-7B");
  // attn_implementation does not matter.
  EXPECT_EQ(parse(with("attn_implementation", "\"flash_attention_2\"")).variant(), "XC2-7B");
  EXPECT_EQ(parse(with("img_size", "448")).variant(), "custom (448 px)");
  EXPECT_EQ(parse(with("num_hidden_layers", "2")).variant(), "custom (224 px)");

  const ModelConfig t = parse(plus(R"("vision_config": {"hidden_size": 32, "intermediate_size": 64,
      "num_hidden_layers": 2, "num_attention_heads": 4, "patch_size": 14, "image_size": 42,
      "layer_norm_eps": 1e-6, "hidden_act": "gelu"}, "plora_scale": 2)"));
  EXPECT_EQ(t.vision.hidden_size, 32);
  EXPECT_EQ(t.vision.num_attention_heads, 4);
  EXPECT_EQ(t.vision.image_size, 42);
  EXPECT_EQ(t.vision.native_grid(), 3);
  EXPECT_DOUBLE_EQ(t.vision.layer_norm_eps, 1e-6);
  EXPECT_EQ(t.vision.hidden_act, "gelu");
  EXPECT_DOUBLE_EQ(t.plora_scale, 2.0);

  // Null and absent keys keep their defaults; num_key_value_heads defaults to the head count (HF).
  const ModelConfig n = parse(with("rope_scaling", "null"));
  EXPECT_EQ(n.rope_scaling_type, "");
  EXPECT_EQ(parse(with("pad_token_id", "null")).pad_token_id, 2);
  EXPECT_EQ(parse(with("num_key_value_heads", "")).num_key_value_heads, 32);
  EXPECT_EQ(parse(with("rope_scaling", R"({"rope_type": "linear", "factor": 2})")).rope_scaling_type, "linear");
  EXPECT_EQ(parse(R"({"model_type": "internlmxcomposer2", "img_size": 490})").variant(), "XC2-VL-7B");
}

TEST(Config, RejectsWrongModel) {
  EXPECT_XC2_ERROR(parse(with("model_type", "\"llama\"")), InvalidArgument,
                   "config.json model_type 'llama' is not an InternLM-XComposer2 model (expected 'internlmxcomposer2')");
  EXPECT_XC2_ERROR(parse(with("model_type", "")), InvalidArgument, "config.json has no model_type");
  EXPECT_XC2_ERROR(parse(with("model_type", "3")), InvalidArgument, "key 'model_type' must be a string (got 3)");
  EXPECT_XC2_ERROR(parse(with("img_size", "")), InvalidArgument, "config.json has no img_size");
  EXPECT_XC2_ERROR(parse("[1]"), InvalidArgument, "holds a JSON array");
  EXPECT_XC2_ERROR(parse("{\"model_type\": "), Io, "config.json is not valid JSON");
}

TEST(Config, RejectsBadValues) {
  struct Case { const char* key; const char* value; const char* message; };
  const Case cases[] = {
      {"hidden_size", "\"4096\"", "key 'hidden_size' must be an integer (got \"4096\")"},
      {"hidden_size", "4096.0", "key 'hidden_size' must be an integer (got 4096.0)"},
      {"hidden_size", "0", "key 'hidden_size' must be a positive integer (got 0)"},
      {"hidden_size", "-4096", "must be a positive integer (got -4096)"},
      {"hidden_size", "4294967296", "must be a positive integer"},
      {"hidden_size", "4100", "key 'hidden_size' 4100 is not divisible by num_attention_heads 32"},
      {"hidden_size", "2080", "odd head_dim 65"},
      {"num_key_value_heads", "5", "key 'num_attention_heads' 32 is not divisible by num_key_value_heads 5"},
      {"num_attention_heads", "0", "key 'num_attention_heads' must be a positive integer"},
      {"intermediate_size", "-1", "key 'intermediate_size'"},
      {"num_hidden_layers", "0", "key 'num_hidden_layers'"},
      {"vocab_size", "true", "key 'vocab_size' must be an integer (got true)"},
      {"max_position_embeddings", "0", "key 'max_position_embeddings'"},
      {"max_length", "-1", "key 'max_length'"},
      {"rms_norm_eps", "0", "key 'rms_norm_eps' must be a positive number (got 0)"},
      {"rms_norm_eps", "\"1e-5\"", "key 'rms_norm_eps' must be a number"},
      {"rope_theta", "-1", "key 'rope_theta' must be a positive number"},
      {"hidden_act", "\"gelu\"", "key 'hidden_act' 'gelu' is not supported (expected 'silu')"},
      {"hidden_act", "1", "key 'hidden_act' must be a string"},
      {"bias", "0", "key 'bias' must be true or false (got 0)"},
      {"tie_word_embeddings", "\"no\"", "key 'tie_word_embeddings' must be true or false"},
      {"eos_token_id", "-1", "key 'eos_token_id' must be a token id >= 0 (got -1)"},
      {"bos_token_id", "[1]", "key 'bos_token_id' must be a token id"},
      {"torch_dtype", "\"float64\"", "key 'torch_dtype' 'float64' is not supported"},
      {"rope_scaling", "\"dynamic\"", "key 'rope_scaling' must be an object or null"},
      {"rope_scaling", R"({"type": "yarn", "factor": 2.0})", "key 'rope_scaling.type' 'yarn' is not supported"},
      {"rope_scaling", R"({"factor": 2.0})", "key 'rope_scaling.type' is missing"},
      {"rope_scaling", R"({"type": "dynamic"})", "key 'rope_scaling.factor' is missing"},
      {"rope_scaling", R"({"type": "linear", "factor": 0.5})", "key 'rope_scaling.factor' must be >= 1.0 (got 0.5)"},
      {"rope_scaling", R"({"type": "linear", "factor": "2"})", "key 'rope_scaling.factor' must be a number"},
      {"img_size", "0", "key 'img_size' must be a positive integer"},
      {"img_size", "500", "key 'img_size' 500 is not divisible by vision_config.patch_size 14"},
      {"architectures", "\"X\"", "key 'architectures' must be a list of strings"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(c.key) + " = " + c.value);
    EXPECT_XC2_ERROR(parse(with(c.key, c.value)), InvalidArgument, c.message);
  }
  const Case vision[] = {
      {"vision_config", "[]", "key 'vision_config' must be an object"},
      {"vision_config", R"({"hidden_size": 100, "num_attention_heads": 16})",
       "key 'vision_config.hidden_size' 100 is not divisible by vision_config.num_attention_heads 16"},
      {"vision_config", R"({"hidden_size": 0})", "key 'vision_config.hidden_size' must be a positive integer"},
      {"vision_config", R"({"patch_size": 15})",
       "key 'vision_config.image_size' 336 is not divisible by vision_config.patch_size 15"},
      {"vision_config", R"({"hidden_act": "relu"})",
       "key 'vision_config.hidden_act' 'relu' is not supported (expected 'quick_gelu' or 'gelu')"},
      {"vision_config", R"({"layer_norm_eps": -1})", "key 'vision_config.layer_norm_eps' must be a positive number"},
      {"plora_scale", "\"1\"", "key 'plora_scale' must be a finite number"},
  };
  for (const Case& c : vision) {
    SCOPED_TRACE(c.value);
    EXPECT_XC2_ERROR(parse(plus("\"" + std::string(c.key) + "\": " + c.value)), InvalidArgument, c.message);
  }
}

TEST(Config, LoadFromFile) {
  test::TempDir d;
  EXPECT_XC2_ERROR(ModelConfig::load(d.file("config.json")), NotFound, "config.json");
  test::write_bytes(d.file("config.json"), with("model_type", "\"llama\""));
  EXPECT_XC2_ERROR(ModelConfig::load(d.file("config.json")), InvalidArgument,
                   d.file("config.json") + " model_type 'llama' is not an InternLM-XComposer2 model");
  test::write_bytes(d.file("config.json"), kXc2_7b);
  EXPECT_EQ(ModelConfig::load(d.file("config.json")).source, d.file("config.json"));
  EXPECT_XC2_ERROR(ModelConfig::load(d.path()), Io, "is a directory");

  int loaded = 0;
  for (const char* m : {"tiny-a", "tiny-a-bin", "tiny-b", "tiny-b-bin"}) {
    const std::string path = test::data_path(std::string("models/") + m + "/config.json");
    if (!file_exists(path)) continue;
    const ModelConfig c = ModelConfig::load(path);
    EXPECT_EQ(c.variant().rfind("custom (", 0), 0u) << m;
    EXPECT_EQ(c.img_size % c.vision.patch_size, 0) << m;
    ++loaded;
  }
  if (loaded == 0) GTEST_SKIP() << "no tiny model configs in tests/data/models";
}

}  // namespace
}  // namespace xc2::io
