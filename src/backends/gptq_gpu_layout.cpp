// GPTQ -> the GPU layout (kernels/common/gptq_gpu.h) on the host, and the host emulation of the CUDA kernels.
#include "backends/gptq_gpu_layout.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "common/gptq_gpu.h"
#include "core/check.h"
#include "core/half.h"

namespace xc2 {
namespace {

namespace gg = kernels::gptq_gpu;

inline uint32_t load_u32(const void* base, int64_t idx) {
  uint32_t v;
  std::memcpy(&v, static_cast<const char*>(base) + 4 * idx, 4);
  return v;
}

}  // namespace

size_t GptqGpuLayout::bytes(size_t bias_elem_bytes) const {
  return q.size() * 4 + sz.size() * 4 + col_group.size() * 4 + vec_group.size() * 4 + perm.size() * 4 +
         bias.size() * bias_elem_bytes;
}

GptqGpuLayout gptq_gpu_layout(const io::GptqLinearViews& v) {
  XC2_CHECK(v.bits == 4 || v.bits == 8, Internal, "gptq_gpu_layout: bits ", v.bits, " ('", v.base, "')");
  XC2_CHECK(v.qweight && v.qzeros && v.scales, Internal, "gptq_gpu_layout: missing tensors of '", v.base, "'");
  const int p = 32 / v.bits;
  XC2_CHECK(v.n > 0 && v.k > 0 && v.k % p == 0 && v.groups > 0 && v.k < (int64_t(1) << 31), Internal,
            "gptq_gpu_layout: bad shape n=", v.n, " k=", v.k, " groups=", v.groups, " ('", v.base, "')");
  GptqGpuLayout w;
  w.bits = v.bits;
  w.n = v.n;
  w.k = v.k;
  w.groups = v.groups;
  w.kw = v.k / p;
  const int64_t n = v.n, k = v.k, G = v.groups, kw = w.kw;
  const int64_t gs = v.group_size == -1 ? k : v.group_size;

  // Groups of the input columns, and the stable order that makes every group one run.
  std::vector<int32_t> g_in(static_cast<size_t>(k));
  for (int64_t c = 0; c < k; ++c)
    g_in[static_cast<size_t>(c)] =
        v.g_idx ? static_cast<int32_t>(load_u32(v.g_idx->data, c)) : static_cast<int32_t>(c / gs);
  std::vector<int32_t> perm(static_cast<size_t>(k));
  std::iota(perm.begin(), perm.end(), 0);
  std::stable_sort(perm.begin(), perm.end(), [&](int32_t a, int32_t b) {
    return g_in[static_cast<size_t>(a)] < g_in[static_cast<size_t>(b)];
  });
  bool identity = true;
  for (int64_t j = 0; j < k; ++j) identity = identity && perm[static_cast<size_t>(j)] == j;
  w.col_group.resize(static_cast<size_t>(k));
  for (int64_t j = 0; j < k; ++j) w.col_group[static_cast<size_t>(j)] = g_in[static_cast<size_t>(perm[static_cast<size_t>(j)])];
  std::vector<int32_t> pos;  // reordered position of input column i
  if (!identity) {
    pos.resize(static_cast<size_t>(k));
    for (int64_t j = 0; j < k; ++j) pos[static_cast<size_t>(perm[static_cast<size_t>(j)])] = static_cast<int32_t>(j);
    w.perm = std::move(perm);
  }

  // qweight [kw, n] -> q [n][kw], in blocks of output columns (the block's rows of q stay in cache while the input
  // rows stream by).
  w.q.assign(static_cast<size_t>(n * kw), 0u);
  constexpr int64_t kBlock = 64;
  for (int64_t c0 = 0; c0 < n; c0 += kBlock) {
    const int64_t c1 = std::min(n, c0 + kBlock);
    for (int64_t r = 0; r < kw; ++r) {
      for (int64_t c = c0; c < c1; ++c) {
        const uint32_t word = load_u32(v.qweight->data, r * n + c);
        uint32_t* row = w.q.data() + gg::q_row(c, kw);
        if (identity) {
          row[r] = word;
          continue;
        }
        for (int e = 0; e < p; ++e) {
          const int64_t j = pos[static_cast<size_t>(r * p + e)];
          row[j / p] |= gg::value(word, e, v.bits) << ((j % p) * v.bits);
        }
      }
    }
  }

  // (scale, zero) per output and group; qzeros [G, ceil(n / p)] holds zero - 1.
  const int64_t zwords = (n + p - 1) / p;
  w.sz.assign(static_cast<size_t>(2 * n * G), 0.0f);
  for (int64_t g = 0; g < G; ++g)
    for (int64_t c = 0; c < n; ++c) {
      const uint32_t zw = load_u32(v.qzeros->data, g * zwords + c / p);
      const int64_t at = 2 * gg::sz_pair(c, G, g);
      w.sz[static_cast<size_t>(at)] = float_at(v.scales->data, v.scales->dtype, g * n + c);
      w.sz[static_cast<size_t>(at + 1)] = static_cast<float>(gg::value(zw, static_cast<int>(c % p), v.bits) + 1u);
    }

  // One group per 16-byte vector of words, if every vector lies inside one group.
  if (kw % gg::kWordsPerVec == 0) {
    const int64_t per_vec = int64_t{gg::kWordsPerVec} * p, n_vec = kw / gg::kWordsPerVec;
    w.vec_group.resize(static_cast<size_t>(n_vec));
    bool ok = true;
    for (int64_t vi = 0; vi < n_vec && ok; ++vi) {
      const int32_t g = w.col_group[static_cast<size_t>(vi * per_vec)];
      for (int64_t j = vi * per_vec; j < (vi + 1) * per_vec; ++j) ok = ok && w.col_group[static_cast<size_t>(j)] == g;
      w.vec_group[static_cast<size_t>(vi)] = g;
    }
    if (!ok) w.vec_group.clear();
  }

  if (v.bias) {
    w.bias.resize(static_cast<size_t>(n));
    for (int64_t c = 0; c < n; ++c) w.bias[static_cast<size_t>(c)] = float_at(v.bias->data, v.bias->dtype, c);
  }
  return w;
}

std::vector<float> gptq_gpu_dequantize(const GptqGpuLayout& w) {
  const int p = w.p();
  std::vector<float> out(static_cast<size_t>(w.n * w.k));
  for (int64_t c = 0; c < w.n; ++c)
    for (int64_t j = 0; j < w.k; ++j) {
      const uint32_t word = w.q[static_cast<size_t>(gg::q_row(c, w.kw) + j / p)];
      const int64_t pair = gg::sz_pair(c, w.groups, w.col_group[static_cast<size_t>(j)]);
      const float scale = w.sz[static_cast<size_t>(2 * pair)], zero = w.sz[static_cast<size_t>(2 * pair + 1)];
      const float q = gg::q_minus_zero(gg::value(word, static_cast<int>(j % p), w.bits), gg::biased_zero(zero));
      const int64_t in_col = w.perm.empty() ? j : w.perm[static_cast<size_t>(j)];
      out[static_cast<size_t>(c * w.k + in_col)] = scale * q;
    }
  return out;
}

void gptq_gpu_emulate_linear(const GptqGpuLayout& w, const float* x, int64_t m, float* y, bool accumulate,
                             bool vector_path) {
  XC2_CHECK(!vector_path || !w.vec_group.empty(), Internal, "gptq_gpu_emulate_linear: no vector path for this layout");
  const int p = w.p();
  const int64_t k = w.k;
  std::vector<float> xp(static_cast<size_t>(m * k));
  for (int64_t r = 0; r < m; ++r)
    for (int64_t j = 0; j < k; ++j)
      xp[static_cast<size_t>(r * k + j)] = x[r * k + (w.perm.empty() ? j : w.perm[static_cast<size_t>(j)])];
  for (int64_t r = 0; r < m; ++r) {
    const float* xr = xp.data() + r * k;
    for (int64_t c = 0; c < w.n; ++c) {
      const uint32_t* row = w.q.data() + gg::q_row(c, w.kw);
      float total = 0.0f;
      if (vector_path) {
        const int64_t n_vec = w.kw / gg::kWordsPerVec;
        for (int64_t vi = 0; vi < n_vec; ++vi) {
          const int64_t pair = gg::sz_pair(c, w.groups, w.vec_group[static_cast<size_t>(vi)]);
          const float scale = w.sz[static_cast<size_t>(2 * pair)];
          const float bz = gg::biased_zero(w.sz[static_cast<size_t>(2 * pair + 1)]);
          float dot = 0.0f;
          for (int wi = 0; wi < gg::kWordsPerVec; ++wi) {
            const int64_t word_idx = vi * gg::kWordsPerVec + wi;
            const uint32_t word = row[word_idx];
            for (int e = 0; e < p; ++e)
              dot = std::fma(xr[word_idx * p + e], gg::q_minus_zero(gg::value(word, e, w.bits), bz), dot);
          }
          total = std::fma(scale, dot, total);
        }
      } else {
        for (int64_t j = 0; j < k; ++j) {
          const int64_t pair = gg::sz_pair(c, w.groups, w.col_group[static_cast<size_t>(j)]);
          const float scale = w.sz[static_cast<size_t>(2 * pair)];
          const float bz = gg::biased_zero(w.sz[static_cast<size_t>(2 * pair + 1)]);
          const float wv = scale * gg::q_minus_zero(gg::value(row[j / p], static_cast<int>(j % p), w.bits), bz);
          total = std::fma(xr[j], wv, total);
        }
      }
      if (!w.bias.empty()) total += w.bias[static_cast<size_t>(c)];
      float& out = y[r * w.n + c];
      out = accumulate ? out + total : total;
    }
  }
}

}  // namespace xc2
