// Prompt assembly (model-spec §10, §12): the chat template, the default system texts, image
// markers and the BOS rules of each upstream code path.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "text/tokenizer.h"

namespace xc2::text {

// One piece of a prompt: either a run of token ids, or one image (index into the request's images).
struct PromptSegment {
  std::vector<int32_t> ids;
  int image = -1;  // >= 0: this segment is image `image`; ids is empty
};

struct Prompt {
  std::vector<PromptSegment> segments;
  int n_images() const;
  // Positions the prompt occupies when each image takes `visual_tokens` rows.
  int64_t n_positions(int64_t visual_tokens) const;
};

struct ChatTurn {
  std::string user;
  std::string assistant;
};

extern const char* const kImageMarker;    // "<ImageHere>" (chat)
extern const char* const kComposeMarker;  // "<image>" (composition demo)

// The default `meta_instruction` of upstream chat() (four lines, no trailing newline).
const std::string& default_system_prompt();
// The composition demo's text-only meta (three lines, trailing newline).
const std::string& compose_system_prompt();

// "[UNUSED_TOKEN_146]system\n{system}[UNUSED_TOKEN_145]\n" (omitted when system is empty), each history
// turn, then "[UNUSED_TOKEN_146]user\n{query}[UNUSED_TOKEN_145]\n[UNUSED_TOKEN_146]assistant\n".
std::string render_chat(const std::string& system, const std::vector<ChatTurn>& history, const std::string& query);

// A template's text with the byte ranges that came from the user (system prompt, history, query): those are
// tokenized as plain text, so only the template's own markers become control tokens (Tokenizer::encode).
struct TemplateText {
  std::string text;
  std::vector<TextSpan> user;
};
TemplateText render_chat_spans(const std::string& system, const std::vector<ChatTurn>& history,
                               const std::string& query);
// Every occurrence in `text` of each non-empty string of `user_texts`, as spans (for prompts assembled
// from user texts by concatenation, e.g. the composition demo's).
std::vector<TextSpan> find_user_spans(const std::string& text, const std::vector<std::string>& user_texts);

// Number of non-overlapping occurrences of `marker` in text.
int count_markers(const std::string& text, const std::string& marker);

// The xc2 placement rule (model-spec §10.3): with no marker in the query, one marker per image at the
// start of the query joined by single spaces ("<ImageHere>q", "<ImageHere> <ImageHere>q"); with
// markers, their count must equal n_images (Error{InvalidArgument} otherwise).
std::string place_image_markers(const std::string& query, int n_images, const std::string& marker = kImageMarker);

// chat() with images: split `text` on the marker; every non-empty text part gets its own BOS
// (`bos_every_part`), image k follows part k. With bos_every_part = false only the first part gets a
// BOS (the composition demo's interleav_wrap, and the training code).
// `user`: the ranges of text tokenized as plain text (see TemplateText).
Prompt build_image_prompt(const Tokenizer& tok, const std::string& text, int n_images,
                          const std::string& marker = kImageMarker, bool bos_every_part = true,
                          const std::vector<TextSpan>& user = {});

// chat() without images: "<s>" + text through the tokenizer with its own BOS -> [1, 1, ...].
Prompt build_text_prompt(const Tokenizer& tok, const std::string& text, const std::vector<TextSpan>& user = {});

// One turn of upstream chat() (model-spec §10), for a conversation whose history stays in the KV cache.
// The first turn (continues = false): the template with `system` and the query, through the image path when
// n_images > 0 (markers already placed), else the text path. A later turn (continues = true) continues the
// cached sequence: "[UNUSED_TOKEN_145]\n" closes the last answer, then the user turn; as on upstream's image
// path every text part after an image gets a BOS, but the first part continues the cached text and gets none
// (nor the lone dummy-prefix "▁" a separate encode adds: upstream tokenizes the history as one string).
// The system prompt and the query are user text (plain) unless parse_special (upstream's tokenization).
Prompt build_chat_turn(const Tokenizer& tok, const std::string& system, const std::string& query, int n_images,
                       bool continues, bool parse_special = false);

// Plain encoding (one BOS, no template), e.g. `xc2 logits --raw` and the composition demo's text-only steps.
Prompt build_raw_prompt(const Tokenizer& tok, const std::string& text, bool add_bos = true,
                        const std::vector<TextSpan>& user = {});

}  // namespace xc2::text
