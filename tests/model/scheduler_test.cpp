// The continuous-batching scheduler (include/xc2/scheduler.h) on the bundled demo model, CPU backend.
// Oracle: Engine::generate() of each request alone with the same options (itself checked against the PyTorch
// goldens and `xc2 chat`); the scheduler must give identical tokens, text and stop reason, whatever the step at
// which a request joins, the prefill chunk size, the batch size or a prefix-cache hit.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <future>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/generate.h"
#include "support/test_util.h"
#include "xc2/engine.h"
#include "xc2/scheduler.h"

namespace xc2 {
namespace {

const std::string kRoot = std::string(XC2_TEST_DATA_DIR) + "/../..";

struct Case {
  std::string question;
  std::vector<std::string> images;
  GenerationOptions options;
};

Request chat_request(const std::string& question, size_t n_images) {
  const ChatPrompt p = chat_prompt(default_system_prompt(), {}, place_image_markers(question, static_cast<int>(n_images)));
  Request r;
  r.text = p.text;
  r.user_spans = p.user_spans;
  r.style = n_images > 0 ? PromptStyle::ChatImage : PromptStyle::ChatText;
  r.penalize_prompt = n_images == 0;
  return r;
}

GenerationOptions greedy(int max_new = 64) {
  GenerationOptions o;
  o.do_sample = false;
  o.max_new_tokens = max_new;
  return o;
}

class SchedulerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    EngineOptions eo;
    eo.model_dir = kRoot + "/models/xc2-shapes";
    eo.device = DeviceChoice::Cpu;
    eo.threads = 2;
    engine_ = Engine::load(eo).release();
  }
  static void TearDownTestSuite() {
    delete engine_;
    engine_ = nullptr;
  }

  static std::vector<Case> cases() {
    std::vector<Case> c;
    const std::string ex = kRoot + "/examples/";
    c.push_back({"Describe the picture.", {ex + "shapes-1.png"}, greedy()});
    c.push_back({"How many shapes are there?", {ex + "shapes-2.png"}, greedy()});
    c.push_back({"Hello", {}, greedy()});
    c.push_back({"What colour is the circle?", {ex + "shapes-3.png"}, greedy()});
    GenerationOptions sampled;  // upstream's sampling defaults, seeded
    sampled.seed = 1234;
    sampled.max_new_tokens = 40;
    c.push_back({"Describe the picture.", {ex + "shapes-4.png"}, sampled});
    GenerationOptions stop = greedy();
    stop.stop_strings = {" a ", "xyz"};
    c.push_back({"Describe the picture.", {ex + "shapes-1.png"}, stop});
    c.push_back({"<ImageHere> and <ImageHere>: describe both.", {ex + "shapes-2.png", ex + "shapes-3.png"}, greedy(5)});
    GenerationOptions none = greedy(0);
    c.push_back({"What can you do?", {}, none});
    return c;
  }

  static GenerationResult alone(const Case& c) {
    Request r = chat_request(c.question, c.images.size());
    r.images = engine_->encode_images(c.images);
    return engine_->generate(r, c.options);
  }

  static SchedulerJob job(const Case& c, GenerationResult* out, std::string* streamed, std::atomic<int>* left) {
    SchedulerJob j;
    j.request = chat_request(c.question, c.images.size());
    for (const std::string& p : c.images) j.images.push_back(engine_->prepare_image(p));
    j.options = c.options;
    j.on_text = [streamed](const std::string& piece) {
      *streamed += piece;
      return true;
    };
    j.on_done = [out, left](const GenerationResult& r, const std::string& error, ErrorCode) {
      EXPECT_EQ(error, "");
      *out = r;
      --*left;
    };
    return j;
  }

  static Engine* engine_;
};

Engine* SchedulerTest::engine_ = nullptr;

void wait_for_steps(Scheduler& s, uint64_t n) {
  while (s.stats().steps < n && (s.stats().running > 0 || s.stats().queued > 0)) std::this_thread::yield();
}

