// xc2 chat: one answer streamed to stdout, or an interactive multi-turn session (history kept in the
// KV cache). Ctrl-C stops the current answer; Ctrl-D or /exit ends the session.
#include <atomic>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>

#include "cli_common.h"

namespace xc2::cli {
namespace {

std::atomic<bool> g_interrupted{false};

extern "C" void on_sigint(int) { g_interrupted.store(true); }

// Ctrl-C cancels the answer being generated instead of killing the process.
class InterruptScope {
 public:
  InterruptScope() {
    g_interrupted.store(false);
    struct sigaction sa {};
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_);
  }
  ~InterruptScope() { sigaction(SIGINT, &old_, nullptr); }

 private:
  struct sigaction old_ {};
};

struct ChatFlags {
  CommonOptions common;
  GenerationFlags gen;
  PromptFlags prompt;
  std::string format = "text";
  bool stats = false;
  bool interactive = false;
  bool interactive_session = false;  // set for the turns of a session (messages from stdin)
};

std::string format_g(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.9g", v);
  return buf;
}

// beams > 1: with the answer's beam-search score.
std::string result_json(const GenerationResult& r, int beams) {
  std::ostringstream os;
  os << "{\"text\": " << json_escape(r.text) << ", \"tokens\": [";
  for (size_t i = 0; i < r.tokens.size(); ++i) os << (i ? ", " : "") << r.tokens[i];
  os << "], \"prompt_tokens\": " << r.prompt_tokens << ", \"prompt_positions\": " << r.prompt_positions
     << ", \"generated_tokens\": " << r.tokens.size() << ", \"stop_reason\": " << json_escape(stop_reason_name(r.stop_reason))
     << (beams > 1 ? ", \"beam_score\": " + format_g(r.beam_score) : std::string())
     << ", \"seed\": " << r.seed << ", \"timings_ms\": {\"images\": " << r.timings.load_ms + r.timings.vision_ms
     << ", \"prefill\": " << r.timings.prefill_ms << ", \"first_token\": " << r.timings.first_token_ms
     << ", \"decode\": " << r.timings.decode_ms << "}}";
  return os.str();
}

// Runs one turn; prints the answer (streamed in text mode) and the stats.
GenerationResult run_turn(ChatSession& chat, const ChatFlags& f, const std::string& query,
                          const std::vector<std::string>& images) {
  GenerationOptions opts = f.gen.resolve();
  opts.truncate_prompt = f.prompt.truncate;
  const bool stream = f.format == "text";
  InterruptScope interrupt;
  GenerationResult r = chat.ask(query, images, opts, [&](const std::string& piece) {
    if (stream) write_stdout(piece);
    return !g_interrupted.load();
  });
  write_stdout(stream ? std::string("\n") : result_json(r, opts.num_beams) + "\n");
  if (r.stop_reason == StopReason::ContextFull && !f.common.quiet)
    std::cerr << "xc2: the answer stopped because the context is full (max_length); "
              << (f.interactive_session ? "type /reset to start a new conversation" : "shorten the prompt") << "\n";
  if (f.stats) std::cerr << "xc2: " << stats_line(r) << "\n";
  else if (f.common.verbose) std::cerr << "xc2: seed " << r.seed << ", stop: " << stop_reason_name(r.stop_reason) << "\n";
  return r;
}

int run_interactive(Engine& engine, ChatSession& chat, const ChatFlags& f) {
  const bool tty = stdin_is_tty();
  std::vector<std::string> pending = f.prompt.images;
  if (tty) {
    std::cerr << "xc2 chat: " << engine.info().variant << " on " << engine.info().device << "\n"
              << "  /image PATH  attach an image to the next message    /reset  forget the conversation\n"
              << "  /exit or Ctrl-D  quit                                Ctrl-C  stop the current answer\n";
  }
  // Exit: 0 when every message was answered; 1 when some failed; when none was answered, the code of the last
  // failure, as for the same message given as an argument (2 for a prompt too long or a bad image).
  int n_answered = 0, failure = kExitOk;
  std::string line;
  for (;;) {
    if (tty) std::cerr << (pending.empty() ? "> " : "[" + std::to_string(pending.size()) + " image(s)] > ")
                       << std::flush;
    if (!std::getline(std::cin, line)) break;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    if (line == "/exit" || line == "/quit") break;
    if (line == "/reset") {
      chat.reset();
      pending.clear();
      if (tty) std::cerr << "(conversation cleared)\n";
      continue;
    }
    if (line.rfind("/image ", 0) == 0 || line == "/image") {
      std::string path = line.size() > 7 ? line.substr(7) : "";
      while (!path.empty() && path.back() == ' ') path.pop_back();
      if (path.empty()) {
        std::cerr << "xc2: error: /image needs a file path\n";
        continue;
      }
      // Checked now, so that a bad file is reported here and never costs the next message.
      const Engine::PreparedImage check = engine.prepare_image(path);
      if (!check.error.empty()) {
        std::cerr << "xc2: error: " << check.error << " (not attached)\n";
        failure = kExitUsage;
        continue;
      }
      pending.push_back(path);
      if (tty) std::cerr << "(image attached to the next message: " << path << ")\n";
      continue;
    }
    try {
      run_turn(chat, f, line, pending);
      pending.clear();
      ++n_answered;
    } catch (const Error& e) {
      // The conversation is unchanged and the images stay attached: the message can be sent again.
      std::cerr << "xc2: error: " << e.what() << "\n";
      if (!pending.empty() && tty) std::cerr << "(" << pending.size() << " image(s) still attached)\n";
      failure = exit_code_for(e);
    }
  }
  if (failure == kExitOk) return kExitOk;
  return n_answered > 0 ? kExitPartial : failure;
}

}  // namespace

