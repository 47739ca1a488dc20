// The composition driver (model-spec §12): compose() and edit(), the sequence of model calls of the
// XC2-7B gradio demo. Built only on the public API (xc2/engine.h) and the standard library, so it
// stays a layer above the engine.
//
// Which upstream code path each step takes (§11.1, §12.1):
//   article                 inputs_embeds, one BOS on the first part     -> Interleave, penalty on output only
//   slots, with uploads     inputs_embeds                                -> Interleave, penalty on output only
//   slots, no uploads       input_ids (the whole prompt, one BOS)        -> Raw, penalty covers the prompt
//   captions (3a)           input_ids                                    -> Raw, penalty covers the prompt
//   selection (3a, 3b)      inputs_embeds                                -> Interleave, penalty on output only
//   edits                   inputs_embeds                                -> Interleave, penalty on output only
#include "compose/driver.h"

#include <algorithm>
#include <map>
#include <set>

#include "compose/parse.h"
#include "compose/prompts.h"
#include "compose/text_util.h"

namespace xc2::compose {

namespace {

// A literal "<image>" in model or user text would be taken for an image marker by the Interleave
// path; a space keeps the text readable and the marker count right.
std::string neutralize(const std::string& s) { return replace_all(s, kImageMarker, "<image >"); }

std::vector<std::string> neutralize_all(const std::vector<std::string>& v) {
  std::vector<std::string> out;
  out.reserve(v.size());
  for (const auto& s : v) out.push_back(neutralize(s));
  return out;
}

// The demo removes both chat markers from every decoded output (the engine already cuts at [UNUSED_TOKEN_145]).
std::string clean_output(const std::string& s) { return replace_all(replace_all(s, kImEnd, ""), kImStart, ""); }

Request interleave_request(const std::string& text, std::vector<ImageHandle> images) {
  Request r;
  r.text = text;
  r.images = std::move(images);
  r.style = PromptStyle::Interleave;
  r.penalize_prompt = false;
  return r;
}

Request raw_request(const std::string& text) {
  Request r;
  r.text = text;
  r.style = PromptStyle::Raw;
  r.penalize_prompt = true;
  return r;
}

std::string plural(size_t n, const char* one, const char* many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

std::string join_ints_1based(const std::vector<int>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i] + 1);
  return s;
}

class Runner {
 public:
  Runner(Engine& engine, const Events& events) : engine_(engine), events_(events), vocab_(engine.info().vocab_size) {}

  void progress(const std::string& message) const {
    if (events_.on_progress) events_.on_progress(message);
  }

  // Texts that did not come from the protocol's own prompts (the instruction, the article's paragraphs, captions):
  // wherever they appear in a prompt they are tokenized as plain text (Request::user_spans), so a special-token
  // string in them never becomes a control token.
  void user_text(const std::string& s) {
    if (!s.empty()) user_texts_.push_back(s);
  }
  Request with_user_spans(Request r) const {
    r.user_spans = find_user_spans(r.text, user_texts_);
    return r;
  }

  GenerationResult run(Step step, const std::string& label, const Request& plain_request,
                       const GenerationOptions& options, const StreamCallback& on_text = {}) {
    const Request request = with_user_spans(plain_request);
    GenerationResult r = engine_.generate(request, options, on_text);
    r.text = clean_output(r.text);
    if (events_.on_trace) events_.on_trace(Trace{step, label, request.text, r.text, r});
    return r;
  }

  GenerationOptions options(Step step, const GenerationOptions& base, uint64_t seed) const {
    return step_options(step, base, seed, vocab_);
  }

  Engine& engine() { return engine_; }

