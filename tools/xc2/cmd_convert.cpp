// xc2 convert: rewrite a model folder (PyTorch .bin or safetensors) as sharded safetensors with the
// same tensor names and bytes, copying config and tokenizer files.
#include <iostream>

#include "cli_common.h"

namespace xc2::cli {
namespace {

struct ConvertFlags {
  CommonOptions common;
  std::string out;
  std::string shard_size = "5GB";
};

uint64_t parse_size(const std::string& s) {
  size_t pos = 0;
  double v = 0;
  try {
    v = std::stod(s, &pos);
  } catch (const std::exception&) {
    throw UsageError("--shard-size '" + s + "' is not a size (e.g. 5GB, 500MB)");
  }
  std::string unit = s.substr(pos);
  for (auto& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  double mul = 1;
  if (unit == "" || unit == "B") mul = 1;
  else if (unit == "KB" || unit == "K") mul = 1e3;
  else if (unit == "MB" || unit == "M") mul = 1e6;
  else if (unit == "GB" || unit == "G") mul = 1e9;
  else if (unit == "KIB") mul = 1024.0;
  else if (unit == "MIB") mul = 1024.0 * 1024;
  else if (unit == "GIB") mul = 1024.0 * 1024 * 1024;
  else throw UsageError("--shard-size '" + s + "': unknown unit '" + unit + "'");
  if (!(v > 0)) throw UsageError("--shard-size must be positive");
  return static_cast<uint64_t>(v * mul);
}

}  // namespace

Handler register_convert(CLI::App& app) {
  auto f = std::make_shared<ConvertFlags>();
  CLI::App* cmd = app.add_subcommand("convert", "Rewrite a model folder as sharded safetensors (names unchanged)");
  cmd->footer(R"(Examples:
  xc2 convert --model internlm-xcomposer2-vl-7b --out xc2-vl-7b-safetensors
  xc2 convert --model internlm-xcomposer2-7b --out xc2-7b-st --shard-size 2GB

Not needed to run a model: xc2 reads the PyTorch .bin checkpoints directly. Converting gives
faster start-up (no pickle parsing) and files other tools can read.)");
  add_common_options(cmd, f->common);
  cmd->add_option("-o,--out", f->out, "Output folder (created if missing; must differ from --model)")
      ->required()
      ->type_name("DIR");
  cmd->add_option("--shard-size", f->shard_size, "Maximum shard size")->capture_default_str();
  return [f]() -> int {
    apply_log_level(f->common);
    const std::string dir = resolve_model_dir(f->common);
    const uint64_t max_bytes = parse_size(f->shard_size);
    library_write([&] { convert_model(dir, f->out, max_bytes); });
    if (!f->common.quiet) std::cerr << "xc2: wrote " << f->out << "\n";
    return kExitOk;
  };
}

}  // namespace xc2::cli
