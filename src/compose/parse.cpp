// Parsing for xc2::compose: the model's answers at each step (parse.h) and Markdown articles read
// back for edits (parse_markdown, xc2/compose.h).
#include "compose/parse.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <set>
#include <sstream>
#include <unordered_map>

#include "compose/prompts.h"
#include "compose/render.h"
#include "compose/text_util.h"

namespace xc2::compose {

namespace {

namespace fs = std::filesystem;

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

}  // namespace

// ---------------------------------------------------------------------------------------------
// Model outputs
// ---------------------------------------------------------------------------------------------

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
// Markdown articles
// ---------------------------------------------------------------------------------------------

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

}  // namespace xc2::compose
