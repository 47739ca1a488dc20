// xc2 compose: the upstream demo's free-form text-image composition (model-spec §12) on the command
// line: article -> image positions -> captions / image choice, written as Markdown (and optionally one
// self-contained HTML page); plus the demo's paragraph edits on an existing article. The protocol
// itself lives in the library (include/xc2/compose.h); this file parses flags, loads the image pool's
// captions and writes the files.
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>

#include "cli_common.h"
#include "xc2/compose.h"

namespace xc2::cli {
namespace {

namespace fs = std::filesystem;

struct ComposeFlags {
  CommonOptions common;
  GenerationFlags gen;
  std::string instruction;
  std::string outline;
  std::vector<std::string> images;
  std::string pool;
  std::string pool_captions;
  std::string slots;
  std::vector<int> after;
  std::string out;
  std::string html;
  bool meta = false;
  std::string article;
  int rewrite = 0, expand = 0, shorten = 0, insert = 0;
  std::string trace;
};

const char* const kFooter = R"(Examples:
  # Text only (as the demo's default "LLM only"):
  xc2 compose -m internlm-xcomposer2-7b "Write an article about the giant panda." --out panda.md

  # Your own images (at most 10): the model writes about them and places each one at most once:
  xc2 compose -m internlm-xcomposer2-7b --image panda.jpg --image bamboo.jpeg \
      "Title: my favorite animal" --out panda.md --html panda.html

  # Images from a local pool: caption the folder once, then let the model pick for each slot:
  xc2 caption photos/ --out photos/captions.jsonl
  xc2 compose -m internlm-xcomposer2-7b --pool photos/ --slots 4 --outline outline.txt --out trip.md

  # Placeholders with captions (no images at hand):
  xc2 compose -m internlm-xcomposer2-7b --slots auto "写一篇介绍中国水墨画的文章" --out ink.md

  # You choose where images go (after paragraphs 2 and 5), the model captions / picks them:
  xc2 compose -m internlm-xcomposer2-7b --pool photos/ --after 2,5 "A weekend in Hangzhou" --out trip.md

  # Edit paragraph 3 of an existing article (paragraphs count from 1, images not counted):
  xc2 compose -m internlm-xcomposer2-7b --article panda.md --rewrite 3 "Mention the bamboo diet." --out panda2.md
  xc2 compose -m internlm-xcomposer2-7b --article panda.md --shorten 2 --out panda2.md
  xc2 compose -m internlm-xcomposer2-7b --article panda.md --insert 0 "A one-line teaser." --out panda2.md

How it works (the InternLM-XComposer2 demo protocol): 1) the model writes the article, one paragraph per
line; 2) with --slots it names the paragraphs after which an image goes (K images, or 'auto'); 3) with
--image it picks one of your unused images for each slot (A/B/C... among them); without --image it
writes a caption per slot, and with --pool the 4 pool images whose captions are most similar become
candidates for the model to pick from; without a pool the slot keeps a placeholder with the caption.
--slots defaults to auto with --image or --pool, else 0 (text only); with --image it is capped at the
number of images. --after N,... skips step 2 and puts the images where you say. The pool's captions
come from 'xc2 caption DIR --out DIR/captions.jsonl' (or --pool-captions FILE); only pool images in
the top 4 for a slot are encoded.

Sampling follows the demo: top-p 0.8, top-k 40, repetition penalty 1.005, temperature 1.0, seed 8909
set before every step (so each step is reproducible); the sampling flags apply to every step,
--max-new-tokens to the article only (positions and captions: 200, image choice: 10, edits: 500 minus
the prompt length). --greedy makes the whole run deterministic.

Output: Markdown with paragraphs separated by blank lines and images as ![caption](path), the paths
relative to the Markdown file's folder; placeholders are lines '> **Image placeholder:** caption'.
--html writes one page with the images embedded. Progress goes to stderr (the article is streamed
there when stderr is a terminal); -v also prints every prompt and answer.)";

