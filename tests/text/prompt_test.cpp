// Prompt assembly tests. Oracle: tests/data/golden/<model>/prompts.json (tools/reference/make_golden.py
// from xc2_ref.build_chat_image / build_chat_text / build_compose): rendered text and segments for
// the chat image path (BOS on every part), the text path ([1, 1, ...]) and the composition demo (BOS
// on the first part only). The system texts are also checked against an independent hex spelling of
// model-spec §10.2.
#include <algorithm>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/test_util.h"
#include "text/prompt.h"
#include "text/tokenizer.h"
#include "xc2/error.h"

namespace xc2::text {
namespace {

using nlohmann::json;

std::string show(const Prompt& p) {
  std::ostringstream os;
  for (const PromptSegment& s : p.segments) {
    if (s.image >= 0) {
      os << "{image " << s.image << "} ";
      continue;
    }
    os << "[";
    for (size_t i = 0; i < s.ids.size(); ++i) os << (i ? "," : "") << s.ids[i];
    os << "] ";
  }
  return os.str();
}

Prompt prompt_from_json(const json& segments) {
  Prompt p;
  for (const json& s : segments) {
    PromptSegment seg;
    if (s.contains("image")) {
      seg.image = s.at("image");
    } else {
      seg.ids = s.at("ids").get<std::vector<int32_t>>();
    }
    p.segments.push_back(seg);
  }
  return p;
}

using test::catch_error;

// ------------------------------------------------------------------------------------------------
// Golden prompts

class PromptGolden : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    const std::string text = test::read_file(test::data_path("golden/" + GetParam() + "/prompts.json"));
    ASSERT_FALSE(text.empty()) << "missing prompts.json for " << GetParam();
    golden_ = json::parse(text);
    tok_ = Tokenizer::load(test::data_path("models/" + GetParam() + "/tokenizer.model"));
  }
  json golden_;
  std::shared_ptr<Tokenizer> tok_;
};

TEST_P(PromptGolden, AllCasesMatchReference) {
  const int64_t n_visual = golden_.at("n_visual");
  int n_text = 0, n_image = 0, n_compose = 0;
  for (const json& c : golden_.at("cases")) {
    const std::string name = c.at("name");
    const std::string path = c.at("path");
    const int n_images = c.at("n_images");
    SCOPED_TRACE(name);
    std::string text;
    Prompt got;
    if (path == "chat_text" || path == "chat_image") {
      std::vector<ChatTurn> history;
      for (const json& t : c.at("history")) history.push_back({t.at(0), t.at(1)});
      if (path == "chat_text") {
        text = "<s>" + render_chat(c.at("system"), history, c.at("query"));
        got = build_text_prompt(*tok_, render_chat(c.at("system"), history, c.at("query")));
        ++n_text;
      } else {
        text = render_chat(c.at("system"), history, place_image_markers(c.at("query"), n_images));
        got = build_image_prompt(*tok_, text, n_images, kImageMarker, true);
        ++n_image;
      }
    } else if (path == "compose") {
      // The demo's text2instruction, with the xc2 marker rule for <image>.
      const std::string instruction = place_image_markers(c.at("instruction"), n_images, kComposeMarker);
      const std::string system = c.at("with_meta").get<bool>() ? compose_system_prompt() : std::string();
      text = render_chat(system, {}, instruction) + c.at("assistant_prefix").get<std::string>();
      got = build_image_prompt(*tok_, text, n_images, kComposeMarker, false);
      ++n_compose;
    } else {
      ADD_FAILURE() << "unknown path " << path;
      continue;
    }
    EXPECT_EQ(text, c.at("text").get<std::string>());
    const Prompt want = prompt_from_json(c.at("segments"));
    EXPECT_EQ(show(got), show(want));
    EXPECT_EQ(got.n_images(), n_images);
    EXPECT_EQ(got.n_positions(n_visual), static_cast<int64_t>(c.at("tokens").size()));
    // tokens: the ids with -1 at image rows; image_spans: [start, length].
    std::vector<int32_t> tokens;
    std::vector<std::vector<int64_t>> spans;
    for (const PromptSegment& s : got.segments) {
      if (s.image >= 0) {
        spans.push_back({static_cast<int64_t>(tokens.size()), n_visual});
        tokens.insert(tokens.end(), n_visual, -1);
      } else {
        tokens.insert(tokens.end(), s.ids.begin(), s.ids.end());
      }
    }
    EXPECT_EQ(tokens, c.at("tokens").get<std::vector<int32_t>>());
    EXPECT_EQ(spans, c.at("image_spans").get<std::vector<std::vector<int64_t>>>());
  }
  EXPECT_GE(n_text, 3);
  EXPECT_GE(n_image, 5);
  EXPECT_GE(n_compose, 3);
}