 private:
  Engine& engine_;
  const Events& events_;
  int vocab_;
  std::vector<std::string> user_texts_;
};

struct Candidate {
  ImageHandle handle;
  std::string path;
  int source = -1;  // index into the uploads or the pool
};

// Steps 3a/3b, `model_select_image(base)`: walks the paragraphs; at each slot the text since the last
// slot becomes a chunk, the images chosen so far fill the <image> between chunks, and the model picks
// among the candidates. One candidate is taken directly (the demo does that for uploads; for pool
// candidates its answer could only fall back to A).
void selection_walk(Runner& run, const std::vector<std::string>& paragraphs, const std::vector<int>& slots,
                    const ComposeOptions& o, const std::function<std::vector<Candidate>(int)>& candidates_for,
                    const std::function<void(int, const Candidate&)>& place,
                    const std::function<void(int)>& no_candidate, int& n_fallbacks) {
  const std::set<int> slot_set(slots.begin(), slots.end());
  std::vector<ImageHandle> chosen;
  std::vector<std::string> pre_text_list;
  std::string pre_text;
  size_t slot_no = 0;
  for (int i = 0; i < static_cast<int>(paragraphs.size()); ++i) {
    pre_text += neutralize(paragraphs[static_cast<size_t>(i)]) + "\n";
    if (!slot_set.count(i)) continue;
    ++slot_no;
    const std::vector<Candidate> cands = candidates_for(i);
    const std::string where = "slot " + std::to_string(slot_no) + "/" + std::to_string(slot_set.size()) +
                              " (after paragraph " + std::to_string(i + 1) + ")";
    if (cands.empty()) {
      no_candidate(i);
      continue;
    }
    pre_text_list.push_back(pre_text);
    pre_text.clear();
    int pick = 0;
    if (cands.size() > 1) {
      run.progress("step 3/3: choosing the image for " + where + " among " +
                   plural(cands.size(), "candidate", "candidates"));
      std::vector<ImageHandle> images = chosen;
      for (const Candidate& c : cands) images.push_back(c.handle);
      const std::string text = selection_prompt(pre_text_list, static_cast<int>(cands.size()), o.with_meta);
      const GenerationResult r =
          run.run(Step::Selection, "selection " + std::to_string(slot_no), interleave_request(text, images),
                  run.options(Step::Selection, o.generation, o.seed));
      const std::optional<int> letter = parse_letter(r.text, static_cast<int>(cands.size()));
      if (!letter) {
        ++n_fallbacks;
        run.progress("step 3/3: no candidate letter in the answer \"" + one_line(strip(r.text)) +
                     "\"; using A, as the demo does");
      }
      pick = letter.value_or(0);
    }
    chosen.push_back(cands[static_cast<size_t>(pick)].handle);
    place(i, cands[static_cast<size_t>(pick)]);
  }
}

}  // namespace

GenerationOptions demo_generation_options() {
  GenerationOptions o;
  o.max_new_tokens = 4096;
  o.do_sample = true;
  o.temperature = 1.0f;
  o.top_k = 40;
  o.top_p = 0.8f;
  o.repetition_penalty = 1.005f;
  return o;
}

GenerationOptions step_options(Step step, const GenerationOptions& base, uint64_t seed, int vocab_size) {
  GenerationOptions o;
  o.do_sample = base.do_sample;
  o.temperature = base.temperature;
  o.top_k = base.top_k;
  o.top_p = base.top_p;
  o.repetition_penalty = base.repetition_penalty;
  o.stop_ids = base.stop_ids;
  o.seed = seed;
  o.truncate_prompt = true;
  switch (step) {
    case Step::Article:  // the demo's beam slider acts here (its non-streaming path)
      o.max_new_tokens = base.max_new_tokens;
      o.ignore_eos = base.ignore_eos;
      o.num_beams = base.num_beams;
      o.length_penalty = base.length_penalty;
      break;
    case Step::Slots:
    case Step::Caption:
      o.max_new_tokens = 200;
      break;
    case Step::Selection:
      o.max_new_tokens = 10;
      break;
    case Step::Edit:
      o.max_new_tokens = base.max_new_tokens;
      o.ignore_eos = base.ignore_eos;
      o.num_beams = base.num_beams;
      o.length_penalty = base.length_penalty;
      break;
  }
  if (vocab_size > kDemoStopToken &&
      std::find(o.stop_ids.begin(), o.stop_ids.end(), kDemoStopToken) == o.stop_ids.end())
    o.stop_ids.push_back(kDemoStopToken);
  return o;
}

