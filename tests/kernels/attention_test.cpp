// kernels::cpu::attention against the naive reference (test::ref::attention in support/op_reference: per
// head, double accumulation, causal prefix per query, GQA head h reading KV head h / (n_heads / n_kv_heads)).
// Every code path is covered: up to kAttentionRowsMaxQueries queries (decode: the grouped path for
// G = 1, 2, 4, 8 query heads per KV head and head_dim a multiple of 16, else the per-head path) and more
// (per-head GEMM path); they must agree with each other and with the reference, with strided
// q/k/v/out rows (padding filled with NaN that must not leak), causal and bidirectional, 1-3 threads.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "core/thread_pool.h"
#include "cpu/cpu_kernels.h"
#include "support/op_reference.h"
#include "support/test_util.h"

namespace xc2 {
namespace {

using kernels::AttentionArgs;

struct Case {
  int64_t n_q, n_kv, n_heads, n_kv_heads, head_dim;
  bool causal;
};

struct Data {
  std::vector<float> q, k, v, out;
  AttentionArgs a;
};

Data make(const Case& c, uint32_t seed) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Data d;
  const int64_t qs = c.n_heads * c.head_dim + 5, kvs = c.n_kv_heads * c.head_dim + 3, os = c.n_heads * c.head_dim + 7;
  d.q.assign(static_cast<size_t>(c.n_q * qs), nan);
  d.k.assign(static_cast<size_t>(c.n_kv * kvs), nan);
  d.v.assign(static_cast<size_t>(c.n_kv * kvs), nan);
  d.out.assign(static_cast<size_t>(c.n_q * os), -7.0f);
  std::mt19937 gen(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int64_t i = 0; i < c.n_q; ++i)
    for (int64_t j = 0; j < c.n_heads * c.head_dim; ++j) d.q[static_cast<size_t>(i * qs + j)] = nd(gen);
  for (int64_t i = 0; i < c.n_kv; ++i)
    for (int64_t j = 0; j < c.n_kv_heads * c.head_dim; ++j) {
      d.k[static_cast<size_t>(i * kvs + j)] = nd(gen);
      d.v[static_cast<size_t>(i * kvs + j)] = nd(gen);
    }
  AttentionArgs& a = d.a;
  a.q = d.q.data();
  a.q_stride = qs;
  a.k = d.k.data();
  a.v = d.v.data();
  a.kv_stride = kvs;
  a.out = d.out.data();
  a.out_stride = os;
  a.n_q = c.n_q;
  a.n_kv = c.n_kv;
  a.n_heads = c.n_heads;
  a.n_kv_heads = c.n_kv_heads;
  a.head_dim = c.head_dim;
  a.q_pos0 = c.n_kv - c.n_q;  // the queries are the last n_q positions
  a.causal = c.causal;
  a.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  return d;
}

// [n_q, n_heads * head_dim], dense: the shared reference on the strided rows.
std::vector<float> ref_attention(const AttentionArgs& a) {
  test::ref::Attention r;
  r.q = static_cast<const float*>(a.q);
  r.q_stride = a.q_stride;
  r.k = static_cast<const float*>(a.k);
  r.v = static_cast<const float*>(a.v);
  r.kv_stride = a.kv_stride;
  r.n_q = a.n_q;
  r.n_kv = a.n_kv;
  r.n_heads = a.n_heads;
  r.n_kv_heads = a.n_kv_heads;
  r.head_dim = a.head_dim;
  r.q_pos0 = a.q_pos0;
  r.causal = a.causal;
  r.scale = a.scale;
  return test::to_f32(test::ref::attention(r));
}

std::vector<float> dense_out(const Data& d) {
  const AttentionArgs& a = d.a;
  const int64_t w = a.n_heads * a.head_dim;
  std::vector<float> out(static_cast<size_t>(a.n_q * w));
  for (int64_t i = 0; i < a.n_q; ++i)
    for (int64_t j = 0; j < w; ++j) out[static_cast<size_t>(i * w + j)] = d.out[static_cast<size_t>(i * a.out_stride + j)];
  return out;
}

TEST(CpuAttention, BothPathsMatchTheReference) {
  const int64_t rows_max = kernels::cpu::kAttentionRowsMaxQueries;
  const std::vector<Case> cases = {
      {1, 1, 4, 2, 64, true},          {1, 37, 4, 2, 64, true},           {1, 300, 8, 2, 128, true},
      {rows_max, 50, 4, 4, 64, true},  {rows_max + 1, 50, 4, 2, 64, true}, {3, 3, 2, 1, 32, true},
      {17, 17, 4, 2, 64, true},        {9, 9, 3, 3, 64, false},           {2, 40, 4, 2, 64, false},
      // decode, grouped path (G query heads per KV head, head_dim % 16 == 0) at each G and column chunk,
      // and the per-head fallback (G = 3, head_dim not a multiple of 16)
      {1, 300, 32, 8, 128, true},      {2, 70, 16, 2, 64, true},          {4, 90, 8, 2, 32, true},
      {1, 33, 6, 2, 40, true},         {1, 20, 4, 1, 24, true},           {3, 45, 2, 2, 128, false},
  };
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    for (const Case& c : cases) {
      SCOPED_TRACE(testing::Message() << "n_q " << c.n_q << " n_kv " << c.n_kv << " heads " << c.n_heads << "/"
                                      << c.n_kv_heads << " d " << c.head_dim << (c.causal ? " causal" : "")
                                      << ", " << threads << " threads");
      Data d = make(c, static_cast<uint32_t>(c.n_q * 1000 + c.n_kv));
      kernels::cpu::attention(d.a, pool);
      const std::vector<float> got = dense_out(d), want = ref_attention(d.a);
      const test::CompareReport r = test::compare_rel_l2(got.data(), want.data(), static_cast<int64_t>(got.size()), 1e-6);
      EXPECT_TRUE(r.ok) << r.detail << " rel_l2 " << r.rel_l2;
      // the out row padding is untouched
      for (int64_t i = 0; i < c.n_q; ++i)
        for (int64_t j = c.n_heads * c.head_dim; j < d.a.out_stride; ++j)
          ASSERT_EQ(d.out[static_cast<size_t>(i * d.a.out_stride + j)], -7.0f);
    }
  }
}

