// Prompt assembly (model-spec §10, §12): chat template text, default system texts, image-marker
// placement, and the token/image segment lists of the three upstream code paths:
//   chat() with images   split on <ImageHere>; every non-empty part is tokenized with its own BOS
//   compose (demo)       split on <image>; only the first non-empty part gets a BOS
//   chat() without image "<s>" + template tokenized with BOS -> [1, 1, 92543, ...]
// Mirrors tools/reference/xc2_ref.py (build_chat_image, build_chat_text, build_compose).
#include "text/prompt.h"

#include <algorithm>
#include <string>
#include <vector>

#include "core/check.h"

namespace xc2::text {

const char* const kImageMarker = "<ImageHere>";
const char* const kComposeMarker = "<image>";

namespace {

const char* const kImStart = "[UNUSED_TOKEN_146]";
const char* const kImEnd = "[UNUSED_TOKEN_145]";

std::string plural(int n, const char* one, const char* many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

[[noreturn]] void throw_marker_mismatch(int n_markers, const std::string& marker, int n_images) {
  XC2_THROW(InvalidArgument, "the prompt has ", n_markers, " ", marker, n_markers == 1 ? " marker" : " markers",
            " but ", plural(n_images, "image was given", "images were given"));
}

}  // namespace

int Prompt::n_images() const {
  int n = 0;
  for (const PromptSegment& s : segments) n += s.image >= 0 ? 1 : 0;
  return n;
}

int64_t Prompt::n_positions(int64_t visual_tokens) const {
  int64_t n = 0;
  for (const PromptSegment& s : segments) {
    n += s.image >= 0 ? visual_tokens : static_cast<int64_t>(s.ids.size());
  }
  return n;
}

// model-spec §10.2, byte for byte (this file is UTF-8): four lines joined by "\n", no trailing newline.
const std::string& default_system_prompt() {
  static const std::string kText =
      "You are an AI assistant whose name is InternLM-XComposer (浦语·灵笔).\n"
      "- InternLM-XComposer (浦语·灵笔) is a multi-modality conversational language model that is developed by "
      "Shanghai AI Laboratory (上海人工智能实验室). It is designed to be helpful, honest, and harmless.\n"
      "- InternLM-XComposer (浦语·灵笔) can understand and communicate fluently in the language chosen by the "
      "user such as English and 中文.\n"
      "- InternLM-XComposer (浦语·灵笔) is capable of comprehending and articulating responses effectively based "
      "on the provided image.";
  return kText;
}

// model-spec §10.2: the composition demo's text-only meta, three lines, ending in "\n".
const std::string& compose_system_prompt() {
  static const std::string kText =
      "You are an AI assistant whose name is InternLM-XComposer (浦语·灵笔).\n"
      "- InternLM-XComposer (浦语·灵笔) is a conversational language model that is developed by "
      "Shanghai AI Laboratory (上海人工智能实验室). It is designed to be helpful, honest, and harmless.\n"
      "- InternLM-XComposer (浦语·灵笔) can understand and communicate fluently in the language chosen by the "
      "user such as English and 中文.\n";
  return kText;
}

TemplateText render_chat_spans(const std::string& system, const std::vector<ChatTurn>& history,
                               const std::string& query) {
  TemplateText t;
  std::string& s = t.text;
  auto user = [&t](const std::string& text) {
    t.user.push_back({t.text.size(), t.text.size() + text.size()});
    t.text += text;
  };
  if (!system.empty()) {
    s += std::string(kImStart) + "system\n";
    user(system);
    s += std::string(kImEnd) + "\n";
  }
  for (const ChatTurn& turn : history) {
    s += std::string(kImStart) + "user\n";
    user(turn.user);
    s += std::string(kImEnd) + "\n" + kImStart + "assistant\n";
    user(turn.assistant);
    s += std::string(kImEnd) + "\n";
  }
  s += std::string(kImStart) + "user\n";
  user(query);
  s += std::string(kImEnd) + "\n" + kImStart + "assistant\n";
  return t;
}

std::string render_chat(const std::string& system, const std::vector<ChatTurn>& history, const std::string& query) {
  return render_chat_spans(system, history, query).text;
}

std::vector<TextSpan> find_user_spans(const std::string& text, const std::vector<std::string>& user_texts) {
  std::vector<TextSpan> spans;
  for (const std::string& u : user_texts) {
    if (u.empty()) continue;
    for (size_t pos = text.find(u); pos != std::string::npos; pos = text.find(u, pos + u.size()))
      spans.push_back({pos, pos + u.size()});
  }
  return spans;
}

int count_markers(const std::string& text, const std::string& marker) {
  XC2_CHECK(!marker.empty(), InvalidArgument, "empty image marker");
  int n = 0;
  for (size_t pos = text.find(marker); pos != std::string::npos; pos = text.find(marker, pos + marker.size())) {
    ++n;
  }
  return n;
}

std::string place_image_markers(const std::string& query, int n_images, const std::string& marker) {
  XC2_CHECK(n_images >= 0, InvalidArgument, "negative number of images: ", n_images);
  const int k = count_markers(query, marker);
  if (k == 0) {
    std::string out;
    for (int i = 0; i < n_images; ++i) {
      if (i > 0) out += ' ';
      out += marker;
    }
    return out + query;
  }
  if (k != n_images) throw_marker_mismatch(k, marker, n_images);
  return query;
}

namespace {

// The parts of `spans` inside [a, b), shifted to start at a.
std::vector<TextSpan> clip_spans(const std::vector<TextSpan>& spans, size_t a, size_t b) {
  std::vector<TextSpan> out;
  for (const TextSpan& s : spans)
    if (s.begin < b && s.end > a) out.push_back({std::max(s.begin, a) - a, std::min(s.end, b) - a});
  return out;
}

std::vector<TextSpan> shift_spans(std::vector<TextSpan> spans, size_t by) {
  for (TextSpan& s : spans) {
    s.begin += by;
    s.end += by;
  }
  return spans;
}

}  // namespace

Prompt build_image_prompt(const Tokenizer& tok, const std::string& text, int n_images, const std::string& marker,
                          bool bos_every_part, const std::vector<TextSpan>& user) {
  XC2_CHECK(n_images >= 0, InvalidArgument, "negative number of images: ", n_images);
  const int k = count_markers(text, marker);
  if (k != n_images) throw_marker_mismatch(k, marker, n_images);
  Prompt p;
  bool need_bos = true;
  size_t start = 0;
  for (int idx = 0; idx <= n_images; ++idx) {
    const size_t hit = idx < n_images ? text.find(marker, start) : std::string::npos;
    const size_t end = hit == std::string::npos ? text.size() : hit;
    if (end > start) {
      PromptSegment seg;
      seg.ids = tok.encode(text.substr(start, end - start), bos_every_part || need_bos, clip_spans(user, start, end));
      need_bos = false;
      p.segments.push_back(std::move(seg));
    }
    if (idx < n_images) {
      PromptSegment img;
      img.image = idx;
      p.segments.push_back(std::move(img));
      start = hit + marker.size();
    }
  }
  return p;
}

Prompt build_text_prompt(const Tokenizer& tok, const std::string& text, const std::vector<TextSpan>& user) {
  Prompt p;
  PromptSegment seg;
  seg.ids = tok.encode("<s>" + text, true, shift_spans(user, 3));
  p.segments.push_back(std::move(seg));
  return p;
}

Prompt build_raw_prompt(const Tokenizer& tok, const std::string& text, bool add_bos,
                        const std::vector<TextSpan>& user) {
  Prompt p;
  PromptSegment seg;
  seg.ids = tok.encode(text, add_bos, user);
  if (!seg.ids.empty()) p.segments.push_back(std::move(seg));
  return p;
}

Prompt build_chat_turn(const Tokenizer& tok, const std::string& system, const std::string& query, int n_images,
                       bool continues, bool parse_special) {
  if (!continues) {
    TemplateText full = render_chat_spans(system, {}, query);
    if (parse_special) full.user.clear();
    return n_images > 0 ? build_image_prompt(tok, full.text, n_images, kImageMarker, true, full.user)
                        : build_text_prompt(tok, full.text, full.user);
  }
  const std::string close = std::string(kImEnd) + "\n";
  TemplateText turn = render_chat_spans("", {}, query);
  if (parse_special) turn.user.clear();
  Prompt parts = build_image_prompt(tok, close + turn.text, n_images, kImageMarker, true,
                                    shift_spans(turn.user, close.size()));
  XC2_ASSERT(!parts.segments.empty() && parts.segments[0].image < 0);
  std::vector<int32_t>& first = parts.segments[0].ids;
  if (!first.empty() && first[0] == tok.bos_id()) first.erase(first.begin());
  if (!first.empty() && tok.adds_dummy_prefix() && tok.id_to_piece(first[0]) == "\xe2\x96\x81")
    first.erase(first.begin());
  return parts;
}

}  // namespace xc2::text
