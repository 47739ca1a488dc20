// The composition protocol of the XC2-7B gradio demo (model-spec §12): prompt builders, output
// parsing, Markdown/HTML rendering and the multi-call driver. Built only on the public API
// (xc2/engine.h) and the standard library, so it stays a layer above the engine.
//
// Which upstream code path each step takes (§11.1, §12.1):
//   article                 inputs_embeds, one BOS on the first part     -> Interleave, penalty on output only
//   slots, with uploads     inputs_embeds                                -> Interleave, penalty on output only
//   slots, no uploads       input_ids (the whole prompt, one BOS)        -> Raw, penalty covers the prompt
//   captions (3a)           input_ids                                    -> Raw, penalty covers the prompt
//   selection (3a, 3b)      inputs_embeds                                -> Interleave, penalty on output only
//   edits                   inputs_embeds                                -> Interleave, penalty on output only
#include "xc2/compose.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <unordered_map>

namespace xc2::compose {

const char* const kImageMarker = "<image>";
const char* const kLocationPrefix = "适合插入图像的行是";
const char* const kCaptionPrefix = "标题是\"";
const char* const kSelectionPrefix = "最合适的图是";

namespace {

namespace fs = std::filesystem;

const char* const kImStart = "[UNUSED_TOKEN_146]";
const char* const kImEnd = "[UNUSED_TOKEN_145]";
const char* const kPlaceholderLead = "> **Image placeholder:**";

// ---- UTF-8 ----

// Decodes the code point at s[i]; sets `len` to its byte length. Invalid bytes decode as themselves
// (one byte, value >= 0x80 but never whitespace or a letter), so nothing is lost.
uint32_t decode_at(const std::string& s, size_t i, size_t& len) {
  const unsigned char c = static_cast<unsigned char>(s[i]);
  int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
  if (n == 0 || i + static_cast<size_t>(n) > s.size()) {
    len = 1;
    return 0xDC00u + c;  // a lone surrogate value: never whitespace, never a letter
  }
  uint32_t cp = n == 1 ? c : c & (0x7f >> n);
  for (int k = 1; k < n; ++k) {
    const unsigned char cc = static_cast<unsigned char>(s[i + static_cast<size_t>(k)]);
    if ((cc >> 6) != 2) {
      len = 1;
      return 0xDC00u + c;
    }
    cp = (cp << 6) | (cc & 0x3f);
  }
  len = static_cast<size_t>(n);
  return cp;
}

// Python's str.isspace() (and so the `\s` of `re` on str patterns).
bool is_py_space(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

bool is_separator(uint32_t cp) {
  if (is_py_space(cp)) return true;
  if (cp < 0x80) return std::strchr("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", static_cast<int>(cp)) != nullptr && cp != 0;
  return (cp >= 0x2010 && cp <= 0x205E) ||  // general punctuation: dashes, quotes, ellipsis
         (cp >= 0x3000 && cp <= 0x303F) ||  // CJK symbols and punctuation: 、。「」《》
         (cp >= 0xFF01 && cp <= 0xFF0F) || (cp >= 0xFF1A && cp <= 0xFF20) || (cp >= 0xFF3B && cp <= 0xFF40) ||
         (cp >= 0xFF5B && cp <= 0xFF65) ||  // full-width punctuation: ，！？：；（）
         cp == 0xB7;                        // middle dot
}

bool is_latin_letter(uint32_t cp) {
  return (cp >= 'A' && cp <= 'Z') || (cp >= 'a' && cp <= 'z') || (cp >= 0xFF21 && cp <= 0xFF3A) ||
         (cp >= 0xFF41 && cp <= 0xFF5A);
}

std::vector<uint32_t> code_points(const std::string& s) {
  std::vector<uint32_t> out;
  for (size_t i = 0, len = 0; i < s.size(); i += len) out.push_back(decode_at(s, i, len));
  return out;
}

// Whole UTF-8 characters of s, at most max_bytes bytes.
std::string cut_utf8(const std::string& s, size_t max_bytes) {
  if (s.size() <= max_bytes) return s;
  size_t i = 0, len = 0;
  while (i < s.size()) {
    decode_at(s, i, len);
    if (i + len > max_bytes) break;
    i += len;
  }
  return s.substr(0, i);
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  if (from.empty()) return s;
  for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size())) s.replace(p, from.size(), to);
  return s;
}

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.size() >= prefix.size() && s.compare(0, prefix.size(), prefix) == 0;
}

