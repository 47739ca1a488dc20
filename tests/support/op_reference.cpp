#include "support/op_reference.h"

#include <algorithm>
#include <cmath>

#include "core/half.h"

namespace xc2::test {

float round_to(float x, DType dt) {
  switch (dt) {
    case DType::BF16: return bf16_to_f32(f32_to_bf16(x));
    case DType::F16: return f16_to_f32(f32_to_f16(x));
    case DType::F32:
    case DType::I32: return x;
  }
  return x;
}

std::vector<float> rounded(const std::vector<float>& v, DType dt) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = round_to(v[i], dt);
  return out;
}

std::vector<float> to_f32(const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); }

namespace ref {
namespace {

size_t at(int64_t i) { return static_cast<size_t>(i); }

template <typename F>
std::vector<double> pointwise(int64_t n, F&& f) {
  std::vector<double> y(at(n));
  for (int64_t i = 0; i < n; ++i) y[at(i)] = f(i);
  return y;
}

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// x rounded to dt; F32: x itself (a double, not rounded).
double rounded_to(double x, DType dt) { return dt == DType::F32 ? x : round_to(static_cast<float>(x), dt); }

}  // namespace

std::vector<double> linear(const float* x, const float* w, const float* bias, const float* y0, int64_t m, int64_t n,
                           int64_t k) {
  std::vector<double> y(at(m * n));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t l = 0; l < k; ++l) s += static_cast<double>(x[i * k + l]) * w[j * k + l];
      if (y0) s += y0[i * n + j];
      if (bias) s += bias[j];
      y[at(i * n + j)] = s;
    }
  return y;
}

std::vector<double> rms_norm(const float* x, const float* w, int64_t rows, int64_t dim, double eps,
                             DType round_normalized) {
  std::vector<double> y(at(rows * dim));
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += static_cast<double>(xr[i]) * xr[i];
    const double inv = 1.0 / std::sqrt(ss / static_cast<double>(dim) + eps);
    for (int64_t i = 0; i < dim; ++i) y[at(r * dim + i)] = rounded_to(xr[i] * inv, round_normalized) * w[i];
  }
  return y;
}

std::vector<double> layer_norm(const float* x, const float* w, const float* b, int64_t rows, int64_t dim,
                               double eps) {
  std::vector<double> y(at(rows * dim));
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    double mean = 0, var = 0;
    for (int64_t i = 0; i < dim; ++i) mean += xr[i];
    mean /= static_cast<double>(dim);
    for (int64_t i = 0; i < dim; ++i) var += (xr[i] - mean) * (xr[i] - mean);
    const double inv = 1.0 / std::sqrt(var / static_cast<double>(dim) + eps);
    for (int64_t i = 0; i < dim; ++i) y[at(r * dim + i)] = (xr[i] - mean) * inv * w[i] + b[i];
  }
  return y;
}

std::vector<double> add(const float* a, const float* b, int64_t n) {
  return pointwise(n, [&](int64_t i) { return static_cast<double>(a[i]) + b[i]; });
}

std::vector<double> scale(const float* x, double s, int64_t n) {
  return pointwise(n, [&](int64_t i) { return x[i] * s; });
}

std::vector<double> silu_mul(const float* gate, const float* up, int64_t n, DType round_silu) {
  return pointwise(n, [&](int64_t i) { return rounded_to(gate[i] * sigmoid(gate[i]), round_silu) * up[i]; });
}

std::vector<double> gelu_erf(const float* x, int64_t n) {
  return pointwise(n, [&](int64_t i) { return 0.5 * x[i] * (1.0 + std::erf(x[i] / std::sqrt(2.0))); });
}

std::vector<double> quick_gelu(const float* x, int64_t n) {
  return pointwise(n, [&](int64_t i) { return x[i] * sigmoid(1.702 * x[i]); });
}

std::vector<double> embedding(const float* table, int64_t dim, const std::vector<int32_t>& ids) {
  std::vector<double> y;
  y.reserve(ids.size() * at(dim));
  for (int32_t id : ids) y.insert(y.end(), table + int64_t{id} * dim, table + (int64_t{id} + 1) * dim);
  return y;
}

Qkv split_qkv(const float* qkv, int64_t n_tokens, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim) {
  const int64_t G = n_heads / n_kv_heads, group_width = (G + 2) * head_dim, row = n_kv_heads * group_width;
  Qkv out;
  out.q.resize(at(n_tokens * n_heads * head_dim));
  out.k.resize(at(n_tokens * n_kv_heads * head_dim));
  out.v.resize(out.k.size());
  // Row element r: group g = r / group_width, slot s = (r % group_width) / head_dim, dim r % head_dim;
  // slot s < G is query head G g + s, slot G is K head g, slot G + 1 is V head g.
  for (int64_t t = 0; t < n_tokens; ++t)
    for (int64_t r = 0; r < row; ++r) {
      const int64_t g = r / group_width, s = (r % group_width) / head_dim, e = r % head_dim;
      const double x = qkv[t * row + r];
      if (s < G) out.q[at((t * n_heads + G * g + s) * head_dim + e)] = x;
      else if (s == G) out.k[at((t * n_kv_heads + g) * head_dim + e)] = x;
      else out.v[at((t * n_kv_heads + g) * head_dim + e)] = x;
    }
  return out;
}