// Step 2 (`generate_loc`): the model names the paragraphs after which an image goes.
static void choose_slots(Runner& run, const ComposeOptions& o, const std::vector<std::string>& paragraphs,
                         const std::vector<ImageHandle>& uploads, ComposeResult& res) {
  const int n_up = static_cast<int>(uploads.size());
  const int n_par = static_cast<int>(paragraphs.size());
  int k = o.slots;
  if (n_up > 0 && (k == kAutoSlots || k > n_up)) {
    // The demo's UI caps the image number at the number of uploads ("Automatic" included).
    if (k > n_up) run.progress("step 2/3: asking for " + std::to_string(n_up) + " positions, one per image");
    k = n_up;
  }
  run.progress("step 2/3: choosing " + (k == kAutoSlots
                                            ? std::string("the image positions")
                                            : plural(static_cast<size_t>(k), "image position", "image positions")));
  {
    const std::vector<std::string> pars = n_up > 0 ? neutralize_all(paragraphs) : paragraphs;
    const std::string text = location_prompt(pars, n_up, k == kAutoSlots ? "" : std::to_string(k), o.with_meta);
    const Request req = n_up > 0 ? interleave_request(text, uploads) : raw_request(text);
    const GenerationResult r = run.run(Step::Slots, "slots", req, run.options(Step::Slots, o.generation, o.seed));
    res.slots = parse_slots(r.text, n_par, k == kAutoSlots ? std::nullopt : std::optional<int>(k));
  }
}