// "auto" -> kAutoSlots, "K" -> K >= 0.
int parse_slots_flag(const std::string& s) {
  if (s == "auto") return compose::kAutoSlots;
  try {
    size_t used = 0;
    const int k = std::stoi(s, &used);
    if (used == s.size() && k >= 0) return k;
  } catch (const std::exception&) {
  }
  throw UsageError("--slots '" + s + "' is not a number >= 0 or 'auto'");
}

// Resolves a path recorded in a captions file: as written (relative to the current folder), then
// relative to the captions file's folder, then relative to the pool folder, then its file name in
// the pool folder.
std::string resolve_pool_path(const std::string& p, const fs::path& captions_dir, const std::string& pool_dir) {
  std::error_code ec;
  std::vector<fs::path> cands = {fs::path(p)};
  if (!fs::path(p).is_absolute()) {
    cands.push_back(captions_dir / p);
    if (!pool_dir.empty()) cands.push_back(fs::path(pool_dir) / p);
  }
  if (!pool_dir.empty()) cands.push_back(fs::path(pool_dir) / fs::path(p).filename());
  for (const fs::path& c : cands)
    if (fs::is_regular_file(c, ec)) return c.lexically_normal().string();
  return "";
}

std::vector<compose::PoolImage> load_pool(const ComposeFlags& f) {
  if (!f.pool.empty() && !fs::is_directory(f.pool)) throw UsageError("--pool '" + f.pool + "' is not a folder");
  const std::string file = !f.pool_captions.empty() ? f.pool_captions : (fs::path(f.pool) / "captions.jsonl").string();
  if (!fs::exists(file)) {
    std::string msg = "the image pool needs captions, but '" + file + "' does not exist.\n";
    if (f.pool_captions.empty())
      msg += "Caption the pool once with:\n  xc2 caption " + f.pool + " --out " + file +
             "\nthen run compose again (or give a captions file with --pool-captions FILE).";
    else
      msg += "Make it with 'xc2 caption " + (f.pool.empty() ? std::string("DIR") : f.pool) + " --out " + file + "'.";
    throw UsageError(msg);
  }
  std::ifstream in(file);
  if (!in) throw UsageError("cannot read the pool captions file '" + file + "'");
  const fs::path captions_dir = fs::path(file).parent_path();
  std::vector<compose::PoolImage> pool;
  std::set<std::string> seen;
  size_t n_records = 0, n_errors = 0, n_missing = 0, n_bad = 0;
  std::string first_missing;
  std::string line;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    ++n_records;
    const std::optional<JsonRecord> j = parse_json_record(line);
    if (!j || j->string("path") == nullptr) {
      ++n_bad;
      continue;
    }
    if (j->has("error") || j->string("caption") == nullptr) {
      ++n_errors;
      continue;
    }
    const std::string p = *j->string("path");
    const std::string resolved = resolve_pool_path(p, captions_dir, f.pool);
    if (resolved.empty()) {
      if (first_missing.empty()) first_missing = p;
      ++n_missing;
      continue;
    }
    if (!seen.insert(resolved).second) continue;
    pool.push_back({resolved, *j->string("caption")});
  }
  if (!f.common.quiet && (n_errors || n_missing || n_bad)) {
    std::cerr << "xc2: compose: pool: " << pool.size() << " captioned images from '" << file << "'";
    if (n_errors) std::cerr << "; " << n_errors << " records without a caption (failed images) skipped";
    if (n_missing) std::cerr << "; " << n_missing << " images not found (e.g. '" << first_missing << "') skipped";
    if (n_bad) std::cerr << "; " << n_bad << " unreadable lines skipped";
    std::cerr << "\n";
  }
  if (pool.empty())
    throw UsageError("no usable images in the pool captions file '" + file + "' (" + std::to_string(n_records) +
                     " records)" + (n_missing ? "; the recorded paths were not found" : ""));
  return pool;
}

