// The prompt strings of the upstream XC2-7B composition demo (model-spec §12), private to
// xc2::compose: the driver builds every model call from these, and the tests compare them byte for
// byte with the demo. `with_meta` adds the demo's text-only system turn (§10.2).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "xc2/compose.h"

namespace xc2::compose {

extern const char* const kImStart;          // "[UNUSED_TOKEN_146]"
extern const char* const kImEnd;            // "[UNUSED_TOKEN_145]"
extern const char* const kImageMarker;      // "<image>"
extern const char* const kLocationPrefix;   // "适合插入图像的行是"
extern const char* const kCaptionPrefix;    // "标题是\""
extern const char* const kSelectionPrefix;  // "最合适的图是"

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

// §12.6, each wrapped by text2instruction:
//   rewrite  '改写以下段落：{text}\n基于以下素材：{instruction}'
//   expand   '扩写以下段落：{text}\n基于以下素材：{instruction}'
//   shorten  '缩写以下段落：{text}'                        (instruction unused)
//   insert   '在以下两段中插入一段。\n第一段：{text}\n第二段：{next}\n插入段的大纲：{instruction}'
std::string edit_prompt(EditKind kind, const std::string& text, const std::string& next, const std::string& instruction,
                        bool with_meta);

}  // namespace xc2::compose
