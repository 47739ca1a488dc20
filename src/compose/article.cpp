// The accessors of xc2::compose::Article.
#include "compose/text_util.h"
#include "xc2/compose.h"

namespace xc2::compose {

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

}  // namespace xc2::compose
