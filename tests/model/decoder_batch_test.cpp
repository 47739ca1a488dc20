// The one decoder forward (XComposer2::forward(DecoderBatch)) and the KV sequence pool, on the CPU backend.
// Oracle: separate single-sequence forward() calls, themselves checked against the PyTorch goldens in
// tiny_model_test.cpp. A CPU GEMM row's bits do not depend on the other rows of the call (gemm_test.cpp) and
// attention, RoPE and the KV writes run per sequence, so every comparison here asks for identical bits.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "model/kv_pool.h"
#include "model/model_test_util.h"
#include "model/xcomposer2.h"
#include "support/test_util.h"

namespace xc2 {
namespace {

using test::random_ids;

std::vector<float> host(Backend& be, const Tensor& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  be.to_host_f32(t, v.data());
  return v;
}

void expect_same_bits(const std::vector<float>& a, const std::vector<float>& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0) << what;
}

// The first n positions of every layer's keys and values.
std::vector<float> cache_rows(Backend& be, model::KvCache& c, int64_t n) {
  std::vector<float> out;
  for (int64_t l = 0; l < c.n_layers(); ++l)
    for (Tensor* t : {&c.k(l), &c.v(l)}) {
      const std::vector<float> v = host(be, t->rows(0, n));
      out.insert(out.end(), v.begin(), v.end());
    }
  return out;
}

class DecoderBatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    be = make_cpu_backend(2);
    m = model::XComposer2::load(test::data_path("models/tiny-a"), *be);
    vocab = m->config().vocab_size;
  }
  std::unique_ptr<Backend> be;
  std::unique_ptr<model::XComposer2> m;
  int32_t vocab = 0;
};

// A prefill chunk of one sequence (with image rows: Partial LoRA on them) and a decode row of another in
// one batch give the logits and KV rows of two separate calls.
TEST_F(DecoderBatchTest, MixedPrefillAndDecodeRowsEqualSeparateCalls) {
  const std::vector<int32_t> a_ids = random_ids(20, vocab, 1), b_ctx = random_ids(10, vocab, 2);
  const int32_t b_next = random_ids(1, vocab, 3)[0];
  Tensor a_rows = m->embed_tokens(a_ids);
  // Rows 3..8 of A stand for image rows (any rows may carry the Partial-LoRA delta).
  const std::vector<model::RowSpan> spans = {{3, 6}};

  // Separate calls.
  auto a1 = m->new_cache(), b1 = m->new_cache();
  const std::vector<float> want_a = m->forward(a_rows, spans, *a1, 1);
  m->forward(m->embed_tokens(b_ctx), {}, *b1, 0);
  const std::vector<float> want_b = m->forward(m->embed_tokens({b_next}), {}, *b1, 1);

  // One batch: A's 20 rows, then B's decode row.
  auto a2 = m->new_cache(), b2 = m->new_cache();
  m->forward(m->embed_tokens(b_ctx), {}, *b2, 0);
  model::DecoderBatch batch;
  batch.rows = be->empty({21, m->config().hidden_size});
  Tensor top = batch.rows.rows(0, 20), bottom = batch.rows.rows(20, 1);
  be->copy(a_rows, top);
  be->copy(m->embed_tokens({b_next}), bottom);
  batch.seqs = {{a2.get(), 0, 20, nullptr, 0}, {b2.get(), 20, 1, nullptr, 0}};
  batch.image_spans = spans;
  batch.out_rows = {19, 20};
  const std::vector<float> got = host(*be, m->forward(batch));
  const size_t V = static_cast<size_t>(vocab);
  ASSERT_EQ(got.size(), 2 * V);
  expect_same_bits({got.begin(), got.begin() + V}, want_a, "prefill row logits");
  expect_same_bits({got.begin() + V, got.end()}, want_b, "decode row logits");
  EXPECT_EQ(a2->length(), 20);
  EXPECT_EQ(b2->length(), 11);
  expect_same_bits(cache_rows(*be, *a2, 20), cache_rows(*be, *a1, 20), "A's KV rows");
  expect_same_bits(cache_rows(*be, *b2, 11), cache_rows(*be, *b1, 11), "B's KV rows");
}

// Output rows that are not the batch's tail are gathered; their logits equal the all-rows call's.
TEST_F(DecoderBatchTest, GatheredOutputRowsEqualTheirRowsOfAllLogits) {
  const std::vector<int32_t> ids = random_ids(9, vocab, 4);
  auto c1 = m->new_cache(), c2 = m->new_cache();
  const std::vector<float> all = m->forward(m->embed_tokens(ids), {}, *c1, 9);
  model::DecoderBatch batch;
  batch.rows = m->embed_tokens(ids);
  batch.seqs = {{c2.get(), 0, 9, nullptr, 0}};
  batch.out_rows = {6, 2};
  const std::vector<float> got = host(*be, m->forward(batch));
  const size_t V = static_cast<size_t>(vocab);
  expect_same_bits({got.begin(), got.begin() + V}, {all.begin() + 6 * V, all.begin() + 7 * V}, "row 6");
  expect_same_bits({got.begin() + V, got.end()}, {all.begin() + 2 * V, all.begin() + 3 * V}, "row 2");
}

