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
#include <optional>
#include <string>
#include <vector>

#include "xc2/engine.h"

namespace xc2::compose {

constexpr int kMaxParagraphs = 60;         // the demo's max_section
constexpr int kMaxImages = 10;             // uploads accepted by the demo
constexpr int kPoolCandidates = 4;         // candidates per slot (the demo's retrieval service returned 4)
constexpr int kAutoSlots = -1;             // ComposeOptions::slots: let the model choose how many
constexpr uint64_t kDefaultSeed = 8909;    // the demo's default UI seed
constexpr int kEditLengthBudget = 500;     // edits: max_new_tokens = 500 - prompt positions
constexpr int32_t kDemoStopToken = 92397;  // the demo's extra stopping criterion (model-spec §12.1)

extern const char* const kImageMarker;      // "<image>"
extern const char* const kLocationPrefix;   // "适合插入图像的行是"
extern const char* const kCaptionPrefix;    // "标题是\""
extern const char* const kSelectionPrefix;  // "最合适的图是"

// ---------------------------------------------------------------------------------------------
// Prompt builders (model-spec §12). `with_meta` adds the demo's text-only system turn (§10.2).
// ---------------------------------------------------------------------------------------------

// "[UNUSED_TOKEN_146]user\n{text}[UNUSED_TOKEN_145]\n[UNUSED_TOKEN_146]assistant\n", optionally
// preceded by "[UNUSED_TOKEN_146]system\n{compose meta}[UNUSED_TOKEN_145]\n".
std::string text2instruction(const std::string& text, bool with_meta);

// Step 1: text2instruction(('<image> ' * n_images).strip() + instruction).
std::string article_prompt(const std::string& instruction, int n_images, bool with_meta);

// "<Seg{index}> {paragraph}\n"
std::string section(int index, const std::string& paragraph);
// Sections [begin, min(end, n)) concatenated.
std::string sections(const std::vector<std::string>& paragraphs, size_t begin, size_t end);

// Step 2: text2instruction(('<image> ' * n_images).strip() + '给定文章"{sections}"
// 根据上述文章，选择适合插入图像的{k}行')
// + kLocationPrefix. `k` is the number of images as text, or "" for automatic.
std::string location_prompt(const std::vector<std::string>& paragraphs, int n_images, const std::string& k,
                            bool with_meta);

// A caption chosen for an earlier slot: the paragraph index and the caption.
struct SlotCaption {
  int paragraph = 0;
  std::string caption;
};
// The demo's running `pasts` string after the given slots: '现在<Seg{p0}>后插入图像对应的标题是"{c0}"， '
// then '<Seg{p}>后插入图像对应的标题是"{c}"， ' per later slot ("" when `earlier` is empty).
std::string caption_pasts(const std::vector<SlotCaption>& earlier);
// The `past` put into the caption prompt: "" for the first slot, else pasts minus its last two
// characters ("， ") plus "。".
std::string caption_past(const std::vector<SlotCaption>& earlier);

// Step 3a: text2instruction('给定文章"{sections 0..slot+1}" {past}给出适合在<Seg{slot}>后插入的图像对应的标题。')
// + kCaptionPrefix.
std::string caption_prompt(const std::vector<std::string>& paragraphs, int slot, const std::string& past,
                           bool with_meta);

// Steps 3a/3b: text2instruction('根据给定上下文和候选图像，选择合适的配图：' + '<image>'.join(pre_text_list) +
// '候选图像包括: ' + '\n'.join('A.<image>', 'B.<image>', ...)) + kSelectionPrefix.
std::string selection_prompt(const std::vector<std::string>& pre_text_list, int n_candidates, bool with_meta);

enum class EditKind { Rewrite, Expand, Shorten, Insert };
const char* edit_kind_name(EditKind kind);  // "rewrite", "expand", "shorten", "insert"

// §12.6, each wrapped by text2instruction:
//   rewrite  '改写以下段落：{text}\n基于以下素材：{instruction}'
//   expand   '扩写以下段落：{text}\n基于以下素材：{instruction}'
//   shorten  '缩写以下段落：{text}'                        (instruction unused)
//   insert   '在以下两段中插入一段。\n第一段：{text}\n第二段：{next}\n插入段的大纲：{instruction}'
std::string edit_prompt(EditKind kind, const std::string& text, const std::string& next, const std::string& instruction,
                        bool with_meta);

// ---------------------------------------------------------------------------------------------
// Parsing model outputs
// ---------------------------------------------------------------------------------------------

// The demo's post-processing of the article: strip; every run of newlines (with the whitespace around
// and between them, Unicode whitespace as Python's \s) collapses to one "\n"; split on "\n"; keep at
// most `max_paragraphs`. An empty text gives no paragraphs (the demo would keep one empty one).
std::vector<std::string> split_paragraphs(const std::string& text, int max_paragraphs = kMaxParagraphs);

// Python str.strip(): Unicode whitespace at both ends removed.
std::string strip(const std::string& s);

// Every match of <Seg[0-9]*> in kLocationPrefix + output, in order -> paragraph indices. Matches
// without digits or with an index >= n_paragraphs are ignored, repeats dropped, and at most `k`
// kept when k is set (the demo crashes on the first two and keeps everything).
std::vector<int> parse_slots(const std::string& output, int n_paragraphs, std::optional<int> k = std::nullopt);

// The model continues after the prefix '标题是"': the caption is the output up to the first '"', stripped.
std::string parse_caption(const std::string& output);

// The candidate the model picked after '最合适的图是', as an index in [0, n_candidates): the first
// letter A, B, ... (ASCII or full-width) within range that is not part of a longer Latin word, e.g.
// "C", "：B。", "图A", "Answer: B". nullopt if there is none (the caller falls back to A, as the demo).
// The demo instead drops the first two generated tokens (`outputs[0][2:]`, commented "<s>: C":
// with the transformers of its time the inputs_embeds path returned a leading BOS, and the model
// tended to open with a separator), then takes the first non-space character. That drops the
// letter itself whenever the model answers "C" straight away or the library version does not
// return the BOS; looking for the letter does not depend on either.
std::optional<int> parse_letter(const std::string& output, int n_candidates);

// Similarity of two captions in [0, 1]: cosine of character-bigram counts over lowercased text,
// with runs of whitespace and punctuation turned into one separator (works for Chinese, which has no
// spaces, and for English). 1 for equal non-empty texts, 0 if either is empty.
double caption_similarity(const std::string& a, const std::string& b);

// Indices of `texts` by decreasing similarity to `query` (ties: lower index first).
std::vector<size_t> rank_by_similarity(const std::string& query, const std::vector<std::string>& texts);

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

std::string html_escape(const std::string& s);
// "image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", or "application/octet-stream".
std::string mime_type_from_magic(const std::string& bytes);
std::string base64_encode(const std::string& bytes);

// ---------------------------------------------------------------------------------------------
// The protocol driver
// ---------------------------------------------------------------------------------------------

enum class Step { Article, Slots, Caption, Selection, Edit };

// The demo's generation settings: sampling, temperature 1.0, top_p 0.8, top_k 40, repetition_penalty
// 1.005, 4096 new tokens (the article's "Max output tokens").
GenerationOptions demo_generation_options();

// The settings of one step: `base`'s sampling settings (do_sample, temperature, top_k, top_p,
// repetition_penalty), the seed, truncate_prompt on (upstream cuts silently), and the step's
// max_new_tokens: base's for the article (ignore_eos too), 200 for slots and captions, 10 for the
// selection; for edits base's ignore_eos, and the caller sets max_new_tokens (500 - prompt positions). kDemoStopToken
// is added to the stop ids when the vocabulary has it (vocab_size > 92397).
GenerationOptions step_options(Step step, const GenerationOptions& base, uint64_t seed, int vocab_size);

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
