// xc2::compose: the free-form text-image composition protocol of the upstream XC2-7B gradio demo
// (model-spec §12), on top of the public Engine API only.
//
//   1. article    the model writes plain text; it is split into paragraphs (<Seg0>, <Seg1>, ...)
//   2. slots      the model names the paragraphs after which an image goes (<Seg{i}> list)
//   3a. no user images: the model writes a caption per slot; with a local pool of captioned images
//       the 4 most similar unused pool images become candidates and the model picks one (A/B/C/D);
//       without a pool the slot keeps a placeholder carrying the caption
//   3b. user images: at each slot the model picks among the unused uploads (A, B, ...)
//   edits: rewrite / expand / shorten one paragraph, or insert a new one (§12.6)
//
//   auto engine = xc2::Engine::load({"internlm-xcomposer2-7b"});
//   xc2::compose::ComposeOptions o;
//   o.instruction = "Write an article about pandas.";
//   o.slots = xc2::compose::kAutoSlots;
//   o.pool = {{"pool/panda.jpg", "A panda eating bamboo."}, ...};
//   xc2::compose::Article a = xc2::compose::compose(*engine, o).article;
//   std::string md = xc2::compose::to_markdown(a, ".");
//
// Every prompt string is verbatim from the demo. Errors are xc2::Error.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "xc2/engine.h"

namespace xc2::compose {

constexpr int kMaxParagraphs = 60;       // the demo's max_section
constexpr int kMaxImages = 10;           // uploads accepted by the demo
constexpr int kPoolCandidates = 4;       // candidates per slot (the demo's retrieval service returned 4)
constexpr int kAutoSlots = -1;           // ComposeOptions::slots: let the model choose how many
constexpr uint64_t kDefaultSeed = 8909;  // the demo's default UI seed
constexpr int kEditLengthBudget = 500;   // edits: max_new_tokens = 500 - prompt positions

// A caption chosen for an image slot (step 3a): the paragraph index and the caption.
struct SlotCaption {
  int paragraph = 0;
  std::string caption;
};

// The paragraph edits of the demo (§12.6).
enum class EditKind { Rewrite, Expand, Shorten, Insert };
const char* edit_kind_name(EditKind kind);  // "rewrite", "expand", "shorten", "insert"

// Python str.strip(): Unicode whitespace at both ends removed.
std::string strip(const std::string& s);

// ---------------------------------------------------------------------------------------------
// Articles
// ---------------------------------------------------------------------------------------------

struct Block {
  enum class Kind { Paragraph, Image, Placeholder };
  Kind kind = Kind::Paragraph;
  std::string text;  // Paragraph: the text (may hold Markdown); Image/Placeholder: the caption ("" allowed)
  std::string path;  // Image: the image file, relative to the current folder or absolute
};

struct Article {
  std::vector<Block> blocks;
  int n_paragraphs() const;
  std::vector<std::string> paragraphs() const;
  // Block index of paragraph `i` (0-based), -1 if out of range.
  int paragraph_block(int i) const;
  // The first paragraph without Markdown heading marks, cut to 120 bytes (whole UTF-8 characters).
  std::string title() const;
};

// Markdown: blocks separated by blank lines; an image is `![caption](path)` with the path relative to
// `markdown_dir` (the folder the Markdown file will live in); a placeholder is the line
// `> **Image placeholder:** caption`. Ends with a newline.
std::string to_markdown(const Article& article, const std::string& markdown_dir);

// Reads an article back (for edits): blocks are separated by blank lines; a text without any blank
// line (plain model output) has one paragraph per line. Within a block, a line `![caption](path)` is
// an image (relative paths are taken relative to `markdown_dir`) and a placeholder line is a
// placeholder; the other lines form paragraphs.
Article parse_markdown(const std::string& text, const std::string& markdown_dir);

// One self-contained HTML page: escaped text, headings for Markdown "#" lines, images embedded as
// data: URIs (MIME type from the file's magic bytes), placeholders as dashed boxes with the caption.
// Throws Error{NotFound/Io} if an image file cannot be read.
std::string to_html(const Article& article, const std::string& title);

// ---------------------------------------------------------------------------------------------
// The protocol driver
// ---------------------------------------------------------------------------------------------

enum class Step { Article, Slots, Caption, Selection, Edit };

// The demo's generation settings: sampling, temperature 1.0, top_p 0.8, top_k 40, repetition_penalty
// 1.005, 4096 new tokens (the article's "Max output tokens").
GenerationOptions demo_generation_options();

struct PoolImage {
  std::string path;
  std::string caption;
};

struct ComposeOptions {
  std::string instruction;          // title / outline / material for the article
  std::vector<std::string> images;  // user images (step 3b), at most kMaxImages
  std::vector<PoolImage> pool;      // captioned local images (step 3a); not with `images`
  int slots = 0;                    // 0: text only; K > 0: ask for K images; kAutoSlots: the model decides
  // When non-empty, images go after these paragraphs (0-based; indices past the article's end and
  // repeats are dropped) and step 2 is skipped; `slots` is then ignored.
  std::vector<int> positions;
  bool with_meta = false;        // the demo's "With Meta" checkbox (off by default)
  uint64_t seed = kDefaultSeed;  // every step is seeded with it
  // The sampling settings (do_sample, temperature, top_k, top_p, repetition_penalty, stop_ids) apply to
  // every step; max_new_tokens and ignore_eos to the article only (slots and captions: 200 new tokens,
  // the image choice: 10). Prompts longer than the context are cut, as upstream.
  GenerationOptions generation = demo_generation_options();
};

// A model call, for logging: the step, the prompt text, the decoded output.
struct Trace {
  Step step;
  std::string label;  // e.g. "article", "slots", "caption 2/5", "selection 2/5"
  std::string prompt;
  std::string output;
  GenerationResult result;
};

struct Events {
  std::function<void(const std::string& message)> on_progress;  // one line per step / slot
  StreamCallback on_article_text;                               // the article as it is generated
  std::function<void(const Trace&)> on_trace;                   // after each model call
};

struct ComposeResult {
  Article article;
  std::string article_text;           // the model's raw article
  std::vector<int> slots;             // paragraph indices chosen in step 2 (in the model's order)
  std::vector<SlotCaption> captions;  // step 3a
  int n_fallbacks = 0;                // selections where no letter was found and A was used
};

ComposeResult compose(Engine& engine, const ComposeOptions& options, const Events& events = {});

struct EditOptions {
  EditKind kind = EditKind::Rewrite;
  // Rewrite/Expand/Shorten: the paragraph (0-based, images not counted). Insert: the new paragraph
  // goes after paragraph `paragraph` and the images that follow it; -1 inserts before the first.
  int paragraph = 0;
  std::string instruction;  // material (rewrite/expand) or outline (insert; required)
  bool with_meta = false;
  uint64_t seed = kDefaultSeed;
  GenerationOptions generation = demo_generation_options();  // sampling settings
  int length_budget = kEditLengthBudget;
};

struct EditResult {
  Article article;       // the updated article
  std::string new_text;  // the new paragraph (newlines turned into spaces, as the demo)
  int paragraph = 0;     // index of the new/changed paragraph in the updated article
};

// Throws Error{InvalidArgument} for a bad paragraph index, a missing outline, a prompt longer than
// the length budget, or an empty model answer (the article is then left as it was).
EditResult edit(Engine& engine, const Article& article, const EditOptions& options, const Events& events = {});

}  // namespace xc2::compose
