// The synthetic checkpoint of `xc2 bench`: the XC2-VL-7B dimensions with few layers, in a folder Engine::load
// takes as it is:
//   config.json        the official config with the layer counts and image size changed;
//   tokenizer.model    a SentencePiece unigram model covering the whole vocabulary: <unk> <s> </s>, then
//                      "▁w<id>" for every other id, the chat markers last ("w1000 w8919" is ids 1000, 8919);
//   model.safetensors  every tensor of model::names::checkpoint_layout() in bf16, norm scales 1, the rest
//                      uniform in [-0.02, 0.02), streamed through io::write_safetensors_shards.
// And the GPTQ copies --quant measures (ensure_quantized: xc2 quantize's rule, next to the checkpoint).
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <unordered_set>

#include "bench_internal.h"
#include "core/check.h"
#include "core/half.h"
#include "core/mmap_file.h"
#include "io/checkpoint.h"
#include "model/weight_names.h"

namespace xc2::bench {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kLoraRank = 256;  // XC2-VL-7B's Plora_A rows

std::string synthetic_config(int n_layers, int n_vit_layers, int img_size) {
  std::ostringstream c;
  c << "{\n  \"architectures\": [\"InternLMXComposer2ForCausalLM\"],\n  \"bias\": false,\n"
    << "  \"bos_token_id\": 1,\n  \"eos_token_id\": 2,\n  \"pad_token_id\": 2,\n  \"hidden_act\": \"silu\",\n"
    << "  \"hidden_size\": 4096,\n  \"intermediate_size\": 14336,\n  \"max_length\": 4096,\n"
    << "  \"max_position_embeddings\": 32768,\n  \"model_type\": \"internlmxcomposer2\",\n"
    << "  \"num_attention_heads\": 32,\n  \"num_hidden_layers\": " << n_layers << ",\n"
    << "  \"num_key_value_heads\": 8,\n  \"rms_norm_eps\": 1e-05,\n"
    << "  \"rope_scaling\": {\"factor\": 1.0, \"type\": \"dynamic\"},\n  \"rope_theta\": 1000000,\n"
    << "  \"tie_word_embeddings\": false,\n  \"torch_dtype\": \"bfloat16\",\n  \"use_cache\": false,\n"
    << "  \"vocab_size\": 92544,\n  \"img_size\": " << img_size << ",\n"
    << "  \"vision_config\": {\"hidden_size\": 1024, \"intermediate_size\": 4096, \"num_hidden_layers\": "
    << n_vit_layers << ", \"num_attention_heads\": 16, \"patch_size\": 14, \"image_size\": 336, "
    << "\"layer_norm_eps\": 1e-05, \"hidden_act\": \"quick_gelu\"},\n  \"plora_scale\": 1.0\n}\n";
  return c.str();
}

// ---- tokenizer.model: a serialized sentencepiece.ModelProto (protobuf wire format) ----

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}
void put_uint(std::string& out, int field, uint64_t v) {
  put_varint(out, static_cast<uint64_t>(field) << 3);  // wire type 0: varint
  put_varint(out, v);
}
void put_bytes(std::string& out, int field, const std::string& bytes) {
  put_varint(out, static_cast<uint64_t>(field) << 3 | 2);  // wire type 2: length-delimited
  put_varint(out, bytes.size());
  out += bytes;
}
void put_float(std::string& out, int field, float f) {
  put_varint(out, static_cast<uint64_t>(field) << 3 | 5);  // wire type 5: 32-bit
  uint32_t u = 0;
  std::memcpy(&u, &f, 4);
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(u >> (8 * i)));
}

std::string synthetic_tokenizer(int vocab) {
  enum PieceType { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4 };  // ModelProto.SentencePiece.Type
  std::string model;
  auto piece = [&](const std::string& text, int type) {
    std::string p;
    put_bytes(p, 1, text);     // piece
    put_float(p, 2, -1.0f);    // score: every piece alike, so a word's own piece wins over any split
    put_uint(p, 3, static_cast<uint64_t>(type));
    put_bytes(model, 1, p);    // ModelProto.pieces
  };
  piece("<unk>", kUnknown);
  piece("<s>", kControl);
  piece("</s>", kControl);
  for (int id = 3; id < vocab - 2; ++id) piece("\xe2\x96\x81w" + std::to_string(id), kNormal);
  piece("[UNUSED_TOKEN_145]", kUserDefined);  // the chat markers, as in the official vocabulary's last ids
  piece("[UNUSED_TOKEN_146]", kUserDefined);
  std::string trainer;
  put_uint(trainer, 3, 1);  // model_type: UNIGRAM
  put_uint(trainer, 4, static_cast<uint64_t>(vocab));
  put_bytes(model, 2, trainer);
  std::string normalizer;
  put_bytes(normalizer, 1, "identity");
  put_uint(normalizer, 3, 1);  // add_dummy_prefix
  put_uint(normalizer, 4, 1);  // remove_extra_whitespaces
  put_uint(normalizer, 5, 1);  // escape_whitespaces
  put_bytes(model, 3, normalizer);
  return model;
}

