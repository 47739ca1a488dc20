// Shared flags and helpers of the xc2 subcommands.
#include "cli_common.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <sys/stat.h>

#include "xc2/build_config.h"

namespace xc2::cli {
namespace {

bool is_dir(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string exe_dir() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return "";
  std::string p(buf, static_cast<size_t>(n));
  const size_t slash = p.find_last_of('/');
  return slash == std::string::npos ? "" : p.substr(0, slash);
}

std::string show_number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", v);
  return buf;
}

CLI::Validator number_check(std::function<bool(double)> ok, const std::string& rule) {
  return CLI::Validator(
      [ok, rule](std::string& s) -> std::string {
        double v = 0;
        size_t used = 0;
        try {
          v = std::stod(s, &used);
        } catch (const std::exception&) {
          used = 0;
        }
        if (used == 0 || used != s.size()) return "'" + s + "' is not a number";
        if (!ok(v)) return "must be " + rule + ", got " + s;
        return std::string();
      },
      rule);
}

// A 64-bit seed: decimal digits, at most 2^64 - 1 (no sign, no wrap-around).
std::string check_seed(std::string& s) {
  if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos)
    return "must be a whole number from 0 to 18446744073709551615, got '" + s + "'";
  errno = 0;
  std::strtoull(s.c_str(), nullptr, 10);
  if (errno == ERANGE) return "must be at most 18446744073709551615 (2^64 - 1), got " + s;
  return std::string();
}

}  // namespace

CLI::Validator at_least(double bound) {
  return number_check([bound](double v) { return v >= bound; }, ">= " + show_number(bound));
}
CLI::Validator more_than(double bound) {
  return number_check([bound](double v) { return v > bound; }, "> " + show_number(bound));
}
CLI::Validator between(double lo, double hi) {
  return number_check([lo, hi](double v) { return v >= lo && v <= hi; },
                      "from " + show_number(lo) + " to " + show_number(hi));
}

