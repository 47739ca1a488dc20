// xc2 info: what a model folder holds (variant, dimensions, dtype, tensors, visual tokens per image);
// --check verifies every expected tensor and shape.
#include <cstdio>
#include <iostream>
#include <sstream>

#include "cli_common.h"

namespace xc2::cli {
namespace {

struct InfoFlags {
  CommonOptions common;
  bool check = false;
  std::string format = "text";
};

std::string human_bytes(int64_t b) {
  char buf[32];
  const double v = static_cast<double>(b);
  if (v >= 1e9) std::snprintf(buf, sizeof(buf), "%.2f GB", v / 1e9);
  else if (v >= 1e6) std::snprintf(buf, sizeof(buf), "%.2f MB", v / 1e6);
  else std::snprintf(buf, sizeof(buf), "%.1f kB", v / 1e3);
  return buf;
}

}  // namespace

Handler register_info(CLI::App& app) {
  auto f = std::make_shared<InfoFlags>();
  CLI::App* cmd = app.add_subcommand("info", "Describe a model folder; --check verifies every tensor");
  cmd->footer(R"(Examples:
  xc2 info                                   # the bundled demo model
  xc2 info --model internlm-xcomposer2-vl-7b --check
  xc2 info --model internlm-xcomposer2-7b --format json)");
  add_common_options(cmd, f->common);
  cmd->add_flag("--check", f->check, "Verify every expected tensor name and shape (strict load, no compute)");
  cmd->add_option("--format", f->format, "Output: text or json")->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  return [f]() -> int {
    apply_log_level(f->common);
    const std::string dir = resolve_model_dir(f->common);
    ModelInfo m;
    try {
      m = inspect_model(dir, f->check);
    } catch (const Error& e) {
      throw ModelLoadError(e.what());
    }
    if (f->format == "json") {
      std::ostringstream os;
      os << "{\"model_dir\": " << json_escape(m.model_dir) << ", \"variant\": " << json_escape(m.variant)
         << ", \"format\": " << json_escape(m.format) << ", \"dtype\": " << json_escape(m.dtype)
         << ", \"files\": " << m.n_files << ", \"tensors\": " << m.n_tensors << ", \"bytes\": " << m.n_bytes
         << ", \"hidden_size\": " << m.hidden_size << ", \"intermediate_size\": " << m.intermediate_size
         << ", \"layers\": " << m.n_layers << ", \"heads\": " << m.n_heads << ", \"kv_heads\": " << m.n_kv_heads
         << ", \"vocab_size\": " << m.vocab_size << ", \"max_length\": " << m.max_length
         << ", \"max_position_embeddings\": " << m.max_position_embeddings << ", \"rope_theta\": " << m.rope_theta
         << ", \"img_size\": " << m.img_size << ", \"patch_size\": " << m.patch_size
         << ", \"visual_tokens\": " << m.visual_tokens << ", \"vision_hidden\": " << m.vision_hidden
         << ", \"vision_layers\": " << m.vision_layers << ", \"vision_heads\": " << m.vision_heads
         << ", \"lora_rank\": " << m.lora_rank << ", \"plora_scale\": " << m.plora_scale
         << ", \"quant_bits\": " << m.quant_bits << ", \"quant_group_size\": " << m.quant_group_size
         << ", \"quant_head_bits\": " << m.quant_head_bits
         << ", \"quant_format\": " << json_escape(m.quant_bits ? "gptq" : "") << ", \"decode_bytes_per_token\": "
         << m.decode_bytes << ", \"checked\": " << (f->check ? "true" : "false") << "}";
      os << "\n";
      write_stdout(os.str());
      return kExitOk;
    }
    std::ostringstream os;
    os << "model folder   " << m.model_dir << "\n"
              << "variant        " << m.variant << "\n"
              << "weights        " << m.format << ", " << m.n_files << " file" << (m.n_files == 1 ? "" : "s") << ", "
              << m.n_tensors << " tensors, " << human_bytes(m.n_bytes) << ", dtype " << m.dtype << "\n"
              << "decoder        InternLM2, " << m.n_layers << " layers, hidden " << m.hidden_size << ", ffn "
              << m.intermediate_size << ", heads " << m.n_heads << " (kv " << m.n_kv_heads << ", head dim "
              << (m.n_heads ? m.hidden_size / m.n_heads : 0) << "), vocab " << m.vocab_size << "\n"
              << "context        max_length " << m.max_length << ", max_position_embeddings "
              << m.max_position_embeddings << ", rope theta " << m.rope_theta << "\n"
              << "vision         CLIP ViT, " << m.vision_layers << " layers, hidden " << m.vision_hidden << ", heads "
              << m.vision_heads << ", patch " << m.patch_size << "; " << m.img_size << " px -> " << m.visual_tokens
              << " visual tokens per image\n"
              << "partial lora   rank " << m.lora_rank << ", scale " << m.plora_scale
              << " (wqkv, wo, w1, w3, w2 on image rows)\n";
    if (m.quant_bits)
      os << "quantized      GPTQ " << m.quant_bits << "-bit, group size " << m.quant_group_size
         << (m.quant_group_size == -1 ? " (per channel)" : "") << (m.quant_sym ? ", sym" : ", asym")
         << (m.quant_desc_act ? ", act-order" : "")
         << (m.quant_head_bits ? "; decoder linears and the output head (" + std::to_string(m.quant_head_bits) + "-bit)"
                               : std::string("; decoder linears only"))
         << "\n";
    os << "decode reads   " << human_bytes(static_cast<uint64_t>(m.decode_bytes)) << " of weights per token\n";
    if (f->check) os << "check          ok: every expected tensor present with the expected shape; tokenizer.model loads\n";
    write_stdout(os.str());
    return kExitOk;
  };
}

}  // namespace xc2::cli