// A decode step whose token id and position are read from int buffers when the ops run (the form a GPU
// records once as a graph) computes what the host-position step computes.
TEST_F(DecoderBatchTest, DevicePositionsEqualHostPositions) {
  const std::vector<int32_t> ctx = random_ids(13, vocab, 5);
  const std::vector<int32_t> next = random_ids(3, vocab, 6);
  auto host_cache = m->new_cache(), dev_cache = m->new_cache();
  m->forward(m->embed_tokens(ctx), {}, *host_cache, 0);
  m->forward(m->embed_tokens(ctx), {}, *dev_cache, 0);
  dev_cache->reserve(32);
  IntBuffer token = be->ints(1), pos = be->ints(1);
  be->write_ints(pos, {static_cast<int32_t>(dev_cache->length())});
  Tensor rows = be->empty({1, m->config().hidden_size});
  Tensor logits = be->empty({1, vocab});
  for (size_t i = 0; i < next.size(); ++i) {
    const int32_t id = next[i];
    const std::vector<float> want = m->forward(m->embed_tokens({id}), {}, *host_cache, 1);
    be->write_ints(token, {id});
    m->embed(TokenIds::in(token, 1), rows);
    model::DecoderBatch batch;
    batch.rows = rows;
    batch.seqs = {{dev_cache.get(), 0, 1, &pos, m->rope_theta_for(dev_cache->length() + 1)}};
    batch.out_rows = {0};
    m->forward(batch, &logits);
    EXPECT_EQ(dev_cache->length(), static_cast<int64_t>(13 + i));  // device positions: the caller advances
    dev_cache->set_length(dev_cache->length() + 1);
    be->write_ints(pos, {static_cast<int32_t>(dev_cache->length())});
    expect_same_bits(host(*be, logits), want, "step logits");
  }
  expect_same_bits(cache_rows(*be, *dev_cache, 16), cache_rows(*be, *host_cache, 16), "KV rows");
}

TEST_F(DecoderBatchTest, InvalidBatchesAreInternalErrors) {
  auto c = m->new_cache();
  model::DecoderBatch batch;
  batch.rows = m->embed_tokens({5, 6});
  batch.seqs = {{c.get(), 0, 1, nullptr, 0}};  // covers one of two rows
  EXPECT_EQ(test::catch_error([&] { m->forward(batch); }).code(), ErrorCode::Internal);
  batch.seqs = {{c.get(), 0, 1, nullptr, 0}, {c.get(), 1, 1, nullptr, 0}};  // one cache twice
  EXPECT_EQ(test::catch_error([&] { m->forward(batch); }).code(), ErrorCode::Internal);
  batch.seqs = {{c.get(), 0, 2, nullptr, 0}};
  batch.out_rows = {2};
  EXPECT_EQ(test::catch_error([&] { m->forward(batch); }).code(), ErrorCode::Internal);
  EXPECT_EQ(c->length(), 0);
}

// Every named intermediate is reported, per layer in order; "layer_out" is the hidden state after the layer.
TEST_F(DecoderBatchTest, TraceNamesEveryIntermediate) {
  const std::vector<int32_t> ids = random_ids(6, vocab, 7);
  auto c = m->new_cache();
  model::ForwardTrace trace;
  trace.want_hidden = true;
  std::vector<std::string> layer0;
  std::map<int64_t, std::vector<float>> layer_out;
  trace.on_tensor = [&](const char* name, int64_t layer, const Tensor& t) {
    if (layer == 0) layer0.push_back(name);
    if (std::string(name) == "layer_out") layer_out[layer] = host(*be, t);
  };
  m->forward(m->embed_tokens(ids), {}, *c, 1, &trace);
  const std::vector<std::string> want = {"attn_norm", "qkv",      "q_rope",  "attn_out", "attn_proj",
                                         "ffn_inp",   "ffn_norm", "ffn_gate", "ffn_up",  "ffn_act",
                                         "ffn_out",   "layer_out"};
  EXPECT_EQ(layer0, want);
  const int64_t L = m->config().num_hidden_layers;
  ASSERT_EQ(static_cast<int64_t>(trace.hidden.size()), L + 1);
  for (int64_t l = 0; l < L; ++l) expect_same_bits(layer_out[l], trace.hidden[static_cast<size_t>(l + 1)], "layer");
}

// fork() copies a prefix into a new sequence; truncate() drops positions; both decode as a sequence that
// only ever held that prefix. Freed ids are reused.
TEST_F(DecoderBatchTest, PoolForkTruncateFree) {
  auto pool = m->new_pool();
  const std::vector<int32_t> ids = random_ids(12, vocab, 8);
  const int32_t next = random_ids(1, vocab, 9)[0];
  const model::SeqId full = pool->alloc();
  m->forward(m->embed_tokens(ids), {}, pool->get(full), 0);
  EXPECT_EQ(pool->length(full), 12);

  auto fresh = m->new_cache();  // the oracle: only the first 8 tokens
  m->forward(m->embed_tokens({ids.begin(), ids.begin() + 8}), {}, *fresh, 0);
  const std::vector<float> want = m->forward(m->embed_tokens({next}), {}, *fresh, 1);

  const model::SeqId forked = pool->fork(full, 8);
  EXPECT_NE(forked, full);
  EXPECT_EQ(pool->length(forked), 8);
  EXPECT_EQ(pool->length(full), 12);
  expect_same_bits(m->forward(m->embed_tokens({next}), {}, pool->get(forked), 1), want, "forked prefix");

  pool->truncate(full, 8);
  expect_same_bits(m->forward(m->embed_tokens({next}), {}, pool->get(full), 1), want, "truncated");

  EXPECT_EQ(pool->n_live(), 2);
  pool->free(forked);
  EXPECT_EQ(pool->n_live(), 1);
  EXPECT_EQ(test::catch_error([&] { pool->get(forked); }).code(), ErrorCode::Internal);
  EXPECT_EQ(pool->alloc(), forked);  // the freed id is reused
  EXPECT_EQ(pool->length(forked), 0);
  EXPECT_EQ(test::catch_error([&] { pool->truncate(full, 10); }).code(), ErrorCode::Internal);
  const model::SeqId whole = pool->fork(full);
  EXPECT_EQ(pool->length(whole), 9);
}

}  // namespace
}  // namespace xc2