void add_common_options(CLI::App* app, CommonOptions& o) {
  app->add_option("-m,--model", o.model,
                  "Model folder (Hugging Face layout). Default: $XC2_MODEL, else the bundled demo model")
      ->type_name("DIR");
  app->add_option("--device", o.device, "Where to run: auto (CUDA if available), cpu or cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}))
      ->capture_default_str();
  app->add_option("--dtype", o.dtype, "Compute dtype: auto (CUDA bf16, CPU f32), f32, bf16 or f16 (CUDA only)")
      ->check(CLI::IsMember({"auto", "f32", "bf16", "f16"}))
      ->capture_default_str();
  app->add_option("-t,--threads", o.threads, "CPU threads (0 = all cores)")->check(at_least(0));
  app->add_flag("--exact", o.exact,
                "Quantized (4/8-bit) folders on the CPU: exact f32 math on the dequantized weights, as the reference "
                "(default where the CPU has AVX2: int8 activations, faster, logits within about 1e-2)");
  app->add_flag("-v,--verbose", o.verbose, "More messages on stderr (the model folder used, timings)");
  app->add_flag("-q,--quiet", o.quiet, "Only errors on stderr");
}

void add_parse_special_option(CLI::App* app, CommonOptions& o) {
  app->add_flag("--parse-special", o.parse_special,
                "Turn special-token strings typed in the user's text (<s>, </s>, <unk>, [UNUSED_TOKEN_146], ...) into "
                "control tokens, as upstream's tokenizer does (for parity checks; by default they stay text)");
}

void apply_log_level(const CommonOptions& o) { set_verbosity(o.quiet ? 0 : o.verbose ? 2 : 1); }

int exit_code_for(const Error& e) {
  switch (e.code()) {
    case ErrorCode::InvalidArgument:
    case ErrorCode::Unsupported:
    case ErrorCode::NotFound:
    case ErrorCode::Io:
      return kExitUsage;
    case ErrorCode::ShapeMismatch:
      return kExitModel;
    case ErrorCode::Cuda:
    case ErrorCode::Internal:
      return kExitRuntime;
  }
  return kExitRuntime;
}

std::string resolve_model_dir(const CommonOptions& o) {
  if (!o.model.empty()) return o.model;
  if (const char* env = std::getenv("XC2_MODEL"); env != nullptr && *env) return env;
  const std::string dir = exe_dir();
  for (const std::string& cand : {dir + "/../models/xc2-shapes", dir + "/models/xc2-shapes",
                                  dir + "/../share/xc2/models/xc2-shapes",
                                  std::string(XC2_SOURCE_DIR) + "/models/xc2-shapes"}) {
    if (is_dir(cand)) return std::filesystem::path(cand).lexically_normal().string();
  }
  throw UsageError("no model given: pass --model DIR or set XC2_MODEL (the bundled demo model was not found)");
}

std::unique_ptr<Engine> load_engine(const CommonOptions& o) {
  apply_log_level(o);
  EngineOptions eo;
  eo.model_dir = resolve_model_dir(o);
  if ((o.device == "cpu" || (o.device == "auto" && !built_with_cuda())) && o.dtype != "auto" && o.dtype != "f32")
    throw UsageError("--dtype " + o.dtype + " needs --device cuda (the CPU backend computes in f32)");
  eo.device = parse_device(o.device);  // the choices are checked by CLI11
  eo.dtype = parse_dtype(o.dtype);
  eo.threads = o.threads;
  eo.parse_special = o.parse_special;
  eo.exact_quant = o.exact;
  if (o.verbose) std::cerr << "xc2: model folder: " << eo.model_dir << "\n";
  try {
    auto engine = Engine::load(eo);
    if (o.verbose) std::cerr << "xc2: " << engine->info().variant << " on " << engine->info().device << "\n";
    return engine;
  } catch (const Error& e) {
    if (e.code() == ErrorCode::InvalidArgument && o.device != "auto" && o.device != "cpu") throw;
    // --dtype bf16 with --device auto on a machine without a GPU: a usage error (exit 2), not a model problem.
    if (e.code() == ErrorCode::InvalidArgument && o.dtype != "auto" && o.dtype != "f32") throw UsageError(e.what());
    if (e.code() == ErrorCode::Cuda && o.device == "cuda")
      throw Error(ErrorCode::Cuda, std::string("--device cuda: no usable CUDA GPU (") + e.what() + ")");
    // No GPU / built without CUDA is not a model problem: exit 4 (Cuda) or 2 (Unsupported, --device cuda).
    // Nor is a resource failure (threads, memory: Internal, exit 4). What the folder asks for and xc2 cannot run
    // (GPTQ bits 3, another quant_method, ...) is: exit 3.
    if (e.code() == ErrorCode::Unsupported && o.device != "auto" && o.device != "cpu") throw;
    if (e.code() == ErrorCode::Cuda || e.code() == ErrorCode::Internal) throw;
    throw ModelLoadError(e.what());
  }
}

GenerationOptions GenerationFlags::resolve() const {
  GenerationOptions o = opts;
  if (greedy || o.num_beams > 1) o.do_sample = false;
  o.seed = seed;
  return o;
}

void add_generation_options(CLI::App* app, GenerationFlags& g) {
  auto* grp = app;
  grp->add_option("-n,--max-new-tokens", g.opts.max_new_tokens, "Maximum number of tokens to generate")
      ->check(at_least(0))
      ->capture_default_str();
  grp->add_flag("--greedy", g.greedy, "Greedy decoding (argmax after the repetition penalty), as the upstream README");
  grp->add_option("--temperature", g.opts.temperature, "Sampling temperature")
      ->check(more_than(0))
      ->capture_default_str();
  grp->add_option("--top-p", g.opts.top_p, "Nucleus sampling: keep the smallest set with this probability mass")
      ->check(between(0, 1))
      ->capture_default_str();
  grp->add_option("--top-k", g.opts.top_k, "Keep the k most likely tokens (0 = off)")
      ->check(at_least(0))
      ->capture_default_str();
  grp->add_option("--repetition-penalty", g.opts.repetition_penalty, "Repetition penalty (1 = off)")
      ->check(more_than(0))
      ->capture_default_str();
  grp->add_option("--beams", g.opts.num_beams,
                  "Beam search with N beams (deterministic; Hugging Face num_beams, as upstream's evaluations)")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  grp->add_option("--length-penalty", g.opts.length_penalty,
                  "Beam search: hypotheses score sum(log p) / length^PENALTY (> 1 favours longer answers)")
      ->capture_default_str();
  grp->add_option("--seed", g.seed, "Random seed for sampling, 0 to 2^64-1 (default: random; printed with -v)")
      ->check(CLI::Validator(check_seed, "UINT64"));
  grp->add_flag("--ignore-eos", g.opts.ignore_eos, "Do not stop at </s> or [UNUSED_TOKEN_145]");
}

void add_prompt_options(CLI::App* app, PromptFlags& p) {
  // One value per occurrence, so `--image a.png "prompt"` never takes the prompt for a second image.
  app->add_option("-i,--image", p.images, "Image file (PNG, JPEG, BMP, GIF, WebP); repeat for several")
      ->type_name("PATH")
      ->allow_extra_args(false);
  app->add_option("--system", p.system, "System prompt (default: the upstream chat() meta instruction)")
      ->type_name("TEXT")
      ->each([&p](const std::string&) { p.system_set = true; });
  app->add_flag("--no-system", p.no_system, "No system prompt");
  app->add_flag("--truncate", p.truncate,
                "Cut a prompt longer than the model's max_length (upstream behaviour) instead of failing; in a chat "
                "session, drop the oldest turns when the next message does not fit");
}

std::string system_text(const PromptFlags& p) {
  if (p.no_system) return "";
  if (p.system_set) return p.system;
  return std::string();  // the caller substitutes the default (Engine::new_chat does)
}

bool stdout_is_tty() { return ::isatty(STDOUT_FILENO) == 1; }
bool stderr_is_tty() { return ::isatty(STDERR_FILENO) == 1; }
bool stdin_is_tty() { return ::isatty(STDIN_FILENO) == 1; }

std::string format_ms(double ms) {
  char buf[64];
  if (ms < 1000) std::snprintf(buf, sizeof(buf), "%.0f ms", ms);
  else std::snprintf(buf, sizeof(buf), "%.2f s", ms / 1000);
  return buf;
}

std::string stats_line(const GenerationResult& r) {
  std::ostringstream os;
  char buf[64];
  os << "prompt " << r.prompt_positions << " positions (" << r.prompt_tokens << " text tokens)";
  if (r.timings.vision_ms > 0) os << " | images " << format_ms(r.timings.load_ms + r.timings.vision_ms);
  std::snprintf(buf, sizeof(buf), "%.1f", r.timings.prefill_ms > 0 ? r.prompt_positions * 1000.0 / r.timings.prefill_ms : 0.0);
  os << " | prefill " << format_ms(r.timings.prefill_ms);
  if (r.timings.prefill_ms > 0) os << " (" << buf << " tok/s)";
  os << " | first token " << format_ms(r.timings.first_token_ms);
  const size_t n = r.tokens.size();
  os << " | " << n << " tokens in " << format_ms(r.timings.decode_ms);
  if (r.timings.decode_ms > 0 && n > 0) {
    std::snprintf(buf, sizeof(buf), "%.2f", n * 1000.0 / r.timings.decode_ms);
    os << " (" << buf << " tok/s)";
  }
  os << " | stop: " << stop_reason_name(r.stop_reason);
  return os.str();
}

std::string read_text_file(const std::string& path, const char* what) {
  if (path == "-") {
    std::ostringstream ss;
    ss << std::cin.rdbuf();
    return ss.str();
  }
  if (is_dir(path)) throw UsageError(std::string(what) + " '" + path + "' is a folder, expected a file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UsageError(std::string("cannot read ") + what + " '" + path + "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace xc2::cli