ComposeResult compose(Engine& engine, const ComposeOptions& o, const Events& events) {
  const int n_up = static_cast<int>(o.images.size());
  if (n_up > kMaxImages)
    throw Error(ErrorCode::InvalidArgument, "at most " + std::to_string(kMaxImages) + " images can be given (got " +
                                                std::to_string(n_up) + "), as in the upstream demo");
  if (n_up > 0 && !o.pool.empty())
    throw Error(ErrorCode::InvalidArgument, "user images and an image pool cannot be used together");
  if (o.slots < kAutoSlots)
    throw Error(ErrorCode::InvalidArgument, "the number of image slots must be >= 0 or automatic");
  if (strip(o.instruction).empty()) throw Error(ErrorCode::InvalidArgument, "the instruction is empty");
  if (o.instruction.find(kImageMarker) != std::string::npos)
    throw Error(ErrorCode::InvalidArgument,
                "the instruction contains the image marker '<image>'; pass images as files instead");

  Runner run(engine, events);
  run.user_text(o.instruction);
  for (const PoolImage& p : o.pool) run.user_text(p.caption);
  ComposeResult res;
  for (int p : o.positions)
    if (p < 0) throw Error(ErrorCode::InvalidArgument, "image positions must be paragraph indices >= 0");
  const bool want_images = o.slots != 0 || !o.positions.empty();
  const std::string n_steps = want_images ? "3" : "1";

  std::vector<ImageHandle> uploads;
  if (n_up > 0) {
    run.progress("encoding " + plural(static_cast<size_t>(n_up), "image", "images"));
    uploads = engine.encode_images(o.images);
  }

  // Step 1: the article.
  run.progress("step 1/" + n_steps + ": writing the article");
  {
    const Request req = interleave_request(article_prompt(o.instruction, n_up, o.with_meta), uploads);
    const GenerationResult r = run.run(Step::Article, "article", req, run.options(Step::Article, o.generation, o.seed),
                                       events.on_article_text);
    res.article_text = r.text;
    if (r.stop_reason == StopReason::MaxNewTokens)
      run.progress("step 1/" + n_steps + ": the article reached the token limit (" + std::to_string(r.tokens.size()) +
                   " tokens) and may end mid-sentence");
  }
  const std::vector<std::string> paragraphs = split_paragraphs(res.article_text, kMaxParagraphs);
  if (split_paragraphs(res.article_text, -1).size() > paragraphs.size())
    run.progress("step 1/" + n_steps + ": only the first " + std::to_string(kMaxParagraphs) +
                 " paragraphs are kept, as in the demo");
  for (const std::string& p : paragraphs) {
    res.article.blocks.push_back(Block{Block::Kind::Paragraph, p, ""});
    run.user_text(p);
  }
  if (!want_images) return res;
  if (paragraphs.empty()) {
    run.progress("step 2/3: the article is empty; no images");
    return res;
  }
  const int n_par = static_cast<int>(paragraphs.size());

  // Step 2: where images go (unless the caller says).
  if (!o.positions.empty()) {
    std::set<int> seen;
    for (int p : o.positions)
      if (p < n_par && seen.insert(p).second) res.slots.push_back(p);
    if (res.slots.size() < o.positions.size())
      run.progress("step 2/3: the article has " + plural(static_cast<size_t>(n_par), "paragraph", "paragraphs") +
                   "; positions past its end and repeats are dropped");
  } else {
    choose_slots(run, o, paragraphs, uploads, res);
  }
  if (res.slots.empty()) {
    run.progress("step 2/3: no image positions; the article stays text only");
    return res;
  }
  run.progress("step 2/3: images after paragraph" + std::string(res.slots.size() > 1 ? "s " : " ") +
               join_ints_1based(res.slots));

  std::map<int, Block> figure_at;
  int n_fallbacks = 0;
  if (n_up == 0) {
    // Step 3a: a caption per slot, in the model's order, each seeing the earlier ones.
    std::map<int, std::string> caption_of;
    for (size_t idx = 0; idx < res.slots.size(); ++idx) {
      const int po = res.slots[idx];
      run.progress("step 3/3: caption " + std::to_string(idx + 1) + "/" + std::to_string(res.slots.size()) +
                   " (after paragraph " + std::to_string(po + 1) + ")");
      const std::string text = caption_prompt(paragraphs, po, caption_past(res.captions), o.with_meta);
      const GenerationResult r = run.run(Step::Caption, "caption " + std::to_string(idx + 1), raw_request(text),
                                         run.options(Step::Caption, o.generation, o.seed));
      const std::string cap = parse_caption(r.text);
      run.user_text(cap);
      res.captions.push_back(SlotCaption{po, cap});
      caption_of[po] = cap;
    }
    if (o.pool.empty()) {
      for (const auto& [po, cap] : caption_of) figure_at[po] = Block{Block::Kind::Placeholder, cap, ""};
    } else {
      std::vector<std::string> pool_caps;
      for (const PoolImage& p : o.pool) pool_caps.push_back(p.caption);
      std::map<size_t, ImageHandle> encoded;
      std::set<size_t> used, bad;
      auto candidates_for = [&](int po) {
        std::vector<Candidate> out;
        for (size_t j : rank_by_similarity(caption_of[po], pool_caps)) {
          if (static_cast<int>(out.size()) >= kPoolCandidates) break;
          if (used.count(j) || bad.count(j)) continue;
          auto it = encoded.find(j);
          if (it == encoded.end()) {
            try {
              it = encoded.emplace(j, engine.encode_image(o.pool[j].path)).first;
            } catch (const Error& e) {
              run.progress(std::string("skipping pool image: ") + e.what());
              bad.insert(j);
              continue;
            }
          }
          out.push_back(Candidate{it->second, o.pool[j].path, static_cast<int>(j)});
        }
        return out;
      };
      auto place = [&](int po, const Candidate& c) {
        used.insert(static_cast<size_t>(c.source));
        figure_at[po] = Block{Block::Kind::Image, caption_of[po], c.path};
      };
      auto none = [&](int po) {
        run.progress("step 3/3: no unused pool image left for paragraph " + std::to_string(po + 1) +
                     "; leaving a placeholder");
        figure_at[po] = Block{Block::Kind::Placeholder, caption_of[po], ""};
      };
      selection_walk(run, paragraphs, res.slots, o, candidates_for, place, none, n_fallbacks);
    }
  } else {
    // Step 3b: the model places the uploads, each at most once.
    std::set<int> used;
    auto candidates_for = [&](int) {
      std::vector<Candidate> out;
      for (int j = 0; j < n_up; ++j)
        if (!used.count(j))
          out.push_back(Candidate{uploads[static_cast<size_t>(j)], o.images[static_cast<size_t>(j)], j});
      return out;
    };
    auto place = [&](int po, const Candidate& c) {
      used.insert(c.source);
      figure_at[po] = Block{Block::Kind::Image, "", c.path};
    };
    auto none = [&](int po) {
      run.progress("step 3/3: every image is placed; nothing after paragraph " + std::to_string(po + 1));
    };
    selection_walk(run, paragraphs, res.slots, o, candidates_for, place, none, n_fallbacks);
  }
  res.n_fallbacks = n_fallbacks;

  res.article.blocks.clear();
  for (int i = 0; i < n_par; ++i) {
    res.article.blocks.push_back(Block{Block::Kind::Paragraph, paragraphs[static_cast<size_t>(i)], ""});
    const auto it = figure_at.find(i);
    if (it != figure_at.end()) res.article.blocks.push_back(it->second);
  }
  return res;
}

