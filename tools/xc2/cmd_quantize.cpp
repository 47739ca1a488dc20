// xc2 quantize: round-to-nearest GPTQ quantization of a model folder's decoder linears (model/quantize.h).
#include <iostream>

#include "cli_common.h"

namespace xc2::cli {
namespace {

struct QuantizeFlags {
  CommonOptions common;
  std::string out;
  int bits = 4;
  int64_t group_size = 128;
  bool sym = false;
  int head_bits = 0;
};

}  // namespace

Handler register_quantize(CLI::App& app) {
  auto f = std::make_shared<QuantizeFlags>();
  CLI::App* cmd = app.add_subcommand("quantize", "Quantize the decoder linears to 4 or 8 bits (GPTQ layout)");
  cmd->footer(R"(Examples:
  xc2 quantize --model internlm-xcomposer2-vl-7b --out xc2-vl-7b-w4 --bits 4 --group-size 128
  xc2 quantize --model models/xc2-shapes --out /tmp/xc2-shapes-w8 --bits 8 --group-size -1 --sym
  xc2 quantize --model internlm-xcomposer2-vl-7b --out xc2-vl-7b-w4h8 --bits 4 --head-bits 8

Round to nearest, per group of input columns, into the checkpoint layout AutoGPTQ writes
(qweight, qzeros, scales, g_idx; quantization_config in config.json). The five linears of every
decoder layer are quantized; PLoRA, ViT, projector, embeddings, norms and output head are copied.
--head-bits quantizes the output head as well (0.76 GB of bf16 read per token at the 7B size: 8 bits
halve it); it is written as quantization_config "lm_head": true, with a GPTQModel "dynamic" rule
for its bits when they differ from --bits.)");
  add_common_options(cmd, f->common);
  cmd->add_option("-o,--out", f->out, "Output folder (created if missing; must not hold safetensors)")
      ->required()
      ->type_name("DIR");
  cmd->add_option("--bits", f->bits, "4 or 8")->check(CLI::IsMember({4, 8}))->capture_default_str();
  cmd->add_option("--group-size", f->group_size, "Input columns per scale; -1: one per output row")
      ->capture_default_str();
  cmd->add_flag("--sym", f->sym, "Symmetric (zero point 2^(bits-1)) instead of asymmetric");
  cmd->add_option("--head-bits", f->head_bits, "Also quantize the output head: 4 or 8 bits (0: keep it 16-bit)")
      ->check(CLI::IsMember({0, 4, 8}))
      ->capture_default_str();
  return [f]() -> int {
    apply_log_level(f->common);
    if (f->group_size == 0 || f->group_size < -1) throw UsageError("--group-size must be positive or -1");
    const std::string dir = resolve_model_dir(f->common);
    const bool show = !f->common.quiet;
    bool progress_shown = false;
    try {
      library_write([&] {
        quantize_model(dir, f->out, f->bits, f->group_size, f->sym, f->head_bits, 5000000000ull, [&](size_t done, size_t total) {
          if (show && (done == total || done % 16 == 0)) {
            std::cerr << "\rxc2: quantize " << done << "/" << total << " tensors" << std::flush;
            progress_shown = true;
          }
        });
      });
    } catch (...) {
      if (progress_shown) std::cerr << "\n";  // the error on a line of its own
      throw;
    }
    if (show) std::cerr << "\nxc2: wrote " << f->out << "\n";
    return kExitOk;
  };
}

}  // namespace xc2::cli