TEST_P(PromptGolden, ReferenceSystemTextIsOurs) {
  int seen = 0;
  for (const json& c : golden_.at("cases")) {
    if (!c.contains("system") || c.at("system").get<std::string>().empty()) continue;
    const std::string system = c.at("system");
    EXPECT_TRUE(system == default_system_prompt() || system == compose_system_prompt()) << system;
    seen += system == default_system_prompt();
  }
  EXPECT_GE(seen, 1);
}

TEST_P(PromptGolden, BosPlacementPerPath) {
  const int32_t bos = tok_->bos_id();
  const int32_t im_start = tok_->im_start_id();
  const size_t pre = tok_->adds_dummy_prefix() ? 1 : 0;  // the "▁" piece before a leading marker
  // Text only: literal "<s>" + the tokenizer's own BOS.
  const Prompt t = build_text_prompt(*tok_, render_chat("", {}, "Hi"));
  ASSERT_EQ(t.segments.size(), 1u);
  ASSERT_GE(t.segments[0].ids.size(), 3 + pre);
  EXPECT_EQ(t.segments[0].ids[0], bos);
  EXPECT_EQ(t.segments[0].ids[1], bos);
  EXPECT_EQ(t.segments[0].ids[2 + pre], im_start);
  // One image: [BOS prefix] [IMG] [BOS rest].
  const std::string one = render_chat("", {}, place_image_markers("Describe.", 1));
  const Prompt p1 = build_image_prompt(*tok_, one, 1);
  ASSERT_EQ(p1.segments.size(), 3u);
  EXPECT_EQ(p1.segments[0].ids.front(), bos);
  EXPECT_EQ(p1.segments[1].image, 0);
  EXPECT_EQ(p1.segments[2].ids.front(), bos);
  // Two images with the default placement: [BOS prefix] [IMG0] [BOS " "] [IMG1] [BOS rest].
  const std::string two = render_chat("", {}, place_image_markers("Compare.", 2));
  const Prompt p2 = build_image_prompt(*tok_, two, 2);
  ASSERT_EQ(p2.segments.size(), 5u);
  EXPECT_EQ(p2.segments[2].ids, tok_->encode(" ", true));
  EXPECT_EQ(p2.segments[3].image, 1);
  EXPECT_EQ(p2.segments[4].ids.front(), bos);
  // Composition demo: only the first part gets a BOS.
  const Prompt c2 = build_image_prompt(*tok_, two, 2, kImageMarker, false);
  ASSERT_EQ(c2.segments.size(), 5u);
  EXPECT_EQ(c2.segments[0].ids.front(), bos);
  EXPECT_EQ(c2.segments[2].ids, tok_->encode(" ", false));
  EXPECT_NE(c2.segments[4].ids.front(), bos);
  // Adjacent markers: no empty text segment between the images; a leading marker gives no empty part.
  const Prompt adj = build_image_prompt(*tok_, "<ImageHere><ImageHere>x", 2);
  ASSERT_EQ(adj.segments.size(), 3u);
  EXPECT_EQ(adj.segments[0].image, 0);
  EXPECT_EQ(adj.segments[1].image, 1);
  EXPECT_EQ(adj.segments[2].ids, tok_->encode("x", true));
  // With bos_every_part = false the first *non-empty* part gets the BOS, even after a leading image.
  const Prompt lead = build_image_prompt(*tok_, "<image>x<image>y", 2, kComposeMarker, false);
  ASSERT_EQ(lead.segments.size(), 4u);
  EXPECT_EQ(lead.segments[1].ids, tok_->encode("x", true));
  EXPECT_EQ(lead.segments[3].ids, tok_->encode("y", false));
  // Raw prompts.
  EXPECT_EQ(build_raw_prompt(*tok_, "Hello").segments.at(0).ids, tok_->encode("Hello", true));
  EXPECT_EQ(build_raw_prompt(*tok_, "Hello", false).segments.at(0).ids, tok_->encode("Hello", false));
  EXPECT_EQ(build_raw_prompt(*tok_, "", false).segments.size(), 0u);
  EXPECT_EQ(build_raw_prompt(*tok_, "").n_positions(100), 1);
}