// C0 control characters (and DEL) other than tab and newline (a model can emit them; HTML forbids them and
// they garble terminals) dropped; \r becomes a space.
std::string drop_controls(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (u == '\r')
      out += ' ';
    else if ((u >= 0x20 && u != 0x7f) || u == '\t' || u == '\n')
      out += c;
  }
  return out;
}

// One line for messages: controls dropped, newlines as spaces.
std::string one_line(const std::string& s) { return replace_all(drop_controls(s), "\n", " "); }

std::string repeat_markers(int n) {
  // ('<image> ' * n).strip()
  std::string s;
  for (int i = 0; i < n; ++i) s += i ? " <image>" : "<image>";
  return s;
}

// ---- driver helpers ----

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

  GenerationResult run(Step step, const std::string& label, const Request& request, const GenerationOptions& options,
                       const StreamCallback& on_text = {}) {
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

// ---- Markdown helpers ----

std::string md_escape_alt(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\n' || c == '\r') {
      out += ' ';
      continue;
    }
    if (c == '[' || c == ']' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

bool is_url(const std::string& p) { return p.find("://") != std::string::npos || starts_with(p, "data:"); }

std::string md_destination(const std::string& path) {
  bool needs_angle = false;
  for (char c : path) needs_angle |= c == ' ' || c == '(' || c == ')' || c == '\t';
  if (!needs_angle) return path;
  std::string out = "<";
  for (char c : path) {
    if (c == '<')
      out += "%3C";
    else if (c == '>')
      out += "%3E";
    else
      out += c;
  }
  return out + ">";
}

std::string relative_to(const std::string& path, const std::string& dir) {
  if (is_url(path)) return path;
  std::error_code ec;
  const fs::path abs = fs::absolute(fs::path(path), ec).lexically_normal();
  if (ec) return path;
  const fs::path base = fs::absolute(fs::path(dir.empty() ? "." : dir), ec).lexically_normal();
  if (ec) return path;
  const fs::path rel = abs.lexically_relative(base);
  if (rel.empty()) return abs.generic_string();
  return rel.generic_string();
}

// "![caption](dest)" (optionally with a title after the destination) -> caption, dest.
bool parse_image_line(const std::string& line, std::string& caption, std::string& dest) {
  const std::string s = strip(line);
  if (!starts_with(s, "![") || s.back() != ')') return false;
  size_t i = 2;
  int depth = 0;
  std::string cap;
  for (; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '\\' && i + 1 < s.size()) {
      cap += s[++i];
      continue;
    }
    if (c == '[') ++depth;
    if (c == ']') {
      if (depth == 0) break;
      --depth;
    }
    cap += c;
  }
  if (i + 1 >= s.size() || s[i] != ']' || s[i + 1] != '(') return false;
  std::string d = s.substr(i + 2, s.size() - (i + 2) - 1);
  d = strip(d);
  if (!d.empty() && d[0] == '<') {
    const size_t close = d.find('>');
    if (close == std::string::npos) return false;
    d = d.substr(1, close - 1);
    d = replace_all(replace_all(d, "%3C", "<"), "%3E", ">");
  } else {
    const size_t sp = d.find_first_of(" \t");
    if (sp != std::string::npos) d = d.substr(0, sp);  // drop a "title"
  }
  if (d.empty()) return false;
  caption = strip(cap);
  dest = d;
  return true;
}

bool parse_placeholder_line(const std::string& line, std::string& caption) {
  const std::string s = strip(line);
  if (!starts_with(s, kPlaceholderLead)) return false;
  caption = strip(s.substr(std::strlen(kPlaceholderLead)));
  return true;
}

// ---- HTML helpers ----

// Escaped text with **bold** spans.
std::string inline_html(const std::string& text) {
  std::string esc = html_escape(text);
  std::string out;
  size_t pos = 0;
  while (true) {
    const size_t a = esc.find("**", pos);
    if (a == std::string::npos) break;
    const size_t b = esc.find("**", a + 2);
    if (b == std::string::npos || b == a + 2) break;
    out += esc.substr(pos, a - pos) + "<strong>" + esc.substr(a + 2, b - a - 2) + "</strong>";
    pos = b + 2;
  }
  out += esc.substr(pos);
  return out;
}

std::string paragraph_html(const std::string& text) {
  int level = 0;
  while (level < static_cast<int>(text.size()) && level < 7 && text[static_cast<size_t>(level)] == '#') ++level;
  if (level >= 1 && level <= 6 && static_cast<size_t>(level) < text.size() && text[static_cast<size_t>(level)] == ' ') {
    const std::string tag = "h" + std::to_string(level);
    return "<" + tag + ">" + inline_html(strip(text.substr(static_cast<size_t>(level)))) + "</" + tag + ">\n";
  }
  std::string body;
  std::istringstream lines(text);
  std::string line;
  bool first = true;
  while (std::getline(lines, line)) {
    if (!first) body += "<br>\n";
    body += inline_html(line);
    first = false;
  }
  return "<p>" + body + "</p>\n";
}

const char* const kCss = R"(
:root { color-scheme: light dark; --fg: #1d1d1f; --bg: #fdfdfc; --muted: #6b6b70; --rule: #d8d8dc; }
@media (prefers-color-scheme: dark) { :root { --fg: #e8e8ea; --bg: #18181a; --muted: #a0a0a8; --rule: #3a3a40; } }
html { background: var(--bg); color: var(--fg); }
body { margin: 0; padding: 3rem 1.25rem 4rem;
  font: 18px/1.75 "Iowan Old Style", "Palatino Linotype", Georgia, "Noto Serif CJK SC", "Songti SC", "Source Han Serif SC", serif; }
main { max-width: 42rem; margin: 0 auto; }
h1, h2, h3, h4, h5, h6 { font-family: system-ui, -apple-system, "Segoe UI", "Noto Sans CJK SC", "PingFang SC", sans-serif;
  line-height: 1.3; margin: 2.2rem 0 0.8rem; }
h1 { font-size: 2rem; } h2 { font-size: 1.5rem; } h3 { font-size: 1.25rem; }
p { margin: 0 0 1.2rem; text-align: justify; hyphens: auto; overflow-wrap: break-word; }
:lang(en) p { text-align: left; }
figure { margin: 2rem 0; text-align: center; }
figure img { max-width: 100%; height: auto; border-radius: 6px; box-shadow: 0 1px 6px rgba(0,0,0,0.18); }
figcaption { margin-top: 0.6rem; font-size: 0.9rem; color: var(--muted); font-style: italic; }
figure.placeholder .box { border: 2px dashed var(--rule); border-radius: 6px; padding: 2.5rem 1rem; color: var(--muted);
  font-family: system-ui, sans-serif; font-size: 0.95rem; letter-spacing: 0.05em; text-transform: uppercase; }
footer { max-width: 42rem; margin: 3rem auto 0; padding-top: 1rem; border-top: 1px solid var(--rule);
  color: var(--muted); font: 0.8rem system-ui, sans-serif; }
)";

}  // namespace

// ---------------------------------------------------------------------------------------------
// Prompt builders
// ---------------------------------------------------------------------------------------------

std::string text2instruction(const std::string& text, bool with_meta) {
  std::string s;
  if (with_meta) s += std::string(kImStart) + "system\n" + compose_system_prompt() + kImEnd + "\n";
  s += std::string(kImStart) + "user\n" + text + kImEnd + "\n" + kImStart + "assistant\n";
  return s;
}

std::string article_prompt(const std::string& instruction, int n_images, bool with_meta) {
  return text2instruction(repeat_markers(n_images) + instruction, with_meta);
}

std::string section(int index, const std::string& paragraph) {
  return "<Seg" + std::to_string(index) + "> " + paragraph + "\n";
}

std::string sections(const std::vector<std::string>& paragraphs, size_t begin, size_t end) {
  std::string s;
  for (size_t i = begin; i < std::min(end, paragraphs.size()); ++i) s += section(static_cast<int>(i), paragraphs[i]);
  return s;
}

std::string location_prompt(const std::vector<std::string>& paragraphs, int n_images, const std::string& k,
                            bool with_meta) {
  const std::string text = repeat_markers(n_images) + "给定文章\"" + sections(paragraphs, 0, paragraphs.size()) +
                           "\" 根据上述文章，选择适合插入图像的" + k + "行";
  return text2instruction(text, with_meta) + kLocationPrefix;
}

std::string caption_pasts(const std::vector<SlotCaption>& earlier) {
  std::string pasts;
  for (size_t i = 0; i < earlier.size(); ++i) {
    pasts += (i == 0 ? "现在<Seg" : "<Seg") + std::to_string(earlier[i].paragraph) + ">后插入图像对应的标题是\"" +
             earlier[i].caption + "\"， ";
  }
  return pasts;
}

std::string caption_past(const std::vector<SlotCaption>& earlier) {
  if (earlier.empty()) return "";
  std::string pasts = caption_pasts(earlier);
  // pasts[:-2]: the last two characters are "，" (3 bytes) and " ".
  static const std::string kTail = "， ";
  pasts.resize(pasts.size() - kTail.size());
  return pasts + "。";
}

std::string caption_prompt(const std::vector<std::string>& paragraphs, int slot, const std::string& past,
                           bool with_meta) {
  const size_t end = static_cast<size_t>(std::max(0, slot + 2));
  const std::string text = "给定文章\"" + sections(paragraphs, 0, end) + "\" " + past + "给出适合在<Seg" +
                           std::to_string(slot) + ">后插入的图像对应的标题。";
  return text2instruction(text, with_meta) + kCaptionPrefix;
}

std::string selection_prompt(const std::vector<std::string>& pre_text_list, int n_candidates, bool with_meta) {
  std::string text = "根据给定上下文和候选图像，选择合适的配图：";
  for (size_t i = 0; i < pre_text_list.size(); ++i) text += (i ? kImageMarker : "") + pre_text_list[i];
  text += "候选图像包括: ";
  for (int j = 0; j < n_candidates; ++j) {
    if (j) text += "\n";
    text += static_cast<char>('A' + j);
    text += ".<image>";
  }
  return text2instruction(text, with_meta) + kSelectionPrefix;
}

const char* edit_kind_name(EditKind kind) {
  switch (kind) {
    case EditKind::Rewrite:
      return "rewrite";
    case EditKind::Expand:
      return "expand";
    case EditKind::Shorten:
      return "shorten";
    case EditKind::Insert:
      return "insert";
  }
  return "?";
}

std::string edit_prompt(EditKind kind, const std::string& text, const std::string& next, const std::string& instruction,
                        bool with_meta) {
  std::string inner;
  switch (kind) {
    case EditKind::Rewrite:
      inner = "改写以下段落：" + text + "\n基于以下素材：" + instruction;
      break;
    case EditKind::Expand:
      inner = "扩写以下段落：" + text + "\n基于以下素材：" + instruction;
      break;
    case EditKind::Shorten:
      inner = "缩写以下段落：" + text;
      break;
    case EditKind::Insert:
      inner = "在以下两段中插入一段。\n第一段：" + text + "\n第二段：" + next + "\n插入段的大纲：" + instruction;
      break;
  }
  return text2instruction(inner, with_meta);
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

std::string strip(const std::string& s) {
  size_t b = 0, len = 0;
  while (b < s.size()) {
    const uint32_t cp = decode_at(s, b, len);
    if (!is_py_space(cp)) break;
    b += len;
  }
  size_t e = b;  // end of the last non-space character
  for (size_t i = b; i < s.size(); i += len) {
    const uint32_t cp = decode_at(s, i, len);
    if (!is_py_space(cp)) e = i + len;
  }
  return s.substr(b, e - b);
}

std::vector<std::string> split_paragraphs(const std::string& text, int max_paragraphs) {
  const std::string s = strip(text);
  std::vector<std::string> out;
  if (s.empty()) return out;
  // re.sub(r'(\n\s*)+', '\n', s): a newline swallows all the whitespace (newlines included) after it.
  std::string cur;
  size_t i = 0, len = 0;
  while (i < s.size()) {
    if (s[i] == '\n') {
      out.push_back(cur);
      cur.clear();
      ++i;
      while (i < s.size() && is_py_space(decode_at(s, i, len))) i += len;
      continue;
    }
    decode_at(s, i, len);
    cur.append(s, i, len);
    i += len;
  }
  out.push_back(cur);
  if (max_paragraphs >= 0 && out.size() > static_cast<size_t>(max_paragraphs))
    out.resize(static_cast<size_t>(max_paragraphs));
  return out;
}

std::vector<int> parse_slots(const std::string& output, int n_paragraphs, std::optional<int> k) {
  const std::string s = std::string(kLocationPrefix) + output;
  std::vector<int> out;
  std::set<int> seen;
  size_t p = s.find("<Seg");
  while (p != std::string::npos) {
    size_t q = p + 4;
    while (q < s.size() && s[q] >= '0' && s[q] <= '9') ++q;
    if (q < s.size() && s[q] == '>') {
      const size_t n_digits = q - (p + 4);
      if (n_digits > 0 && n_digits <= 9) {
        const int idx = std::stoi(s.substr(p + 4, n_digits));
        if (idx < n_paragraphs && seen.insert(idx).second) {
          if (k && static_cast<int>(out.size()) >= *k) break;
          out.push_back(idx);
        }
      }
      p = s.find("<Seg", q + 1);
    } else {
      p = s.find("<Seg", p + 1);
    }
  }
  return out;
}

std::string parse_caption(const std::string& output) {
  const size_t q = output.find('"');
  return strip(q == std::string::npos ? output : output.substr(0, q));
}

std::optional<int> parse_letter(const std::string& output, int n_candidates) {
  const std::vector<uint32_t> cps = code_points(output);
  for (size_t i = 0; i < cps.size(); ++i) {
    int j = -1;
    if (cps[i] >= 'A' && cps[i] <= 'Z')
      j = static_cast<int>(cps[i] - 'A');
    else if (cps[i] >= 0xFF21 && cps[i] <= 0xFF3A)
      j = static_cast<int>(cps[i] - 0xFF21);
    if (j < 0 || j >= n_candidates) continue;
    const bool word_before = i > 0 && is_latin_letter(cps[i - 1]);
    const bool word_after = i + 1 < cps.size() && is_latin_letter(cps[i + 1]);
    if (!word_before && !word_after) return j;
  }
  return std::nullopt;
}

double caption_similarity(const std::string& a, const std::string& b) {
  auto grams = [](const std::string& s) {
    std::vector<uint32_t> seq;
    for (uint32_t cp : code_points(s)) {
      if (is_separator(cp)) {
        if (!seq.empty() && seq.back() != ' ') seq.push_back(' ');
        continue;
      }
      if (cp >= 'A' && cp <= 'Z') cp += 'a' - 'A';
      if (cp >= 0xFF21 && cp <= 0xFF3A) cp = cp - 0xFF21 + 'a';  // full-width Latin
      if (cp >= 0xFF41 && cp <= 0xFF5A) cp = cp - 0xFF41 + 'a';
      if (cp >= 0xFF10 && cp <= 0xFF19) cp = cp - 0xFF10 + '0';
      seq.push_back(cp);
    }
    if (!seq.empty() && seq.back() == ' ') seq.pop_back();
    std::unordered_map<uint64_t, double> counts;
    if (seq.size() == 1) counts[seq[0]] += 1;
    for (size_t i = 0; i + 1 < seq.size(); ++i) counts[(static_cast<uint64_t>(seq[i]) << 32) | seq[i + 1]] += 1;
    return counts;
  };
  const auto ga = grams(a), gb = grams(b);
  if (ga.empty() || gb.empty()) return 0.0;
  double dot = 0, na = 0, nb = 0;
  for (const auto& [g, c] : ga) {
    na += c * c;
    const auto it = gb.find(g);
    if (it != gb.end()) dot += c * it->second;
  }
  for (const auto& [g, c] : gb) nb += c * c;
  return dot / (std::sqrt(na) * std::sqrt(nb));
}

std::vector<size_t> rank_by_similarity(const std::string& query, const std::vector<std::string>& texts) {
  std::vector<double> sim(texts.size());
  for (size_t i = 0; i < texts.size(); ++i) sim[i] = caption_similarity(query, texts[i]);
  std::vector<size_t> order(texts.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) { return sim[x] > sim[y]; });
  return order;
}

// ---------------------------------------------------------------------------------------------
// Articles
// ---------------------------------------------------------------------------------------------

int Article::n_paragraphs() const {
  int n = 0;
  for (const Block& b : blocks) n += b.kind == Block::Kind::Paragraph ? 1 : 0;
  return n;
}

std::vector<std::string> Article::paragraphs() const {
  std::vector<std::string> out;
  for (const Block& b : blocks)
    if (b.kind == Block::Kind::Paragraph) out.push_back(b.text);
  return out;
}

int Article::paragraph_block(int i) const {
  if (i < 0) return -1;
  int seen = 0;
  for (size_t k = 0; k < blocks.size(); ++k) {
    if (blocks[k].kind != Block::Kind::Paragraph) continue;
    if (seen++ == i) return static_cast<int>(k);
  }
  return -1;
}

std::string Article::title() const {
  for (const Block& b : blocks) {
    if (b.kind != Block::Kind::Paragraph) continue;
    std::string t = b.text;
    const size_t nl = t.find('\n');
    if (nl != std::string::npos) t.resize(nl);
    size_t h = 0;
    while (h < t.size() && t[h] == '#') ++h;
    t = strip(t.substr(h));
    if (starts_with(t, "**") && t.size() >= 4 && t.compare(t.size() - 2, 2, "**") == 0)
      t = strip(t.substr(2, t.size() - 4));
    if (t.empty()) continue;
    const std::string cut = cut_utf8(t, 120);
    return cut.size() < t.size() ? cut + "…" : cut;
  }
  return "";
}

std::string to_markdown(const Article& article, const std::string& markdown_dir) {
  std::string out;
  for (size_t i = 0; i < article.blocks.size(); ++i) {
    const Block& b = article.blocks[i];
    if (i) out += "\n\n";
    switch (b.kind) {
      case Block::Kind::Paragraph:
        out += drop_controls(b.text);
        break;
      case Block::Kind::Image:
        out += "![" + md_escape_alt(drop_controls(b.text)) + "](" + md_destination(relative_to(b.path, markdown_dir)) +
               ")";
        break;
      case Block::Kind::Placeholder: {
        const std::string cap = strip(one_line(b.text));
        out += std::string(kPlaceholderLead) + (cap.empty() ? "" : " " + cap);
        break;
      }
    }
  }
  if (!out.empty()) out += "\n";
  return out;
}

Article parse_markdown(const std::string& text, const std::string& markdown_dir) {
  std::vector<std::string> lines;
  {
    std::string t = replace_all(text, "\r\n", "\n");
    if (t.size() >= 3 && t.compare(0, 3, "\xEF\xBB\xBF") == 0) t = t.substr(3);  // BOM
    std::istringstream in(t);
    std::string line;
    while (std::getline(in, line)) lines.push_back(line);
  }
  auto blank = [](const std::string& l) { return strip(l).empty(); };
  // Blank lines separate blocks; a text with none between its lines (plain model output) has one
  // paragraph per line.
  bool has_blank = false;
  {
    int first = -1, last = -1;
    for (int i = 0; i < static_cast<int>(lines.size()); ++i)
      if (!blank(lines[static_cast<size_t>(i)])) {
        if (first < 0) first = i;
        last = i;
      }
    for (int i = first + 1; first >= 0 && i < last; ++i) has_blank |= blank(lines[static_cast<size_t>(i)]);
  }
  Article a;
  std::string pending;
  bool have_pending = false;
  auto flush = [&]() {
    if (have_pending) {
      const std::string p = strip(pending);
      if (!p.empty()) a.blocks.push_back(Block{Block::Kind::Paragraph, p, ""});
    }
    pending.clear();
    have_pending = false;
  };
  for (const std::string& line : lines) {
    if (blank(line)) {
      flush();
      continue;
    }
    std::string caption, dest;
    if (parse_image_line(line, caption, dest)) {
      flush();
      std::string path = dest;
      if (!is_url(dest) && !fs::path(dest).is_absolute() && !markdown_dir.empty())
        path = (fs::path(markdown_dir) / dest).lexically_normal().generic_string();
      a.blocks.push_back(Block{Block::Kind::Image, caption, path});
      continue;
    }
    if (parse_placeholder_line(line, caption)) {
      flush();
      a.blocks.push_back(Block{Block::Kind::Placeholder, caption, ""});
      continue;
    }
    if (!has_blank) {
      flush();
      pending = line;
      have_pending = true;
      flush();
      continue;
    }
    if (have_pending) pending += "\n";
    pending += line;
    have_pending = true;
  }
  flush();
  return a;
}

std::string html_escape(const std::string& text) {
  const std::string s = drop_controls(text);
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string mime_type_from_magic(const std::string& b) {
  auto at = [&](size_t off, const char* sig, size_t n) {
    return b.size() >= off + n && b.compare(off, n, sig, n) == 0;
  };
  if (at(0, "\x89PNG\r\n\x1a\n", 8)) return "image/png";
  if (at(0, "\xFF\xD8\xFF", 3)) return "image/jpeg";
  if (at(0, "GIF87a", 6) || at(0, "GIF89a", 6)) return "image/gif";
  if (at(0, "RIFF", 4) && at(8, "WEBP", 4)) return "image/webp";
  if (at(0, "BM", 2)) return "image/bmp";
  return "application/octet-stream";
}

std::string base64_encode(const std::string& bytes) {
  static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t v = (static_cast<uint32_t>(static_cast<unsigned char>(bytes[i])) << 16) |
                       (static_cast<uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8) |
                       static_cast<unsigned char>(bytes[i + 2]);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  const size_t rest = bytes.size() - i;
  if (rest) {
    uint32_t v = static_cast<uint32_t>(static_cast<unsigned char>(bytes[i])) << 16;
    if (rest == 2) v |= static_cast<uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += rest == 2 ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string to_html(const Article& article, const std::string& title) {
  std::string body;
  for (const Block& b : article.blocks) {
    switch (b.kind) {
      case Block::Kind::Paragraph:
        body += paragraph_html(b.text);
        break;
      case Block::Kind::Image: {
        std::string src = b.path;
        if (!is_url(b.path)) {
          std::ifstream in(b.path, std::ios::binary);
          if (!in) throw Error(ErrorCode::NotFound, "cannot read image '" + b.path + "' for the HTML page");
          std::ostringstream ss;
          ss << in.rdbuf();
          if (in.bad()) throw Error(ErrorCode::Io, "cannot read image '" + b.path + "' for the HTML page");
          const std::string bytes = ss.str();
          src = "data:" + mime_type_from_magic(bytes) + ";base64," + base64_encode(bytes);
        }
        const std::string alt = b.text.empty() ? fs::path(b.path).filename().string() : b.text;
        body += "<figure>\n<img src=\"" + src + "\" alt=\"" + html_escape(alt) + "\">\n";
        if (!b.text.empty()) body += "<figcaption>" + html_escape(b.text) + "</figcaption>\n";
        body += "</figure>\n";
        break;
      }
      case Block::Kind::Placeholder:
        body += "<figure class=\"placeholder\">\n<div class=\"box\">Image placeholder</div>\n";
        if (!b.text.empty()) body += "<figcaption>" + html_escape(b.text) + "</figcaption>\n";
        body += "</figure>\n";
        break;
    }
  }
  // lang helps the browser pick fonts and line breaking: Chinese when CJK characters dominate.
  size_t n_cjk = 0, n_letters = 0;
  for (const Block& b : article.blocks) {
    if (b.kind != Block::Kind::Paragraph) continue;
    for (uint32_t cp : code_points(b.text)) {
      if (cp >= 0x4E00 && cp <= 0x9FFF)
        ++n_cjk;
      else if (is_latin_letter(cp))
        ++n_letters;
    }
  }
  const char* lang = n_cjk * 3 > n_letters ? "zh" : "en";
  std::string page = std::string("<!DOCTYPE html>\n<html lang=\"") + lang +
                     "\">\n<head>\n<meta charset=\"utf-8\">\n"
                     "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
                     "<meta name=\"generator\" content=\"xc2 compose\">\n<title>" +
                     html_escape(title.empty() ? "Article" : title) + "</title>\n<style>" + kCss +
                     "</style>\n</head>\n<body>\n<main>\n";
  page += body;
  page += "</main>\n<footer>Written with InternLM-XComposer2 (xc2 compose).</footer>\n</body>\n</html>\n";
  return page;
}

// ---------------------------------------------------------------------------------------------
// Driver
// ---------------------------------------------------------------------------------------------

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
    case Step::Article:
      o.max_new_tokens = base.max_new_tokens;
      o.ignore_eos = base.ignore_eos;
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
  for (const std::string& p : paragraphs) res.article.blocks.push_back(Block{Block::Kind::Paragraph, p, ""});
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
  const Request req = interleave_request(prompt, {});
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
