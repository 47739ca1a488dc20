// Beam search (engine/beam_search.h) against the reference's (tools/reference/make_beam_goldens.py: float64,
// Hugging Face num_beams semantics): N = 2, 3, 5, repetition and length penalties, extra stop ids that end
// some beams early, on the image path (tiny-a img1, tiny-b img1) and the text path (the prompt counts in the
// length and the penalty). Token for token, the stop reason, and the score within 1e-5.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "support/test_util.h"
#include "xc2/engine.h"

namespace xc2 {
namespace {

using nlohmann::json;

json read_json(const std::string& rel) {
  std::ifstream in(test::data_path(rel));
  return json::parse(in);
}

std::unique_ptr<Engine> load(const std::string& model) {
  EngineOptions eo;
  eo.model_dir = test::data_path("models/" + model);
  eo.device = DeviceChoice::Cpu;
  eo.threads = 2;
  return Engine::load(eo);
}

Request chat_request(Engine& engine, const json& c) {
  Request req;
  std::vector<std::string> paths;
  for (const auto& p : c["images"]) paths.push_back(test::data_path(p.get<std::string>()));
  const int n = static_cast<int>(paths.size());
  const std::string query = c["query"].get<std::string>();
  req.text = chat_prompt_text(c["system"].get<std::string>(), {}, n ? place_image_markers(query, n) : query);
  req.images = engine.encode_images(paths);
  const bool text_path = c["path"].get<std::string>() == "chat_text";
  req.style = text_path ? PromptStyle::ChatText : PromptStyle::ChatImage;
  req.penalize_prompt = text_path;
  return req;
}

class BeamSearchTest : public ::testing::TestWithParam<std::string> {};

TEST_P(BeamSearchTest, EqualsReference) {
  const std::string model = GetParam();
  auto engine = load(model);
  const json cases = read_json("golden/" + model + "/beams.json");
  ASSERT_GE(cases.size(), 10u);
  int ended_early = 0;
  for (const json& g : cases) {
    SCOPED_TRACE(g.dump());
    const Request req = chat_request(*engine, read_json("golden/" + model + "/case_" + g["case"].get<std::string>() + ".json"));
    GenerationOptions o;
    o.do_sample = false;
    o.num_beams = g["num_beams"].get<int>();
    o.repetition_penalty = g["repetition_penalty"].get<float>();
    o.length_penalty = g["length_penalty"].get<float>();
    o.max_new_tokens = g["max_new_tokens"].get<int>();
    o.stop_ids = g["extra_stops"].get<std::vector<int32_t>>();
    const GenerationResult r = engine->generate(req, o);
    EXPECT_EQ(r.tokens, g["tokens"].get<std::vector<int32_t>>());
    const double want = g["score"].get<double>();
    EXPECT_NEAR(r.beam_score, want, 1e-5 * std::abs(want) + 1e-7);
    if (g["stop"].is_null()) {
      EXPECT_STREQ(stop_reason_name(r.stop_reason), "max_new_tokens");
    } else {
      const int32_t stop = g["stop"].get<int32_t>();
      const char* want_reason = stop == engine->token_id("</s>")                 ? "eos"
                                : stop == engine->token_id("[UNUSED_TOKEN_145]") ? "im_end"
                                                                                 : "stop_id";
      EXPECT_STREQ(stop_reason_name(r.stop_reason), want_reason);
      if (static_cast<int>(r.tokens.size()) < o.max_new_tokens) ++ended_early;
    }
  }
  EXPECT_GT(ended_early, 0);
}

INSTANTIATE_TEST_SUITE_P(Golden, BeamSearchTest, testing::Values("tiny-a", "tiny-b"));

// A chat session answers with beams turn after turn: the history in the KV cache stays consistent (ask()
// checks that the cache holds exactly the conversation's positions) and a second turn equals a fresh session
// given the same history.
TEST(BeamSearch, ChatSessionTurnsAndOptionChecks) {
  auto engine = load("tiny-b");
  GenerationOptions o;
  o.do_sample = false;
  o.num_beams = 3;
  o.max_new_tokens = 8;
  auto chat = engine->new_chat();
  const GenerationResult a = chat->ask("Hello", {}, o);
  const GenerationResult b = chat->ask("Tell me more.", {}, o);
  EXPECT_EQ(chat->turns(), 2);
  EXPECT_FALSE(a.tokens.empty());
  EXPECT_FALSE(b.tokens.empty());
  std::string streamed;
  auto again = engine->new_chat();
  const GenerationResult a2 = again->ask("Hello", {}, o, [&](const std::string& s) {
    streamed += s;
    return true;
  });
  EXPECT_EQ(a2.tokens, a.tokens);
  EXPECT_EQ(streamed, a2.text);

  o.do_sample = true;
  EXPECT_EQ(test::catch_error([&] { chat->ask("x", {}, o); }).code(), ErrorCode::InvalidArgument);
  o.do_sample = false;
  o.num_beams = 0;
  EXPECT_EQ(test::catch_error([&] { chat->ask("x", {}, o); }).code(), ErrorCode::InvalidArgument);
  EXPECT_EQ(chat->turns(), 2);
}

}  // namespace
}  // namespace xc2