EditResult edit(Engine& engine, const Article& article, const EditOptions& o, const Events& events) {
  const std::vector<std::string> paragraphs = article.paragraphs();
  const int n = static_cast<int>(paragraphs.size());
  const char* name = edit_kind_name(o.kind);
  if (o.kind == EditKind::Insert) {
    if (o.paragraph < -1 || o.paragraph >= n)
      throw Error(ErrorCode::InvalidArgument, std::string("insert: paragraph ") + std::to_string(o.paragraph + 1) +
                                                  " is out of range (the article has " +
                                                  plural(static_cast<size_t>(n), "paragraph", "paragraphs") +
                                                  "; 0 inserts at the start)");
    if (strip(o.instruction).empty())
      throw Error(ErrorCode::InvalidArgument, "insert needs an outline of the new paragraph (the instruction)");
  } else if (o.paragraph < 0 || o.paragraph >= n) {
    throw Error(ErrorCode::InvalidArgument, std::string(name) + ": paragraph " + std::to_string(o.paragraph + 1) +
                                                " is out of range (the article has " +
                                                plural(static_cast<size_t>(n), "paragraph", "paragraphs") + ")");
  }
  if (o.length_budget <= 0) throw Error(ErrorCode::InvalidArgument, "the edit length budget must be positive");

  Runner run(engine, events);
  std::string text, next;
  if (o.kind == EditKind::Insert) {
    text = o.paragraph >= 0 ? paragraphs[static_cast<size_t>(o.paragraph)] : "";
    next = o.paragraph + 1 < n ? paragraphs[static_cast<size_t>(o.paragraph + 1)] : "";
  } else {
    text = paragraphs[static_cast<size_t>(o.paragraph)];
  }
  const std::string prompt =
      edit_prompt(o.kind, neutralize(text), neutralize(next), neutralize(o.instruction), o.with_meta);
  run.user_text(neutralize(text));
  run.user_text(neutralize(next));
  run.user_text(neutralize(o.instruction));
  const Request req = run.with_user_spans(interleave_request(prompt, {}));
  const int64_t positions = static_cast<int64_t>(engine.prompt_tokens(req).size());
  const int64_t budget = o.length_budget - positions;
  if (budget <= 0)
    throw Error(ErrorCode::InvalidArgument, std::string(name) + ": the prompt takes " + std::to_string(positions) +
                                                " positions, which leaves nothing of the demo's budget of " +
                                                std::to_string(o.length_budget) +
                                                " (prompt + new tokens); shorten the paragraph or the instruction");
  GenerationOptions opts = run.options(Step::Edit, o.generation, o.seed);
  opts.max_new_tokens = static_cast<int>(budget);
  const std::string what = o.kind == EditKind::Insert
                               ? "writing a new paragraph after paragraph " + std::to_string(o.paragraph + 1)
                               : std::string(name) + " paragraph " + std::to_string(o.paragraph + 1);
  run.progress(what + " (prompt " + std::to_string(positions) + " positions, up to " + std::to_string(budget) +
               " new tokens)");
  const GenerationResult r = run.run(Step::Edit, name, req, opts, events.on_article_text);

  // done_edit: re.sub(r'\n+', ' ', new_text); stripped here as well.
  std::string new_text;
  for (size_t i = 0; i < r.text.size(); ++i) {
    if (r.text[i] == '\n') {
      while (i + 1 < r.text.size() && r.text[i + 1] == '\n') ++i;
      new_text += ' ';
    } else {
      new_text += r.text[i];
    }
  }
  new_text = strip(new_text);
  if (new_text.empty())
    throw Error(
        ErrorCode::InvalidArgument,
        std::string(name) + ": the model returned an empty paragraph; the article is unchanged (try another seed)");

  EditResult res;
  res.article = article;
  res.new_text = new_text;
  if (o.kind == EditKind::Insert) {
    size_t at;
    if (o.paragraph < 0) {
      const int first = article.paragraph_block(0);
      at = first >= 0 ? static_cast<size_t>(first) : article.blocks.size();
    } else {
      at = static_cast<size_t>(article.paragraph_block(o.paragraph)) + 1;
      while (at < article.blocks.size() && article.blocks[at].kind != Block::Kind::Paragraph) ++at;
    }
    res.article.blocks.insert(res.article.blocks.begin() + static_cast<std::ptrdiff_t>(at),
                              Block{Block::Kind::Paragraph, new_text, ""});
    res.paragraph = o.paragraph + 1;
  } else {
    res.article.blocks[static_cast<size_t>(article.paragraph_block(o.paragraph))].text = new_text;
    res.paragraph = o.paragraph;
  }
  return res;
}

}  // namespace xc2::compose
