// Shared pieces of the xc2 subcommands: common flags, model folder resolution, exit codes, JSON and
// terminal helpers. The CLI sees only the public API (include/xc2/).
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "jsonl.h"
#include "output.h"
#include "xc2/engine.h"

namespace xc2::cli {

// Exit codes (documented in `xc2 --help` and the README).
enum ExitCode : int {
  kExitOk = 0,
  kExitPartial = 1,  // the run finished but some batch items (chat messages) failed
  kExitUsage = 2,    // bad option or input: unknown flag, bad value, unreadable image or input file, --out refused
  kExitModel = 3,    // the model folder could not be loaded (missing/corrupt config, weights, tokenizer)
  kExitRuntime = 4,  // failure while running (an output not written, out of memory, threads, CUDA, internal)
};

// Thrown by load_engine() so that main() reports a model load failure with kExitModel.
struct ModelLoadError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A usage error detected by the CLI itself (exit 2).
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct CommonOptions {
  std::string model;
  std::string device = "auto";
  std::string dtype = "auto";
  int threads = 0;
  bool verbose = false;
  bool quiet = false;
  bool parse_special = false;
  bool exact = false;
};

void add_common_options(CLI::App* app, CommonOptions& o);
// Number checks whose messages show the bound as written ("--temperature: must be > 0, got -1").
CLI::Validator at_least(double bound);     // >= bound
CLI::Validator more_than(double bound);    // > bound
CLI::Validator between(double lo, double hi);
// --parse-special, for the commands that build prompts from a template (chat, caption, logits, compose).
void add_parse_special_option(CLI::App* app, CommonOptions& o);
// --model, else $XC2_MODEL, else the bundled demo model next to the binary or in the source tree.
// The exit code of an error that ends a command (the table of `xc2 --help`).
int exit_code_for(const Error& e);

std::string resolve_model_dir(const CommonOptions& o);
std::unique_ptr<Engine> load_engine(const CommonOptions& o);
void apply_log_level(const CommonOptions& o);

// Generation flags; `greedy` overrides do_sample.
struct GenerationFlags {
  GenerationOptions opts;
  bool greedy = false;
  std::optional<uint64_t> seed;
  GenerationOptions resolve() const;
};
void add_generation_options(CLI::App* app, GenerationFlags& g);

// Prompt flags shared by chat and logits.
struct PromptFlags {
  std::vector<std::string> images;
  std::string system;
  bool system_set = false;
  bool no_system = false;
  bool truncate = false;
  std::string prompt;
};
void add_prompt_options(CLI::App* app, PromptFlags& p);
std::string system_text(const PromptFlags& p);  // the --system text, "" with --no-system, else the default

bool stdout_is_tty();
bool stderr_is_tty();
bool stdin_is_tty();


std::string format_ms(double ms);
// "prompt 1325 positions (100 text tokens) | prefill 2.10 s (631 tok/s) | ..." for --stats.
std::string stats_line(const GenerationResult& r);

// Reads a whole text file; UsageError naming it if unreadable.
std::string read_text_file(const std::string& path, const char* what);

// Registration of each subcommand (cmd_*.cpp). Each returns the handler to run after parsing.
using Handler = std::function<int()>;
Handler register_chat(CLI::App& app);
Handler register_logits(CLI::App& app);
Handler register_info(CLI::App& app);
Handler register_convert(CLI::App& app);
Handler register_caption(CLI::App& app);
Handler register_compose(CLI::App& app);
Handler register_bench(CLI::App& app);
Handler register_quantize(CLI::App& app);
Handler register_serve(CLI::App& app);

}  // namespace xc2::cli
