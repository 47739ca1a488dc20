// Parsers of the composition demo's model outputs (model-spec §12), private to xc2::compose: the
// driver turns each step's answer into paragraphs, slots, captions and choices with these. The
// Markdown article reader, parse_markdown(), is public (xc2/compose.h) and lives in parse.cpp too.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "xc2/compose.h"

namespace xc2::compose {

// The demo's post-processing of the article: strip; every run of newlines (with the whitespace around
// and between them, Unicode whitespace as Python's \s) collapses to one "\n"; split on "\n"; keep at
// most `max_paragraphs`. An empty text gives no paragraphs (the demo would keep one empty one).
std::vector<std::string> split_paragraphs(const std::string& text, int max_paragraphs = kMaxParagraphs);

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

}  // namespace xc2::compose