Handler register_chat(CLI::App& app) {
  auto f = std::make_shared<ChatFlags>();
  CLI::App* cmd = app.add_subcommand("chat", "Chat with the model about images (one answer, or interactive)");
  cmd->footer(R"(Examples:
  xc2 chat --image examples/shapes-1.png "Describe the picture."
  xc2 chat -m internlm-xcomposer2-vl-7b -i cat.jpg -i dog.jpg "<ImageHere> vs <ImageHere>: which is bigger?"
  xc2 chat --greedy --format json --image examples/shapes-2.png "How many shapes are there?"
  xc2 chat -i photo.webp               # interactive: type messages, /image PATH, /reset, /exit
  printf 'Hello\nWhat can you do?\n' | xc2 chat     # one turn per input line

Images: with <ImageHere> markers in the prompt, image k fills marker k; without markers, they go at the
start of the message. Defaults follow upstream chat(): sampling with top-p 0.8, top-k 50, repetition
penalty 1.005, up to 1024 new tokens; --greedy reproduces the upstream README examples.)");
  add_common_options(cmd, f->common);
  add_parse_special_option(cmd, f->common);
  add_prompt_options(cmd, f->prompt);
  add_generation_options(cmd, f->gen);
  cmd->add_option("--format", f->format, "Output: text (streamed) or json (one object per answer)")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  cmd->add_flag("--stats", f->stats, "Print prompt size, time to first token and tokens/s on stderr");
  cmd->add_flag("-I,--interactive", f->interactive, "Interactive session even when a PROMPT is given");
  cmd->add_option("prompt", f->prompt.prompt, "The message; without it, read messages from stdin")->type_name("PROMPT");

  return [f]() -> int {
    if (f->prompt.no_system && f->prompt.system_set)
      throw UsageError("--system and --no-system cannot be used together");
    auto engine = load_engine(f->common);
    std::optional<std::string> system;
    if (f->prompt.no_system) system = std::string();
    else if (f->prompt.system_set) system = f->prompt.system;
    auto chat = engine->new_chat(system);
    if (!f->prompt.prompt.empty() && !f->interactive) {
      run_turn(*chat, *f, f->prompt.prompt, f->prompt.images);
      return kExitOk;
    }
    if (!f->prompt.prompt.empty()) run_turn(*chat, *f, f->prompt.prompt, f->prompt.images);
    ChatFlags rest = *f;
    rest.interactive_session = true;
    if (!f->prompt.prompt.empty()) rest.prompt.images.clear();
    return run_interactive(*engine, *chat, rest);
  };
}

}  // namespace xc2::cli