TEST_P(PromptGolden, MarkerCountMustMatch) {
  const Error e = catch_error([&] { build_image_prompt(*tok_, "a<ImageHere>b<ImageHere>c", 1); });
  EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
  EXPECT_EQ(std::string(e.what()), "the prompt has 2 <ImageHere> markers but 1 image was given");
  const Error e2 = catch_error([&] { build_image_prompt(*tok_, "x<image>", 3, kComposeMarker, false); });
  EXPECT_EQ(std::string(e2.what()), "the prompt has 1 <image> marker but 3 images were given");
  // Markers in the history count too (upstream splits the whole prompt).
  const std::string text = render_chat("", {{"<ImageHere>what?", "a cat"}}, place_image_markers("and this?", 1));
  EXPECT_EQ(count_markers(text, kImageMarker), 2);
  EXPECT_THROW(build_image_prompt(*tok_, text, 1), Error);
  EXPECT_NO_THROW(build_image_prompt(*tok_, text, 2));
}

INSTANTIATE_TEST_SUITE_P(Tiny, PromptGolden, ::testing::Values("tiny-a", "tiny-b"));

// ------------------------------------------------------------------------------------------------
// Text helpers (no tokenizer)

// model-spec §10.2 spelled with hex escapes, independently of the UTF-8 literals in prompt.cpp.
#define XC2_NAME "InternLM-XComposer (\xE6\xB5\xA6\xE8\xAF\xAD\xC2\xB7\xE7\x81\xB5\xE7\xAC\x94)"
#define XC2_LAB "Shanghai AI Laboratory (\xE4\xB8\x8A\xE6\xB5\xB7\xE4\xBA\xBA\xE5\xB7\xA5\xE6\x99\xBA\xE8\x83\xBD\xE5\xAE\x9E\xE9\xAA\x8C\xE5\xAE\xA4)"
#define XC2_LANG "English and \xE4\xB8\xAD\xE6\x96\x87"

TEST(SystemPrompt, DefaultIsByteExact) {
  const std::string want =
      "You are an AI assistant whose name is " XC2_NAME ".\n"
      "- " XC2_NAME " is a multi-modality conversational language model that is developed by " XC2_LAB
      ". It is designed to be helpful, honest, and harmless.\n"
      "- " XC2_NAME " can understand and communicate fluently in the language chosen by the user such as " XC2_LANG
      ".\n"
      "- " XC2_NAME " is capable of comprehending and articulating responses effectively based on the provided image.";
  EXPECT_EQ(default_system_prompt(), want);
  EXPECT_NE(default_system_prompt().back(), '\n');
  EXPECT_EQ(std::count(default_system_prompt().begin(), default_system_prompt().end(), '\n'), 3);
}

TEST(SystemPrompt, ComposeIsByteExact) {
  const std::string want =
      "You are an AI assistant whose name is " XC2_NAME ".\n"
      "- " XC2_NAME " is a conversational language model that is developed by " XC2_LAB
      ". It is designed to be helpful, honest, and harmless.\n"
      "- " XC2_NAME " can understand and communicate fluently in the language chosen by the user such as " XC2_LANG
      ".\n";
  EXPECT_EQ(compose_system_prompt(), want);
  EXPECT_EQ(compose_system_prompt().back(), '\n');
  EXPECT_EQ(std::count(compose_system_prompt().begin(), compose_system_prompt().end(), '\n'), 3);
}