TEST(CpuAttention, DecodeBitsDoNotDependOnTheThreadCount) {
  // The grouped decode path gives every (query head, key) score and output element one thread and one order: the
  // same bits with 1, 2 or 3 threads, at every group size and with key counts that are not a multiple of the keys
  // scored together (4, or 2 at G = 8).
  const std::vector<Case> cases = {{1, 301, 32, 8, 128, true}, {2, 77, 16, 8, 64, true}, {1, 130, 16, 2, 64, true},
                                   {3, 45, 8, 1, 32, false},   {1, 6, 4, 4, 16, true}};
  for (const Case& c : cases) {
    SCOPED_TRACE(testing::Message() << "n_q " << c.n_q << " n_kv " << c.n_kv << " heads " << c.n_heads << "/"
                                    << c.n_kv_heads << " d " << c.head_dim);
    std::vector<float> first;
    for (int threads : {1, 2, 3}) {
      ThreadPool pool(threads);
      Data d = make(c, 11);
      kernels::cpu::attention(d.a, pool);
      const std::vector<float> got = dense_out(d);
      if (first.empty()) first = got;
      else ASSERT_EQ(0, std::memcmp(first.data(), got.data(), got.size() * sizeof(float))) << threads << " threads";
    }
  }
}

TEST(CpuAttention, DecodeStepEqualsTheLastRowOfTheFullPass) {
  // The decode path for the last query and the GEMM path for all queries see the same keys.
  ThreadPool pool(2);
  const Case full{12, 12, 4, 2, 64, true};
  Data all = make(full, 7);
  kernels::cpu::attention(all.a, pool);
  Data last = make(full, 7);
  last.a.q = last.q.data() + (full.n_q - 1) * last.a.q_stride;
  last.a.n_q = 1;
  last.a.q_pos0 = full.n_kv - 1;
  kernels::cpu::attention(last.a, pool);
  const int64_t w = full.n_heads * full.head_dim;
  const test::CompareReport r = test::compare_rel_l2(last.out.data(), all.out.data() + (full.n_q - 1) * all.a.out_stride, w, 1e-6);
  EXPECT_TRUE(r.ok) << r.detail;
}

}  // namespace
}  // namespace xc2