// ---- files ----

void write_file_atomic(const std::string& path, const std::string& bytes) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    XC2_CHECK(f.good(), Io, "cannot write '", tmp, "'");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  XC2_CHECK(!ec, Io, "cannot rename '", tmp, "': ", ec.message());
}

// The weights, generated tensor by tensor while the file is written (never all in memory).
void write_synthetic_weights(const std::string& dir, const io::ModelConfig& c) {
  std::vector<io::TensorView> views;
  std::unordered_set<std::string> norm_scales;
  for (const model::names::WeightSpec& w : model::names::checkpoint_layout(c, kLoraRank, c.hidden_size)) {
    io::TensorView v;
    v.name = w.name;
    v.dtype = DType::BF16;
    v.shape = w.shape;
    v.nbytes = static_cast<size_t>(v.numel()) * dtype_size(v.dtype);
    views.push_back(std::move(v));
    if (w.norm_scale) norm_scales.insert(w.name);
  }
  uint64_t state = 0x9e3779b97f4a7c15ull;
  std::vector<uint16_t> buf;
  io::write_safetensors_shards(views, dir, 0, [&](const io::TensorView& t, const io::WriteBytes& write) {
    const bool ones = norm_scales.count(t.name) > 0;
    for (int64_t left = t.numel(); left > 0;) {
      const int64_t n = std::min<int64_t>(left, 1 << 22);
      buf.resize(static_cast<size_t>(n));
      if (ones) {
        std::fill(buf.begin(), buf.end(), f32_to_bf16(1.0f));
      } else {
        for (uint16_t& x : buf) {
          state ^= state << 13;
          state ^= state >> 7;
          state ^= state << 17;
          const float u = static_cast<float>(state >> 40) / static_cast<float>(1ull << 24);  // [0, 1)
          x = f32_to_bf16((2 * u - 1) * 0.02f);
        }
      }
      write(buf.data(), static_cast<size_t>(n) * sizeof(uint16_t));
      left -= n;
    }
  });
}

}  // namespace

std::string ensure_synthetic(const BenchOptions& o) {
  const std::string dir = o.work_dir + "/xc2-vl-7b-synthetic-L" + std::to_string(o.decoder_layers) + "-V" +
                          std::to_string(o.vision_layers) + "-" + std::to_string(o.img_size);
  const std::string config = path_join(dir, "config.json"), tokenizer = path_join(dir, "tokenizer.model");
  const std::string weights = path_join(dir, "model.safetensors");
  if (file_exists(config) && file_exists(tokenizer) && file_exists(weights)) return dir;
  std::error_code ec;
  fs::create_directories(dir, ec);
  XC2_CHECK(is_directory(dir), Io, "cannot create '", dir, "'");
  const std::string config_text = synthetic_config(o.decoder_layers, o.vision_layers, o.img_size);
  const io::ModelConfig c = io::ModelConfig::parse(config_text, config);
  if (!file_exists(config)) write_file_atomic(config, config_text);
  if (!file_exists(tokenizer)) write_file_atomic(tokenizer, synthetic_tokenizer(c.vocab_size));
  if (!file_exists(weights)) {
    std::cerr << "xc2 bench: writing a synthetic checkpoint with the XC2-VL-7B dimensions (" << o.decoder_layers
              << " decoder layers, " << o.vision_layers << " ViT layers) to " << dir << " ...\n";
    write_synthetic_weights(dir, c);
  }
  return dir;
}

std::string ensure_quantized(const BenchOptions& o, const std::string& dir, int bits) {
  const std::string qdir = dir + "-W" + std::to_string(bits) + "g" + std::to_string(o.quant_group_size) +
                           (o.quant_head_bits ? "h" + std::to_string(o.quant_head_bits) : "");
  if (!file_exists(path_join(qdir, "config.json"))) {
    std::cerr << "xc2 bench: quantizing to " << bits << " bits (group size " << o.quant_group_size << ") into " << qdir
              << " ...\n";
    quantize_model(dir, qdir, bits, o.quant_group_size, false, o.quant_head_bits, 5000000000ull, {});
  }
  return qdir;
}

std::string quant_tag(const BenchOptions& o, int bits) {
  return "W" + std::to_string(bits) + (o.quant_head_bits ? " head " + std::to_string(o.quant_head_bits) : "");
}

}  // namespace xc2::bench
