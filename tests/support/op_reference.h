// The oracle of the op tests: one naive double-precision reference per Backend op (backends/backend.h),
// written from the documented semantics (docs/model-spec.md §4.2, §5, §6, §8; backends/backend.h) and
// nothing else. Single-threaded, dense row-major inputs, double arithmetic, results in double; never
// optimised. Tests round their inputs to the dtype a backend holds (round_to) before calling these, so a
// reference sees exactly the numbers the backend sees.
#pragma once

#include <cstdint>
#include <vector>

#include "xc2/dtype.h"

namespace xc2::test {

// x rounded to dt (round to nearest even; f32 leaves it as is).
float round_to(float x, DType dt);
std::vector<float> rounded(const std::vector<float>& v, DType dt);
// Each value rounded to the nearest f32.
std::vector<float> to_f32(const std::vector<double>& v);

namespace ref {

// y[i, j] = sum_l x[i, l] w[j, l] (+ bias[j]) (+ y0[i, j]).  x: [m, k]; w: [n, k]; bias: [n] or null;
// y0: [m, n] or null (the accumulate flag).
std::vector<double> linear(const float* x, const float* w, const float* bias, const float* y0, int64_t m, int64_t n,
                           int64_t k);

// RMSNorm (model-spec §6.1): y[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * w.  x: [rows, dim]; w: [dim]
// round_normalized: the normalised value is rounded to this dtype before the weight multiply, as upstream
// does in a low-precision activation dtype (F32: kept in double).
std::vector<double> rms_norm(const float* x, const float* w, int64_t rows, int64_t dim, double eps,
                             DType round_normalized = DType::F32);
// LayerNorm (CLIP, model-spec §8.1): y = (x - mean) / sqrt(var + eps) * w + b, biased variance.
std::vector<double> layer_norm(const float* x, const float* w, const float* b, int64_t rows, int64_t dim, double eps);

// Element-wise, n elements.
std::vector<double> add(const float* a, const float* b, int64_t n);             // a + b
std::vector<double> scale(const float* x, double s, int64_t n);                 // x * s
// gate * sigmoid(gate) * up; round_silu: the SiLU output is rounded to this dtype before the multiply, as
// upstream's act_fn(w1(x)) * w3(x) does in a low-precision activation dtype (F32: kept in double).
std::vector<double> silu_mul(const float* gate, const float* up, int64_t n, DType round_silu = DType::F32);
std::vector<double> gelu_erf(const float* x, int64_t n);                        // 0.5 x (1 + erf(x / sqrt 2))
std::vector<double> quick_gelu(const float* x, int64_t n);                      // x * sigmoid(1.702 x)

// y[t, :] = table[ids[t], :].  table: [vocab, dim]
std::vector<double> embedding(const float* table, int64_t dim, const std::vector<int32_t>& ids);

// Packed wqkv rows (model-spec §4.2): row = n_kv_heads groups of (G query heads, 1 K head, 1 V head),
// G = n_heads / n_kv_heads. qkv: [T, (n_heads + 2 n_kv_heads) head_dim] ->
// q: [T, n_heads, head_dim], k, v: [T, n_kv_heads, head_dim].
struct Qkv {
  std::vector<double> q, k, v;
};
Qkv split_qkv(const float* qkv, int64_t n_tokens, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim);

// RoPE angle of pair i (0 <= i < head_dim / 2) at position pos, the upstream fp32 recipe
// (model-spec §6.2, backends/backend.h rope_tables()): inv_freq = 1 / f32(theta^f32(2i / head_dim)),
// angle = f32(f32(pos) * inv_freq). Exact f32 values, widened.
double rope_angle(int64_t pos, int64_t i, int64_t head_dim, double theta);
// rotate_half RoPE on x: [n_tokens, n_heads, head_dim], token t at position pos0 + t:
//   x'[i] = x[i] cos a_i - x[i + h] sin a_i,  x'[i + h] = x[i + h] cos a_i + x[i] sin a_i,  h = head_dim / 2,
// cos and sin in double of the f32 angle.
std::vector<double> rope(const float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t pos0,
                         double theta);
// The dynamic-NTK base for a sequence of seq_len > max_positions (model-spec §6.2, factor 1):
// theta ((seq_len / max_positions) ^ (head_dim / (head_dim - 2))).
double ntk_theta(double theta, int64_t seq_len, int64_t max_positions, int64_t head_dim);

// Attention with grouped KV heads (model-spec §5): query head h reads KV head h / (n_heads / n_kv_heads);
// scores = scale (q . k); causal: query i (position q_pos0 + i) sees keys j <= q_pos0 + i; j < n_kv;
// softmax over the visible keys; out = P v, heads concatenated: [n_q, n_heads * head_dim], dense.
struct Attention {
  const float* q = nullptr;  // [n_q, n_heads, head_dim], row stride q_stride (0: dense)
  const float* k = nullptr;  // k, v: [>= n_kv, n_kv_heads, head_dim], row stride kv_stride (0: dense)
  const float* v = nullptr;
  int64_t q_stride = 0, kv_stride = 0;
  int64_t n_q = 0, n_kv = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0, q_pos0 = 0;
  bool causal = true;
  float scale = 1.0f;
  // Rounds each unnormalised probability exp(s - max) to this dtype, as a low-precision kernel that
  // multiplies P in its dtype must (for the noise-floor rule); F32 keeps it in double.
  DType p_dtype = DType::F32;
};
std::vector<double> attention(const Attention& a);
// The same on dense q, k, v.
std::vector<double> attention(const float* q, const float* k, const float* v, int64_t n_q, int64_t n_kv,
                              int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, int64_t q_pos0, bool causal,
                              float scale, DType p_dtype = DType::F32);

// Conv2d patches (kernel = stride = patch, no padding): pixels [n_images, 3, size, size] ->
// cols [n_images g g, 3 patch patch], g = size / patch, patches row-major, each flattened (channel, ky, kx).
std::vector<double> im2col_patches(const float* pixels, int64_t n_images, int64_t size, int64_t patch);

}  // namespace ref
}  // namespace xc2::test