// Requests joining at different steps, with prompt chunks of several sizes and batches of several sizes,
// each get what they get alone; the streamed pieces join to the text.
TEST_F(SchedulerTest, RequestsJoiningAtDifferentStepsGetTheirSequentialTokens) {
  const std::vector<Case> cs = cases();
  std::vector<GenerationResult> want;
  for (const Case& c : cs) want.push_back(alone(c));
  for (const auto& [chunk, batch] : std::vector<std::pair<int, int>>{{7, 3}, {256, 8}, {1, 2}}) {
    SCOPED_TRACE("chunk " + std::to_string(chunk) + " batch " + std::to_string(batch));
    SchedulerOptions so;
    so.prefill_chunk = chunk;
    so.max_batch = batch;
    so.prefix_cache = false;
    Scheduler s(*engine_, so);
    std::vector<GenerationResult> got(cs.size());
    std::vector<std::string> streamed(cs.size());
    std::atomic<int> left{static_cast<int>(cs.size())};
    for (size_t i = 0; i < cs.size(); ++i) {
      ASSERT_TRUE(s.submit(job(cs[i], &got[i], &streamed[i], &left)).has_value());
      wait_for_steps(s, s.stats().steps + i % 3);  // the next request joins 0, 1 or 2 steps later
    }
    s.wait_idle();
    EXPECT_EQ(left.load(), 0);
    for (size_t i = 0; i < cs.size(); ++i) {
      SCOPED_TRACE(cs[i].question);
      EXPECT_EQ(got[i].tokens, want[i].tokens);
      EXPECT_EQ(got[i].text, want[i].text);
      EXPECT_EQ(got[i].stop_reason, want[i].stop_reason);
      EXPECT_EQ(got[i].prompt_positions, want[i].prompt_positions);
      EXPECT_EQ(streamed[i], got[i].text);
    }
    EXPECT_GT(s.stats().steps, 0u);
  }
  // The stop-string case did stop on its string, and the sampled one differs from greedy.
  EXPECT_EQ(want[5].stop_reason, StopReason::StopString);
  EXPECT_EQ(want[5].text.find(" a "), std::string::npos);
  EXPECT_EQ(want[7].tokens.size(), 0u);
}

// A request whose prompt starts like a finished one reuses its KV rows and still gets its own tokens.
TEST_F(SchedulerTest, PrefixCacheHitGivesTheSameTokens) {
  const std::string ex = kRoot + "/examples/";
  const Case first{"Describe the picture.", {ex + "shapes-1.png"}, greedy()};
  const Case second{"How many shapes are there?", {ex + "shapes-1.png"}, greedy()};
  SchedulerOptions so;
  so.prefix_block = 4;
  so.prefill_chunk = 5;
  Scheduler s(*engine_, so);
  for (const Case* c : {&first, &second, &second}) {
    GenerationResult got;
    std::string streamed;
    std::atomic<int> left{1};
    const uint64_t hits = s.stats().prefix_hit_positions;
    ASSERT_TRUE(s.submit(job(*c, &got, &streamed, &left)).has_value());
    s.wait_idle();
    const GenerationResult want = alone(*c);
    EXPECT_EQ(got.tokens, want.tokens);
    EXPECT_EQ(got.text, want.text);
    if (c != &first) {
      EXPECT_GT(s.stats().prefix_hit_positions, hits) << "no prefix reused";
    }
  }
  EXPECT_EQ(s.stats().prefix_hits, 2u);
  EXPECT_GT(s.stats().kv_cached, 0);
}

// Cancelling a running request stops it with StopReason::Cancelled while the others finish normally; a full
// queue refuses; a request that can never fit the KV budget is an error at once.
TEST_F(SchedulerTest, CancelQueueFullAndBudget) {
  const std::string ex = kRoot + "/examples/";
  SchedulerOptions so;
  so.max_batch = 1;
  so.max_queue = 1;
  so.kv_budget = 3000;
  Scheduler s(*engine_, so);
  // A blocks the worker inside its stream callback until released: B waits in the queue, C is refused.
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::promise<void> a_started;
  std::atomic<bool> a_signalled{false};
  GenerationOptions long_opts = greedy(1000);
  long_opts.ignore_eos = true;
  SchedulerJob a;
  a.request = chat_request("Describe the picture.", 0);
  a.options = long_opts;
  a.on_text = [&](const std::string&) {
    if (!a_signalled.exchange(true)) {
      a_started.set_value();
      released.wait();
    }
    return true;
  };
  GenerationResult a_result, b_result;
  std::atomic<int> left{2};
  a.on_done = [&](const GenerationResult& r, const std::string& error, ErrorCode) {
    EXPECT_EQ(error, "");
    a_result = r;
    --left;
  };
  const auto a_id = s.submit(std::move(a));
  ASSERT_TRUE(a_id.has_value());
  a_started.get_future().wait();
  std::string b_stream;
  const Case bc{"How many shapes are there?", {ex + "shapes-2.png"}, greedy()};
  ASSERT_TRUE(s.submit(job(bc, &b_result, &b_stream, &left)).has_value());
  std::string c_stream;
  GenerationResult c_result;
  std::atomic<int> c_left{1};
  EXPECT_FALSE(s.submit(job(bc, &c_result, &c_stream, &c_left)).has_value()) << "the queue of 1 was full";
  EXPECT_EQ(s.stats().queued, 1);
  EXPECT_EQ(s.stats().running, 1);
  // Needs 36 + 3000 positions: more than the budget, refused at once.
  Case huge = bc;
  huge.options.max_new_tokens = 3000;
  EXPECT_THROW(s.submit(job(huge, &c_result, &c_stream, &c_left)), Error);
  s.cancel(*a_id);
  release.set_value();
  s.wait_idle();
  EXPECT_EQ(left.load(), 0);
  EXPECT_EQ(a_result.stop_reason, StopReason::Cancelled);
  EXPECT_LT(a_result.tokens.size(), 1000u);
  const GenerationResult want = alone(bc);
  EXPECT_EQ(b_result.tokens, want.tokens);
  EXPECT_EQ(s.stats().running, 0);
  EXPECT_EQ(s.stats().kv_reserved, 0);
}

