// xc2 logits: the fp32 logits of every prompt position, for parity checks from outside.
//   --out FILE.npy        float32 [positions, vocab] (NumPy .npy v1.0)
//   --tokens-out FILE.json per position the token id, or null where the row is an image embedding
// Without --out, prints one JSON line per position with the top tokens.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <numeric>
#include <sstream>

#include "cli_common.h"

namespace xc2::cli {
namespace {

struct LogitsFlags {
  CommonOptions common;
  PromptFlags prompt;
  bool raw = false;
  std::string out;
  std::string tokens_out;
  std::string dump;
  int top = 5;
};

void write_npy(const std::string& path, const std::vector<float>& data, int64_t rows, int64_t cols) {
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(rows) + ", " +
                       std::to_string(cols) + "), }";
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  const uint16_t hlen = static_cast<uint16_t>(header.size());
  const char len_bytes[2] = {static_cast<char>(hlen & 0xff), static_cast<char>(hlen >> 8)};
  write_file_atomic(path, [&](OutputFile& f) {
    f.write("\x93NUMPY\x01\x00", 8);
    f.write(len_bytes, 2);
    f.write(header);
    f.write(data.data(), data.size() * sizeof(float));
  });
}

}  // namespace

Handler register_logits(CLI::App& app) {
  auto f = std::make_shared<LogitsFlags>();
  CLI::App* cmd = app.add_subcommand("logits", "Print or save the logits of every prompt position");
  cmd->footer(R"(Examples:
  xc2 logits --image examples/shapes-1.png "What colour is the circle?" --out logits.npy --tokens-out tokens.json
  xc2 logits --raw "Hello world" --top 3

The prompt goes through the same template and BOS rules as `xc2 chat` (with --raw: the text as is, one
BOS; <ImageHere> markers still place images). Logits are fp32, one row per position including image rows.
--dump DIR writes every intermediate of every layer (attn_norm, qkv, q_rope, attn_out, attn_proj, ffn_inp,
ffn_norm, ffn_gate, ffn_up, ffn_act, ffn_out, layer_out; input, final_norm, logits); compare them with the
reference: tools/reference/compare_dump.py --model DIR --dump DIR [--image ...] "prompt".)");
  add_common_options(cmd, f->common);
  add_parse_special_option(cmd, f->common);
  add_prompt_options(cmd, f->prompt);
  cmd->add_flag("--raw", f->raw, "No chat template: the prompt text as is");
  cmd->add_option("-o,--out", f->out, "Write all logits as float32 [positions, vocab] to FILE.npy")->type_name("FILE");
  cmd->add_option("--tokens-out", f->tokens_out, "Write the per-position token ids (null for image rows) as JSON")
      ->type_name("FILE");
  cmd->add_option("--dump", f->dump,
                  "Write every named intermediate of the decoder forward as float32 [rows, cols] to DIR/NAME.npy "
                  "(layerNN.NAME.npy inside the layers), to compare with tools/reference/compare_dump.py")
      ->type_name("DIR");
  cmd->add_option("--top", f->top, "Without --out: how many top tokens to print per position")
      ->check(more_than(0))
      ->capture_default_str();
  cmd->add_option("prompt", f->prompt.prompt, "The prompt")->required();

  return [f]() -> int {
    if (f->prompt.no_system && f->prompt.system_set)
      throw UsageError("--system and --no-system cannot be used together");
    auto engine = load_engine(f->common);
    Request req;
    req.images = engine->encode_images(f->prompt.images);
    const int n = static_cast<int>(req.images.size());
    if (f->raw) {
      req.text = n > 0 ? place_image_markers(f->prompt.prompt, n) : f->prompt.prompt;
      req.style = n > 0 ? PromptStyle::ChatImage : PromptStyle::Raw;
    } else {
      const std::string system =
          f->prompt.no_system ? "" : f->prompt.system_set ? f->prompt.system : default_system_prompt();
      ChatPrompt p = chat_prompt(system, {}, n > 0 ? place_image_markers(f->prompt.prompt, n) : f->prompt.prompt);
      req.text = std::move(p.text);
      req.user_spans = std::move(p.user_spans);
      req.style = n > 0 ? PromptStyle::ChatImage : PromptStyle::ChatText;
    }
    TensorCallback dump;
    if (!f->dump.empty()) {
      std::error_code ec;
      std::filesystem::create_directories(f->dump, ec);
      if (ec) throw UsageError("cannot create '" + f->dump + "': " + ec.message());
      dump = [&](const std::string& name, int layer, int64_t rows, int64_t cols, const std::vector<float>& values) {
        char prefix[32] = "";
        if (layer >= 0) std::snprintf(prefix, sizeof(prefix), "layer%02d.", layer);
        write_npy(f->dump + "/" + prefix + name + ".npy", values, rows, cols);
      };
    }
    const LogitsResult r = engine->logits(req, f->prompt.truncate, dump);
    if (!f->tokens_out.empty()) {
      std::ostringstream t;
      t << "[";
      for (size_t i = 0; i < r.tokens.size(); ++i) {
        t << (i ? ", " : "");
        if (r.tokens[i] < 0) t << "null";
        else t << r.tokens[i];
      }
      t << "]\n";
      write_file_atomic(f->tokens_out, t.str());
    }
    if (!f->out.empty()) {
      write_npy(f->out, r.logits, r.n_positions, r.vocab_size);
      if (!f->common.quiet)
        std::cerr << "xc2: wrote " << r.n_positions << " x " << r.vocab_size << " logits to " << f->out << "\n";
      return kExitOk;
    }
    const int top = std::min<int>(f->top, static_cast<int>(r.vocab_size));
    std::vector<int32_t> idx(static_cast<size_t>(r.vocab_size));
    for (int64_t p = 0; p < r.n_positions; ++p) {
      const float* row = r.logits.data() + p * r.vocab_size;
      std::iota(idx.begin(), idx.end(), 0);
      std::partial_sort(idx.begin(), idx.begin() + top, idx.end(), [&](int32_t a, int32_t b) {
        return row[a] > row[b] || (row[a] == row[b] && a < b);
      });
      std::ostringstream os;
      os << "{\"pos\": " << p << ", \"token\": ";
      if (r.tokens[static_cast<size_t>(p)] < 0) os << "null";
      else os << r.tokens[static_cast<size_t>(p)];
      os << ", \"top\": [";
      for (int k = 0; k < top; ++k) {
        char buf[32];
        std::snprintf(buf, sizeof(buf), "%.6g", row[idx[static_cast<size_t>(k)]]);
        os << (k ? ", " : "") << "{\"id\": " << idx[static_cast<size_t>(k)] << ", \"logit\": " << buf
           << ", \"text\": " << json_escape(engine->detokenize({idx[static_cast<size_t>(k)]})) << "}";
      }
      os << "]}\n";
      write_stdout(os.str());
    }
    return kExitOk;
  };
}

}  // namespace xc2::cli
