// Multi-head attention on the CPU, per head as two GEMMs around a row softmax:
//   S = Q_h . K_g^T          (gemm with the keys as the [n_kv, head_dim] "weight", row stride kv_stride)
//   S = softmax(S * scale)   (f32, masked to the causal prefix of each query)
//   O_h = S . V_g            (gemm against V_g transposed once per KV head into [head_dim, n_kv])
// The GEMM parallelises each product over the pool; softmax rows are split across threads.
// Up to kAttentionRowsMaxQueries queries (decode steps) take a direct per-head path instead.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu/cpu_kernels.h"
#include "cpu/gemm.h"

namespace xc2::kernels::cpu {
namespace {

XC2_MULTIVERSION
void softmax_row(float* s, int64_t n_valid, int64_t n_total, float scale) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < n_valid; ++j) {
    s[j] *= scale;
    mx = std::max(mx, s[j]);
  }
  double sum = 0;
  for (int64_t j = 0; j < n_valid; ++j) {
    s[j] = std::exp(s[j] - mx);
    sum += s[j];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t j = 0; j < n_valid; ++j) s[j] *= inv;
  for (int64_t j = n_valid; j < n_total; ++j) s[j] = 0.0f;
}

// Decode (a few queries): each head on its own, all heads in one pass over the pool. Scores are dot
// products with the keys in place, the output accumulates the value rows in place (no transposed copy
// of V, no GEMM set-up per head): one barrier per call instead of several per KV head.
XC2_MULTIVERSION
void attend_head_rows(const AttentionArgs& a, int64_t h, float* s) {
  const int64_t d = a.head_dim;
  const int64_t g = h / (a.n_heads / a.n_kv_heads);
  for (int64_t i = 0; i < a.n_q; ++i) {
    const float* q = a.q + i * a.q_stride + h * d;
    const int64_t n_valid = a.causal ? std::min(a.n_kv, a.q_pos0 + i + 1) : a.n_kv;
    for (int64_t j = 0; j < n_valid; ++j) {
      const float* k = a.k + j * a.kv_stride + g * d;
      float acc = 0.0f;
      for (int64_t c = 0; c < d; ++c) acc += q[c] * k[c];
      s[j] = acc;
    }
    softmax_row(s, n_valid, n_valid, a.scale);
    float* o = a.out + i * a.out_stride + h * d;
    for (int64_t c = 0; c < d; ++c) o[c] = 0.0f;
    for (int64_t j = 0; j < n_valid; ++j) {
      const float* v = a.v + j * a.kv_stride + g * d;
      const float p = s[j];
      for (int64_t c = 0; c < d; ++c) o[c] += p * v[c];
    }
  }
}

}  // namespace

void attention(const AttentionArgs& a, ThreadPool& pool) {
  if (a.n_q == 0 || a.n_heads == 0) return;
  const int64_t group = a.n_heads / a.n_kv_heads;
  const int64_t d = a.head_dim;
  if (a.n_q <= kAttentionRowsMaxQueries) {
    pool.parallel_for(a.n_heads, [&](int64_t h0, int64_t h1) {
      std::vector<float> s(static_cast<size_t>(a.n_kv));
      for (int64_t h = h0; h < h1; ++h) attend_head_rows(a, h, s.data());
    });
    return;
  }
  // With causal masking the last query sees n_kv keys at most; earlier queries see fewer.
  std::vector<float> scores(static_cast<size_t>(a.n_q * a.n_kv));
  std::vector<float> vt(static_cast<size_t>(d * a.n_kv));
  for (int64_t g = 0; g < a.n_kv_heads; ++g) {
    const float* kg = a.k + g * d;
    const float* vg = a.v + g * d;
    // V_g^T: [head_dim, n_kv]
    pool.parallel_for(d, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t j = 0; j < a.n_kv; ++j) vt[static_cast<size_t>(i * a.n_kv + j)] = vg[j * a.kv_stride + i];
    });
    for (int64_t h = g * group; h < (g + 1) * group; ++h) {
      GemmArgs qk;
      qk.x = a.q + h * d;
      qk.ldx = a.q_stride;
      qk.w = kg;
      qk.w_dtype = DType::F32;
      qk.ldw = a.kv_stride;
      qk.y = scores.data();
      qk.ldy = a.n_kv;
      qk.m = a.n_q;
      qk.n = a.n_kv;
      qk.k = d;
      gemm(qk, pool);
      pool.parallel_for(
          a.n_q,
          [&](int64_t i0, int64_t i1) {
            for (int64_t i = i0; i < i1; ++i) {
              const int64_t n_valid = a.causal ? std::min(a.n_kv, a.q_pos0 + i + 1) : a.n_kv;
              softmax_row(scores.data() + i * a.n_kv, n_valid, a.n_kv, a.scale);
            }
          },
          8);
      GemmArgs pv;
      pv.x = scores.data();
      pv.ldx = a.n_kv;
      pv.w = vt.data();
      pv.w_dtype = DType::F32;
      pv.ldw = a.n_kv;
      pv.y = a.out + h * d;
      pv.ldy = a.out_stride;
      pv.m = a.n_q;
      pv.n = d;
      pv.k = a.n_kv;
      gemm(pv, pool);
    }
  }
}

}  // namespace xc2::kernels::cpu