// Two requests whose reservations do not fit the KV budget together run one after the other (the second waits in
// the queue although a slot is free) and still get their own tokens; the prefix cache gives its rows back.
TEST_F(SchedulerTest, KvBudgetAdmitsOneAtATimeWhenTwoDoNotFit) {
  const std::string ex = kRoot + "/examples/";
  const Case a{"Describe the picture.", {ex + "shapes-1.png"}, greedy(64)};
  const Case b{"How many shapes are there?", {ex + "shapes-2.png"}, greedy(64)};
  const GenerationResult want_a = alone(a), want_b = alone(b);
  SchedulerOptions so;
  so.max_batch = 4;
  so.kv_budget = want_a.prompt_positions + 64 + 20;  // room for one request, not two
  Scheduler s(*engine_, so);
  std::mutex mu;
  std::vector<std::string> events;
  auto log = [&](const std::string& e) {
    std::lock_guard<std::mutex> lk(mu);
    events.push_back(e);
  };
  GenerationResult got_a, got_b;
  std::string sa, sb;
  std::atomic<int> left{2};
  SchedulerJob ja = job(a, &got_a, &sa, &left), jb = job(b, &got_b, &sb, &left);
  auto done_a = ja.on_done, done_b = jb.on_done;
  auto text_b = jb.on_text;
  ja.on_done = [&, done_a](const GenerationResult& r, const std::string& e, ErrorCode c) {
    log("a done");
    done_a(r, e, c);
  };
  jb.on_text = [&, text_b](const std::string& p) {
    log("b text");
    return text_b(p);
  };
  jb.on_done = done_b;
  ASSERT_TRUE(s.submit(std::move(ja)).has_value());
  ASSERT_TRUE(s.submit(std::move(jb)).has_value());
  s.wait_idle();
  EXPECT_EQ(left.load(), 0);
  EXPECT_EQ(got_a.tokens, want_a.tokens);
  EXPECT_EQ(got_b.tokens, want_b.tokens);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.front(), "a done") << "b started before a finished";
  EXPECT_LE(s.stats().kv_cached + s.stats().kv_reserved, so.kv_budget);
}

// Bad jobs are refused by submit() with the engine's messages.
TEST_F(SchedulerTest, BadJobsAreRefused) {
  Scheduler s(*engine_, {});
  SchedulerJob j;
  j.request.text = "<ImageHere> twice <ImageHere>";
  j.request.style = PromptStyle::ChatImage;
  j.images.push_back(engine_->prepare_image(kRoot + "/examples/shapes-1.png"));
  EXPECT_THROW(s.submit(j), Error);  // 2 markers, 1 image
  SchedulerJob k;
  k.request = chat_request("hi", 0);
  k.options.temperature = -1;
  EXPECT_THROW(s.submit(k), Error);
  SchedulerJob l;
  l.request = chat_request("hi", 0);
  l.images.push_back(engine_->prepare_image(kRoot + "/no/such.png"));
  EXPECT_THROW(s.submit(l), Error);
}

// Stop strings: nothing of the stop string is streamed, a partial match is held back and released.
TEST(StopTextTest, HoldsBackPartialMatchesAndCutsAtTheFirstStop) {
  engine::StopText st({"END", "xy"});
  EXPECT_EQ(st.push("abc E"), "abc ");
  EXPECT_EQ(st.push("N"), "");  // "EN" could still be END
  EXPECT_EQ(st.push("x"), "EN");  // no longer; "x" could be xy
  EXPECT_EQ(st.push("q"), "xq");
  EXPECT_FALSE(st.hit());
  EXPECT_EQ(st.push("1 EN"), "1 ");
  EXPECT_EQ(st.push("D tail"), "");
  EXPECT_TRUE(st.hit());
  EXPECT_EQ(st.text(), "abc ENxq1 ");
  engine::StopText none({"zz"});
  EXPECT_EQ(none.push("az"), "a");
  EXPECT_EQ(none.flush(), "z");
}

}  // namespace
}  // namespace xc2
