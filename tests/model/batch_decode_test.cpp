// Batched decoding (XComposer2::decode_batch, Engine::generate_batch) against one sequence at a time.
// Oracle: the single-sequence path (forward() per step, Engine::generate()), itself checked against the
// PyTorch goldens in tiny_model_test.cpp. On the CPU backend a GEMM row's bits do not depend on the other
// rows of the call (gemm_test.cpp), so the batched logits must be bit-identical, not merely close.
// The CUDA cases (label `cuda`, skipped without a GPU) compare within a tolerance: cuBLASLt may pick
// another algorithm for B rows than for one.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "model/model_test_util.h"
#include "model/xcomposer2.h"
#include "support/test_util.h"
#include "xc2/engine.h"

namespace xc2 {
namespace {

using test::random_ids;

size_t first_bit_difference(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return 0;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0) return i;
  return a.size();
}

// Three sequences of different lengths decode `steps` tokens (teacher-forced with the sequential run's
// greedy choices). The middle one leaves the batch after `drop_after` steps. Every step's logits of the
// batched run are compared with the sequential run's; `tol` < 0 asks for identical bits.
void check_batch_against_sequential(Backend& be, const std::string& model_name, double tol) {
  SCOPED_TRACE(model_name);
  auto m = model::XComposer2::load(test::data_path("models/" + model_name), be);
  const int32_t vocab = m->config().vocab_size;
  const int64_t max_pos = m->config().max_position_embeddings;
  // Prompt lengths: short, medium, and one that crosses max_position_embeddings while decoding (on tiny-b,
  // max_position_embeddings = 64, so that sequence switches to the dynamic-NTK base mid-batch while the
  // others do not).
  const bool crosses = max_pos <= 128;
  const std::vector<size_t> lengths = {5, 23, crosses ? static_cast<size_t>(max_pos - 4) : 40};
  const int steps = 10, drop_after = 4;
  const size_t B = lengths.size(), V = static_cast<size_t>(vocab);

  // Sequential: logits of each step, greedy feed.
  std::vector<std::vector<std::vector<float>>> want(B);
  std::vector<std::vector<int32_t>> feed(B);
  for (size_t b = 0; b < B; ++b) {
    auto cache = m->new_cache();
    std::vector<float> lg = m->forward(m->embed_tokens(random_ids(lengths[b], vocab, 7 + b)), {}, *cache, 1);
    for (int s = 0; s < steps; ++s) {
      int32_t id = 0;
      for (size_t i = 1; i < V; ++i)
        if (lg[i] > lg[static_cast<size_t>(id)]) id = static_cast<int32_t>(i);
      feed[b].push_back(id);
      lg = m->forward(m->embed_tokens({id}), {}, *cache, 1);
      want[b].push_back(lg);
    }
  }

  // Batched.
  std::vector<std::unique_ptr<model::KvCache>> caches(B);
  for (size_t b = 0; b < B; ++b) {
    caches[b] = m->new_cache();
    m->forward(m->embed_tokens(random_ids(lengths[b], vocab, 7 + b)), {}, *caches[b], 0);
  }
  for (int s = 0; s < steps; ++s) {
    std::vector<size_t> live;
    for (size_t b = 0; b < B; ++b)
      if (b != 1 || s < drop_after) live.push_back(b);
    std::vector<int32_t> ids;
    std::vector<model::KvCache*> kv;
    for (size_t b : live) {
      ids.push_back(feed[b][static_cast<size_t>(s)]);
      kv.push_back(caches[b].get());
    }
    const std::vector<float> got = m->decode_batch(ids, kv);
    ASSERT_EQ(got.size(), live.size() * V);
    for (size_t j = 0; j < live.size(); ++j) {
      const size_t b = live[j];
      SCOPED_TRACE("step " + std::to_string(s) + ", sequence " + std::to_string(b) + " of " +
                   std::to_string(live.size()));
      const std::vector<float> row(got.begin() + static_cast<std::ptrdiff_t>(j * V),
                                   got.begin() + static_cast<std::ptrdiff_t>((j + 1) * V));
      const std::vector<float>& ref = want[b][static_cast<size_t>(s)];
      if (tol < 0) {
        const size_t at = first_bit_difference(row, ref);
        ASSERT_EQ(at, row.size()) << "logit " << at << ": " << row[at] << " vs " << ref[at];
      } else {
        const test::CompareReport rep = test::compare_rel_l2(row.data(), ref.data(), vocab, tol);
        ASSERT_TRUE(rep.ok) << "rel_l2 " << rep.rel_l2 << " " << rep.detail;
      }
    }
  }
  for (size_t b = 0; b < B; ++b) {
    const int64_t n_steps = b == 1 ? drop_after : steps;
    EXPECT_EQ(caches[b]->length(), static_cast<int64_t>(lengths[b]) + n_steps);
  }
  // The long sequence did cross max_position_embeddings (so its RoPE base changed mid-batch).
  if (crosses) {
    EXPECT_GT(caches[2]->length(), max_pos);
  }
}

TEST(BatchDecode, CpuLogitsBitIdenticalToOneAtATime) {
  auto be = make_cpu_backend(2);
  check_batch_against_sequential(*be, "tiny-a", -1);
  check_batch_against_sequential(*be, "tiny-b", -1);
}

TEST(BatchDecode, RejectsMismatchedArguments) {
  auto be = make_cpu_backend(1);
  auto m = model::XComposer2::load(test::data_path("models/tiny-b"), *be);
  auto c = m->new_cache();
  EXPECT_EQ(test::catch_error([&] { m->decode_batch({}, {}); }).code(), ErrorCode::Internal);
  EXPECT_EQ(test::catch_error([&] { m->decode_batch({5, 6}, {c.get()}); }).code(), ErrorCode::Internal);
  EXPECT_EQ(test::catch_error([&] { m->decode_batch({5, 6}, {c.get(), c.get()}); }).code(), ErrorCode::Internal);
  EXPECT_EQ(c->length(), 0);
}

std::unique_ptr<Engine> load_engine(const std::string& model, const std::string& device, const std::string& dtype) {
  EngineOptions eo;
  eo.model_dir = test::data_path("models/" + model);
  eo.device = parse_device(device);
  eo.dtype = parse_dtype(dtype);
  eo.threads = 2;
  return Engine::load(eo);
}

// generate_batch gives what generate() gives, request by request: image prompts of different lengths,
// greedy and seeded sampling, sequences stopping at different steps, and a bad request in the middle that
// gets an error while the others finish.
void check_engine_batch(Engine& e, bool exact) {
  const std::vector<std::string> images = {"images/odd_37x23.png", "images/photo_48x40.jpg",
                                           "images/palette_30x30.png"};
  std::vector<Request> reqs;
  for (size_t i = 0; i < images.size(); ++i) {
    Request r;
    r.images = {e.encode_image(test::data_path(images[i]))};
    const std::string q = i == 0 ? "Describe." : i == 1 ? "What is in this picture? Answer at length." : "颜色?";
    r.text = chat_prompt_text(i == 2 ? "" : default_system_prompt(), {}, place_image_markers(q, 1));
    r.style = PromptStyle::ChatImage;
    reqs.push_back(r);
  }
  Request text_only;
  text_only.text = chat_prompt_text("", {}, "Hello there");
  text_only.style = PromptStyle::ChatText;
  text_only.penalize_prompt = true;
  reqs.push_back(text_only);
  Request bad = reqs[0];
  bad.images.clear();  // one <ImageHere> marker, no image
  reqs.insert(reqs.begin() + 2, bad);

  for (const bool sample : {false, true}) {
    SCOPED_TRACE(sample ? "sampled" : "greedy");
    GenerationOptions o;
    o.do_sample = sample;
    o.seed = 1234;
    o.max_new_tokens = 12;
    o.top_k = 20;
    o.top_p = 0.9f;
    // Request 0's third token (same seed: same tokens) becomes a stop id, so it leaves the batch early.
    const GenerationResult probe = e.generate(reqs[0], o);
    ASSERT_GE(probe.tokens.size(), 3u);
    o.stop_ids = {probe.tokens[2]};
    const std::vector<Engine::BatchResult> got = e.generate_batch(reqs, o);
    ASSERT_EQ(got.size(), reqs.size());
    size_t stopped_early = 0;
    for (size_t i = 0; i < reqs.size(); ++i) {
      SCOPED_TRACE("request " + std::to_string(i));
      if (i == 2) {
        EXPECT_NE(got[i].error.find("marker"), std::string::npos) << got[i].error;
        continue;
      }
      ASSERT_EQ(got[i].error, "");
      const GenerationResult want = e.generate(reqs[i], o);
      const GenerationResult& r = got[i].result;
      EXPECT_EQ(r.prompt_positions, want.prompt_positions);
      EXPECT_EQ(r.prompt_tokens, want.prompt_tokens);
      EXPECT_EQ(r.seed, want.seed);
      if (exact) {
        EXPECT_EQ(r.tokens, want.tokens);
        EXPECT_EQ(r.text, want.text);
        EXPECT_EQ(r.stop_reason, want.stop_reason);
      } else if (r.tokens != want.tokens) {
        // Another summation order can flip a near tie; the first token must still agree.
        ASSERT_FALSE(r.tokens.empty());
        ASSERT_FALSE(want.tokens.empty());
        EXPECT_EQ(r.tokens[0], want.tokens[0]);
      }
      if (stop_reason_name(r.stop_reason) != std::string("max_new_tokens")) ++stopped_early;
      EXPECT_GT(r.timings.prefill_ms, 0);
    }
    EXPECT_STREQ(stop_reason_name(got[0].result.stop_reason), "stop_id");
    EXPECT_LE(got[0].result.tokens.size(), 2u);
    EXPECT_GE(stopped_early, 1u);
  }

  // Invalid options throw for the whole call; an empty batch is fine.
  GenerationOptions bad_opts;
  bad_opts.top_p = 0;
  EXPECT_EQ(test::catch_error([&] { e.generate_batch(reqs, bad_opts); }).code(), ErrorCode::InvalidArgument);
  EXPECT_TRUE(e.generate_batch({}, GenerationOptions{}).empty());
}

TEST(BatchGenerate, CpuEqualsGenerateOneByOne) {
  for (const std::string model : {"tiny-a", "tiny-b"}) {
    SCOPED_TRACE(model);
    auto e = load_engine(model, "cpu", "auto");
    check_engine_batch(*e, true);
  }
}

TEST(CudaBatchDecode, F32LogitsMatchOneAtATime) {
  XC2_SKIP_IF_NO_CUDA();
  auto be = make_cuda_backend(0, DType::F32);
  check_batch_against_sequential(*be, "tiny-a", 1e-5);
  check_batch_against_sequential(*be, "tiny-b", 1e-5);
}

TEST(CudaBatchDecode, GenerateBatchMatchesGenerate) {
  XC2_SKIP_IF_NO_CUDA();
  auto e = load_engine("tiny-a", "cuda", "f32");
  check_engine_batch(*e, false);
}

}  // namespace
}  // namespace xc2
