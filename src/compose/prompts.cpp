// The composition demo's prompt strings and builders (model-spec §12), verbatim from the demo.
#include "compose/prompts.h"

#include <algorithm>

namespace xc2::compose {

const char* const kImStart = "[UNUSED_TOKEN_146]";
const char* const kImEnd = "[UNUSED_TOKEN_145]";
const char* const kImageMarker = "<image>";
const char* const kLocationPrefix = "适合插入图像的行是";
const char* const kCaptionPrefix = "标题是\"";
const char* const kSelectionPrefix = "最合适的图是";

namespace {

std::string repeat_markers(int n) {
  // ('<image> ' * n).strip()
  std::string s;
  for (int i = 0; i < n; ++i) s += i ? " <image>" : "<image>";
  return s;
}

}  // namespace

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

}  // namespace xc2::compose