TEST(ChatTemplate, RendersTurns) {
  EXPECT_EQ(render_chat("", {}, "q"), "[UNUSED_TOKEN_146]user\nq[UNUSED_TOKEN_145]\n[UNUSED_TOKEN_146]assistant\n");
  EXPECT_EQ(render_chat("S", {{"u1", "a1"}}, "q"),
            "[UNUSED_TOKEN_146]system\nS[UNUSED_TOKEN_145]\n"
            "[UNUSED_TOKEN_146]user\nu1[UNUSED_TOKEN_145]\n[UNUSED_TOKEN_146]assistant\na1[UNUSED_TOKEN_145]\n"
            "[UNUSED_TOKEN_146]user\nq[UNUSED_TOKEN_145]\n[UNUSED_TOKEN_146]assistant\n");
}

TEST(Markers, Placement) {
  EXPECT_EQ(std::string(kImageMarker), "<ImageHere>");
  EXPECT_EQ(std::string(kComposeMarker), "<image>");
  EXPECT_EQ(place_image_markers("q", 0), "q");
  EXPECT_EQ(place_image_markers("q", 1), "<ImageHere>q");
  EXPECT_EQ(place_image_markers("q", 2), "<ImageHere> <ImageHere>q");
  EXPECT_EQ(place_image_markers("", 1), "<ImageHere>");
  EXPECT_EQ(place_image_markers("a <ImageHere> b", 1), "a <ImageHere> b");
  EXPECT_EQ(place_image_markers("x", 2, kComposeMarker), "<image> <image>x");
  // The other marker is plain text.
  EXPECT_EQ(place_image_markers("<image>q", 1), "<ImageHere><image>q");
}

TEST(Markers, MismatchMessages) {
  const Error e1 = catch_error([] { place_image_markers("<ImageHere><ImageHere>q", 1); });
  EXPECT_EQ(e1.code(), ErrorCode::InvalidArgument);
  EXPECT_EQ(std::string(e1.what()), "the prompt has 2 <ImageHere> markers but 1 image was given");
  const Error e2 = catch_error([] { place_image_markers("<ImageHere>q", 2); });
  EXPECT_EQ(std::string(e2.what()), "the prompt has 1 <ImageHere> marker but 2 images were given");
  const Error e3 = catch_error([] { place_image_markers("<ImageHere>q", 0); });
  EXPECT_EQ(std::string(e3.what()), "the prompt has 1 <ImageHere> marker but 0 images were given");
  EXPECT_EQ(catch_error([] { place_image_markers("q", -1); }).code(), ErrorCode::InvalidArgument);
}

TEST(Markers, CountIsNonOverlapping) {
  EXPECT_EQ(count_markers("", "<image>"), 0);
  EXPECT_EQ(count_markers("<image><image> <image>", "<image>"), 3);
  EXPECT_EQ(count_markers("aaaa", "aa"), 2);
  EXPECT_EQ(count_markers("aaa", "aa"), 1);
  EXPECT_EQ(count_markers("<ImageHere", "<ImageHere>"), 0);
  EXPECT_THROW(count_markers("x", ""), Error);
}

TEST(PromptStruct, PositionsAndImages) {
  Prompt p;
  p.segments.push_back({{1, 2, 3}, -1});
  p.segments.push_back({{}, 0});
  p.segments.push_back({{1, 5}, -1});
  p.segments.push_back({{}, 1});
  EXPECT_EQ(p.n_images(), 2);
  EXPECT_EQ(p.n_positions(1225), 5 + 2 * 1225);
  EXPECT_EQ(Prompt{}.n_positions(256), 0);
}

}  // namespace
}  // namespace xc2::text
