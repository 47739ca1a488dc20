// xc2: the command-line front end. One binary, CLI11 subcommands; the only top-level catch, which
// turns errors into one `xc2: error: ...` line and an exit code.
#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <new>
#include <utility>
#include <vector>

#include "cli_common.h"
#include "xc2/engine.h"

namespace {

constexpr const char* kFooter = R"(Examples:
  xc2 chat --image examples/shapes-1.png "Describe the picture."
  xc2 caption --recursive photos/ --out captions.jsonl
  xc2 compose --model internlm-xcomposer2-7b "Write an article about pandas." --out panda.md
  xc2 info --model internlm-xcomposer2-vl-7b --check

Model folder: --model DIR, else $XC2_MODEL, else the bundled demo model (models/xc2-shapes).
Run 'xc2 <command> --help' for the options of a command.

Exit codes:
  0  success
  1  the run finished but some batch items failed (each has an "error" record), or some chat messages failed
     and others were answered (with none answered, the code of the last failure)
  2  usage or input error (bad option, unreadable or unsupported image or input file, prompt too long,
     --out exists without --resume/--overwrite, is an input, or is locked by another xc2)
  3  the model folder could not be loaded (missing or corrupt config, weights or tokenizer)
  4  runtime failure (an output that cannot be written: disk full, file too large, I/O error; out of memory;
     threads that cannot be started; CUDA error; internal error))";

int fail(const std::string& msg, int code) {
  std::cout.flush();
  std::fflush(stdout);
  std::cerr << "xc2: error: " << msg << std::endl;
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace xc2::cli;
  // A closed pipe ends xc2 quietly, as it does coreutils, whatever the parent left SIGPIPE set to.
  std::signal(SIGPIPE, SIG_DFL);
  // Past a file-size limit (ulimit -f) a write fails with EFBIG and is reported, instead of killing xc2.
  std::signal(SIGXFSZ, SIG_IGN);
  CLI::App app{"xc2: an inference engine for InternLM-XComposer2 (chat, captioning, text-image composition)",
               "xc2"};
  app.set_version_flag("--version", xc2::version_string(), "Print the version and build (CUDA on/off)");
  app.require_subcommand(1);
  app.footer(kFooter);
  app.get_formatter()->column_width(36);

  std::vector<std::pair<CLI::App*, Handler>> commands;
  auto add = [&](Handler (*reg)(CLI::App&)) {
    const size_t before = app.get_subcommands({}).size();
    Handler h = reg(app);
    auto subs = app.get_subcommands({});
    commands.emplace_back(subs.at(before), std::move(h));
  };
  add(register_chat);
  add(register_caption);
  add(register_compose);
  add(register_logits);
  add(register_info);
  add(register_convert);
  add(register_quantize);
  add(register_bench);
  add(register_serve);

  // `xc2 chat2`: name the unknown command instead of CLI11's "A subcommand is required".
  if (argc > 1 && argv[1][0] != '-') {
    bool known = false;
    std::string names;
    for (auto& [sub, handler] : commands) {
      known = known || sub->get_name() == argv[1];
      names += (names.empty() ? "" : ", ") + sub->get_name();
    }
    if (!known) return fail(std::string("unknown command '") + argv[1] + "' (commands: " + names + "; run 'xc2 --help')",
                            kExitUsage);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::string hint = "run 'xc2 --help' for usage";
    for (auto* sub : app.get_subcommands()) hint = "run 'xc2 " + sub->get_name() + " --help' for usage";
    return fail(std::string(e.what()) + " (" + hint + ")", kExitUsage);
  }

  for (auto& [sub, handler] : commands) {
    if (!sub->parsed()) continue;
    try {
      const int code = handler();
      finish_stdout();
      return code;
    } catch (const WriteError& e) {
      return fail(e.what(), kExitRuntime);
    } catch (const ModelLoadError& e) {
      return fail(e.what(), kExitModel);
    } catch (const UsageError& e) {
      return fail(e.what(), kExitUsage);
    } catch (const xc2::Error& e) {
      return fail(e.what(), exit_code_for(e));
    } catch (const std::bad_alloc&) {
      return fail("out of memory", kExitRuntime);
    } catch (const std::exception& e) {
      return fail(e.what(), kExitRuntime);
    }
  }
  return fail("no command given (run 'xc2 --help')", kExitUsage);
}