const char* step_name(compose::Step s) {
  switch (s) {
    case compose::Step::Article:
      return "article";
    case compose::Step::Slots:
      return "slots";
    case compose::Step::Caption:
      return "caption";
    case compose::Step::Selection:
      return "selection";
    case compose::Step::Edit:
      return "edit";
  }
  return "?";
}

}  // namespace

Handler register_compose(CLI::App& app) {
  auto f = std::make_shared<ComposeFlags>();
  // --image and --after take one value per occurrence, so `--image a.jpg "Title"` keeps the title.
  f->gen.opts = compose::demo_generation_options();
  CLI::App* cmd = app.add_subcommand(
      "compose", "Write an illustrated article (the upstream composition protocol) as Markdown/HTML, or edit one");
  cmd->footer(kFooter);
  add_common_options(cmd, f->common);
  add_parse_special_option(cmd, f->common);
  cmd->add_option("instruction", f->instruction,
                  "What to write: a title, an outline or source material (for edits: the material / outline)")
      ->type_name("INSTRUCTION");
  cmd->add_option("--outline", f->outline, "Read the instruction from a file (- for stdin)")->type_name("FILE");
  cmd->add_option("-i,--image", f->images, "Your image (repeat, at most 10): written about and placed by the model")
      ->type_name("PATH")
      ->allow_extra_args(false);
  cmd->add_option("--pool", f->pool, "Folder of captioned images to illustrate from (captions in DIR/captions.jsonl)")
      ->type_name("DIR");
  cmd->add_option("--pool-captions", f->pool_captions, "Captions of the pool (xc2 caption JSONL output)")
      ->type_name("FILE");
  cmd->add_option("--slots", f->slots,
                  "Number of images to place, or auto (default: auto with --image/--pool, else 0 = text only)")
      ->type_name("K|auto");
  cmd->add_option("--after", f->after,
                  "Put images after these paragraphs (numbered from 1, comma-separated) instead of asking the model")
      ->delimiter(',')
      ->check(more_than(0))
      ->type_name("N,...")
      ->allow_extra_args(false);
  cmd->add_option("-o,--out", f->out, "Markdown output file (default: stdout)")->type_name("FILE.md");
  cmd->add_option("--html", f->html, "Also write one self-contained HTML page (images embedded)")->type_name("FILE");
  cmd->add_flag("--meta", f->meta, "Use the demo's system prompt (its \"With Meta\" box; off by default)");
  cmd->add_option("--article", f->article, "Existing article to edit (Markdown or plain text)")->type_name("FILE");
  cmd->add_option("--rewrite", f->rewrite, "Rewrite paragraph K of --article using the INSTRUCTION as material")
      ->type_name("K");
  cmd->add_option("--expand", f->expand, "Expand paragraph K of --article using the INSTRUCTION as material")
      ->type_name("K");
  cmd->add_option("--shorten", f->shorten, "Shorten paragraph K of --article")->type_name("K");
  cmd->add_option("--insert", f->insert,
                  "Write a new paragraph between paragraphs K and K+1 of --article (0: at the start) from the "
                  "INSTRUCTION (an outline)")
      ->type_name("K");
  cmd->add_option("--trace", f->trace, "Write every model call (prompt, answer, tokens) as JSON Lines to FILE")
      ->type_name("FILE");
  add_generation_options(cmd, f->gen);
  cmd->get_option("--seed")->description("Random seed, set before every step (default: 8909, as the demo)");

  return [f, cmd]() -> int {
    apply_log_level(f->common);
    const bool quiet = f->common.quiet;
    auto count = [&](const char* name) { return cmd->get_option(name)->count() > 0; };

    // Which edit, if any.
    std::vector<std::pair<compose::EditKind, int>> edits;
    if (count("--rewrite")) edits.emplace_back(compose::EditKind::Rewrite, f->rewrite);
    if (count("--expand")) edits.emplace_back(compose::EditKind::Expand, f->expand);
    if (count("--shorten")) edits.emplace_back(compose::EditKind::Shorten, f->shorten);
    if (count("--insert")) edits.emplace_back(compose::EditKind::Insert, f->insert);
    if (edits.size() > 1) throw UsageError("give one of --rewrite, --expand, --shorten, --insert at a time");
    const bool edit_mode = !edits.empty();

    if (!f->outline.empty() && !f->instruction.empty())
      throw UsageError("give the instruction either as an argument or with --outline FILE, not both");
    std::string instruction = f->instruction;
    if (!f->outline.empty()) instruction = read_text_file(f->outline, "outline file");

    const uint64_t seed = f->gen.seed.value_or(compose::kDefaultSeed);
    GenerationOptions gen = f->gen.opts;
    if (f->gen.greedy) gen.do_sample = false;

    const std::string md_dir = f->out.empty() || f->out == "-" ? "." : fs::path(f->out).parent_path().string();

    // Logging hooks.
    std::unique_ptr<OutputFile> trace;
    if (!f->trace.empty()) trace = std::make_unique<OutputFile>(f->trace, OutputFile::Mode::Truncate, false);
    const bool stream = stderr_is_tty() && !quiet;
    bool streamed_any = false;
    compose::Events ev;
    ev.on_progress = [quiet, &streamed_any](const std::string& m) {
      if (quiet) return;
      if (streamed_any) std::cerr << "\n";
      streamed_any = false;
      std::cerr << "xc2: compose: " << m << std::endl;
    };
    if (stream) {
      ev.on_article_text = [&streamed_any](const std::string& piece) {
        std::cerr << piece << std::flush;
        streamed_any = true;
        return true;
      };
    }
    const bool verbose = f->common.verbose && !quiet;
    ev.on_trace = [&](const compose::Trace& t) {
      if (streamed_any) std::cerr << "\n";
      streamed_any = false;
      if (verbose) {
        std::cerr << "xc2: compose: ---- " << t.label << " prompt ----\n"
                  << t.prompt << "\nxc2: compose: ---- " << t.label << " answer ----\n"
                  << t.result.text << "\nxc2: compose: " << stats_line(t.result) << "\n";
      }
      if (trace) {
        std::ostringstream line;
        line << "{\"step\": " << json_escape(step_name(t.step)) << ", \"label\": " << json_escape(t.label)
               << ", \"prompt\": " << json_escape(t.prompt) << ", \"output\": " << json_escape(t.output)
               << ", \"prompt_positions\": " << t.result.prompt_positions
               << ", \"generated_tokens\": " << t.result.tokens.size()
               << ", \"stop_reason\": " << json_escape(stop_reason_name(t.result.stop_reason)) << ", \"seed\": " << t.result.seed
               << "}\n";
        trace->write(line.str());
      }
    };

    compose::Article article;
    if (edit_mode) {
      if (f->article.empty())
        throw UsageError("--rewrite/--expand/--shorten/--insert edit an existing article: give it with --article FILE");
      if (!f->images.empty() || !f->pool.empty() || !f->pool_captions.empty() || !f->slots.empty() || !f->after.empty())
        throw UsageError("--image, --pool, --slots and --after do not apply to edits");
      const auto [kind, k] = edits[0];
      if (kind == compose::EditKind::Shorten && !instruction.empty() && !quiet)
        std::cerr << "xc2: compose: note: --shorten takes no instruction; it is ignored\n";
      if (kind == compose::EditKind::Insert && compose::strip(instruction).empty())
        throw UsageError("--insert needs an INSTRUCTION: the outline of the new paragraph");
      const std::string text = read_text_file(f->article, "article");
      const std::string article_dir = f->article == "-" ? "." : fs::path(f->article).parent_path().string();
      const compose::Article in = compose::parse_markdown(text, article_dir);
      const int n = in.n_paragraphs();
      if (n == 0) throw UsageError("the article '" + f->article + "' has no paragraphs");
      const bool insert = kind == compose::EditKind::Insert;
      if (insert ? (k < 0 || k > n) : (k < 1 || k > n))
        throw UsageError(std::string("--") + compose::edit_kind_name(kind) + " " + std::to_string(k) +
                         ": the article has " + std::to_string(n) + " paragraph" + (n == 1 ? "" : "s") +
                         (insert ? " (use 0 to " + std::to_string(n) + ")" : " (use 1 to " + std::to_string(n) + ")"));
      auto engine = load_engine(f->common);
      compose::EditOptions eo;
      eo.kind = kind;
      eo.paragraph = k - 1;
      eo.instruction = kind == compose::EditKind::Shorten ? "" : instruction;
      eo.with_meta = f->meta;
      eo.seed = seed;
      eo.generation = gen;
      const compose::EditResult r = compose::edit(*engine, in, eo, ev);
      if (streamed_any) std::cerr << "\n";
      streamed_any = false;
      article = r.article;
    } else {
      if (!f->article.empty()) throw UsageError("--article needs one of --rewrite, --expand, --shorten, --insert");
      if (compose::strip(instruction).empty())
        throw UsageError("no instruction given: pass the title/outline as an argument or with --outline FILE");
      if (static_cast<int>(f->images.size()) > compose::kMaxImages)
        throw UsageError("at most " + std::to_string(compose::kMaxImages) +
                         " images (--image) can be given, as in the demo");
      const bool have_pool = !f->pool.empty() || !f->pool_captions.empty();
      if (!f->images.empty() && have_pool)
        throw UsageError(
            "--image and --pool cannot be used together: the model places your images, or picks from the pool");
      compose::ComposeOptions co;
      co.instruction = instruction;
      co.images = f->images;
      if (!f->after.empty() && !f->slots.empty()) throw UsageError("give either --slots or --after, not both");
      co.slots =
          f->slots.empty() ? (!f->images.empty() || have_pool ? compose::kAutoSlots : 0) : parse_slots_flag(f->slots);
      for (int a : f->after) co.positions.push_back(a - 1);
      if (have_pool) {
        if (co.slots != 0 || !co.positions.empty())
          co.pool = load_pool(*f);
        else if (!quiet)
          std::cerr << "xc2: compose: note: --slots 0 writes text only; the pool is not used\n";
      }
      co.with_meta = f->meta;
      co.seed = seed;
      co.generation = gen;
      auto engine = load_engine(f->common);
      const compose::ComposeResult r = compose::compose(*engine, co, ev);
      if (streamed_any) std::cerr << "\n";
      streamed_any = false;
      article = r.article;
      if (!quiet) {
        int n_img = 0, n_ph = 0;
        for (const auto& b : article.blocks) {
          n_img += b.kind == compose::Block::Kind::Image;
          n_ph += b.kind == compose::Block::Kind::Placeholder;
        }
        auto n_of = [](int n, const char* what) { return std::to_string(n) + " " + what + (n == 1 ? "" : "s"); };
        std::cerr << "xc2: compose: done: " << n_of(article.n_paragraphs(), "paragraph") << ", "
                  << n_of(n_img, "image");
        if (n_ph) std::cerr << ", " << n_of(n_ph, "placeholder");
        std::cerr << "\n";
      }
    }

    const std::string md = compose::to_markdown(article, md_dir);
    if (f->out.empty() || f->out == "-") {
      write_stdout(md);
    } else {
      write_file_atomic(f->out, md);
      if (!quiet) std::cerr << "xc2: compose: wrote " << f->out << "\n";
    }
    if (!f->html.empty()) {
      write_file_atomic(f->html, compose::to_html(article, article.title()));
      if (!quiet) std::cerr << "xc2: compose: wrote " << f->html << "\n";
    }
    if (trace) trace->close();
    return kExitOk;
  };
}

}  // namespace xc2::cli