double rope_angle(int64_t pos, int64_t i, int64_t head_dim, double theta) {
  const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
  const float power = static_cast<float>(std::pow(static_cast<double>(static_cast<float>(theta)), exponent));
  const float inv_freq = 1.0f / power;
  return static_cast<float>(static_cast<float>(pos) * inv_freq);
}

std::vector<double> rope(const float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t pos0,
                         double theta) {
  const int64_t h = head_dim / 2;
  std::vector<double> y(at(n_tokens * n_heads * head_dim));
  for (int64_t t = 0; t < n_tokens; ++t)
    for (int64_t i = 0; i < h; ++i) {
      const double a = rope_angle(pos0 + t, i, head_dim, theta), c = std::cos(a), s = std::sin(a);
      for (int64_t j = 0; j < n_heads; ++j) {
        const int64_t base = (t * n_heads + j) * head_dim;
        const double x1 = x[base + i], x2 = x[base + i + h];
        y[at(base + i)] = x1 * c - x2 * s;
        y[at(base + i + h)] = x2 * c + x1 * s;
      }
    }
  return y;
}

double ntk_theta(double theta, int64_t seq_len, int64_t max_positions, int64_t head_dim) {
  const double ratio = static_cast<double>(seq_len) / static_cast<double>(max_positions);
  return theta * std::pow(ratio, static_cast<double>(head_dim) / static_cast<double>(head_dim - 2));
}

std::vector<double> attention(const Attention& a) {
  const int64_t d = a.head_dim, G = a.n_heads / a.n_kv_heads;
  const int64_t qs = a.q_stride ? a.q_stride : a.n_heads * d, kvs = a.kv_stride ? a.kv_stride : a.n_kv_heads * d;
  std::vector<double> out(at(a.n_q * a.n_heads * d), 0.0), s(at(a.n_kv));
  for (int64_t i = 0; i < a.n_q; ++i)
    for (int64_t h = 0; h < a.n_heads; ++h) {
      const int64_t kvh = h / G, end = a.causal ? std::min(a.n_kv, a.q_pos0 + i + 1) : a.n_kv;
      const float* qi = a.q + i * qs + h * d;
      double mx = -1e300;
      for (int64_t j = 0; j < end; ++j) {
        const float* kj = a.k + j * kvs + kvh * d;
        double dot = 0;
        for (int64_t e = 0; e < d; ++e) dot += static_cast<double>(qi[e]) * kj[e];
        s[at(j)] = dot * a.scale;
        mx = std::max(mx, s[at(j)]);
      }
      double z = 0;
      for (int64_t j = 0; j < end; ++j) z += std::exp(s[at(j)] - mx);
      double* o = &out[at((i * a.n_heads + h) * d)];
      for (int64_t j = 0; j < end; ++j) {
        const double pe = std::exp(s[at(j)] - mx);
        const double p = rounded_to(pe, a.p_dtype) / z;
        const float* vj = a.v + j * kvs + kvh * d;
        for (int64_t e = 0; e < d; ++e) o[e] += p * vj[e];
      }
    }
  return out;
}

std::vector<double> attention(const float* q, const float* k, const float* v, int64_t n_q, int64_t n_kv,
                              int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, int64_t q_pos0, bool causal,
                              float scale, DType p_dtype) {
  const int64_t dense = 0;  // q_stride, kv_stride
  return attention(Attention{q, k, v, dense, dense, n_q, n_kv, n_heads, n_kv_heads, head_dim, q_pos0, causal, scale,
                             p_dtype});
}

std::vector<double> im2col_patches(const float* pixels, int64_t n_images, int64_t size, int64_t patch) {
  const int64_t g = size / patch, row = 3 * patch * patch;
  std::vector<double> cols(at(n_images * g * g * row));
  for (int64_t img = 0; img < n_images; ++img)
    for (int64_t py = 0; py < g; ++py)
      for (int64_t px = 0; px < g; ++px)
        for (int64_t c = 0; c < 3; ++c)
          for (int64_t ky = 0; ky < patch; ++ky)
            for (int64_t kx = 0; kx < patch; ++kx) {
              const int64_t y = py * patch + ky, x = px * patch + kx;
              cols[at(((img * g + py) * g + px) * row + (c * patch + ky) * patch + kx)] =
                  pixels[((img * 3 + c) * size + y) * size + x];
            }
  return cols;
}

}  // namespace ref
}  // namespace xc2::test
