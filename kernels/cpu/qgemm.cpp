// GPTQ repacking and the exact quantized linear (kernels/cpu/qgemm.h).
#include "cpu/qgemm.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "core/check.h"
#include "core/half.h"
#include "cpu/gemm.h"

namespace xc2::kernels::cpu {
namespace {

inline int32_t load_i32(const void* base, int64_t idx) {
  int32_t v;
  std::memcpy(&v, static_cast<const char*>(base) + 4 * idx, 4);
  return v;
}

void fill_source(const void* ctx, int64_t row0, int64_t rows, int64_t k0, int64_t klen, float* dst, int64_t ld) {
  dequantize(*static_cast<const QuantMatrix*>(ctx), row0, rows, k0, klen, dst, ld);
}

struct XBuffer {
  std::vector<float> data;
};
thread_local XBuffer tls_x;

}  // namespace

size_t QuantMatrix::bytes() const {
  return q.size() * 4 + scale.size() * 4 + zero.size() * 2 + group.size() * 4 + perm.size() * 4 + bias.size() * 4;
}

QuantMatrix repack_gptq(const GptqTensors& t) {
  XC2_CHECK(t.bits == 4 || t.bits == 8, Internal, "repack_gptq: bits ", t.bits);
  const int p = 32 / t.bits;
  const uint32_t mask = (1u << t.bits) - 1u;
  XC2_CHECK(t.k % p == 0 && t.n > 0 && t.groups > 0, Internal, "repack_gptq: bad shape");
  QuantMatrix w;
  w.bits = t.bits;
  w.n = t.n;
  w.k = t.k;
  w.groups = t.groups;
  w.words = t.k / p;
  const int64_t gs = t.group_size == -1 ? t.k : t.group_size;

  // Group of every input column; columns reordered so that the groups are contiguous (stable).
  std::vector<int32_t> g_in(static_cast<size_t>(t.k));
  for (int64_t c = 0; c < t.k; ++c)
    g_in[static_cast<size_t>(c)] = t.g_idx ? load_i32(t.g_idx, c) : static_cast<int32_t>(c / gs);
  std::vector<int32_t> perm(static_cast<size_t>(t.k));
  std::iota(perm.begin(), perm.end(), 0);
  std::stable_sort(perm.begin(), perm.end(),
                   [&](int32_t a, int32_t b) { return g_in[static_cast<size_t>(a)] < g_in[static_cast<size_t>(b)]; });
  bool identity = true;
  for (int64_t j = 0; j < t.k; ++j) identity = identity && perm[static_cast<size_t>(j)] == j;
  w.group.resize(static_cast<size_t>(t.k));
  bool uniform = true;
  for (int64_t j = 0; j < t.k; ++j) {
    w.group[static_cast<size_t>(j)] = g_in[static_cast<size_t>(perm[static_cast<size_t>(j)])];
    uniform = uniform && w.group[static_cast<size_t>(j)] == j / gs;
  }
  w.uniform_group = uniform ? gs : 0;
  if (!identity) w.perm = std::move(perm);

  // Values: qweight [k / p, n] -> q [n][words] in the reordered column order.
  w.q.assign(static_cast<size_t>(t.n * w.words), 0u);
  std::vector<int32_t> src_col(static_cast<size_t>(t.k));  // reordered position of input column c
  for (int64_t j = 0; j < t.k; ++j) src_col[static_cast<size_t>(w.perm.empty() ? j : w.perm[static_cast<size_t>(j)])] =
      static_cast<int32_t>(j);
  for (int64_t r = 0; r < t.k / p; ++r) {
    for (int64_t n = 0; n < t.n; ++n) {
      const uint32_t word = static_cast<uint32_t>(load_i32(t.qweight, r * t.n + n));
      for (int i = 0; i < p; ++i) {
        const int64_t j = src_col[static_cast<size_t>(r * p + i)];
        const uint32_t v = (word >> (i * t.bits)) & mask;
        w.q[static_cast<size_t>(n * w.words + j / p)] |= v << ((j % p) * t.bits);
      }
    }
  }
  // Scales and zeros: [groups, n] -> [n][groups]; the stored zero is zero - 1.
  const int64_t zwords = (t.n + p - 1) / p;
  w.scale.resize(static_cast<size_t>(t.n * t.groups));
  w.zero.resize(static_cast<size_t>(t.n * t.groups));
  for (int64_t g = 0; g < t.groups; ++g) {
    for (int64_t n = 0; n < t.n; ++n) {
      const uint32_t zw = static_cast<uint32_t>(load_i32(t.qzeros, g * zwords + n / p));
      w.zero[static_cast<size_t>(n * t.groups + g)] = static_cast<uint16_t>(((zw >> ((n % p) * t.bits)) & mask) + 1u);
      w.scale[static_cast<size_t>(n * t.groups + g)] = float_at(t.scales, t.scales_dtype, g * t.n + n);
    }
  }
  if (t.bias) {
    w.bias.resize(static_cast<size_t>(t.n));
    for (int64_t n = 0; n < t.n; ++n) w.bias[static_cast<size_t>(n)] = float_at(t.bias, t.bias_dtype, n);
  }
  return w;
}

void dequantize(const QuantMatrix& w, int64_t row0, int64_t rows, int64_t k0, int64_t klen, float* dst, int64_t ld) {
  const int p = 32 / w.bits;
  const uint32_t mask = (1u << w.bits) - 1u;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t n = row0 + r;
    const uint32_t* q = w.q.data() + n * w.words;
    const float* sc = w.scale.data() + n * w.groups;
    const uint16_t* zp = w.zero.data() + n * w.groups;
    float* d = dst + r * ld;
    for (int64_t c = 0; c < klen; ++c) {
      const int64_t j = k0 + c;
      const int32_t v = static_cast<int32_t>((q[j / p] >> ((j % p) * w.bits)) & mask);
      const int32_t g = w.group[static_cast<size_t>(j)];
      d[c] = static_cast<float>(v - static_cast<int32_t>(zp[g])) * sc[g];
    }
  }
}

void qlinear(const float* x, int64_t ldx, const QuantMatrix& w, float* y, int64_t ldy, int64_t m, bool accumulate,
             ThreadPool& pool) {
  if (m == 0) return;
  if (!w.perm.empty()) {  // reorder the input columns like the weight's
    std::vector<float>& xp = tls_x.data;
    xp.resize(static_cast<size_t>(m * w.k));
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < w.k; ++j) xp[static_cast<size_t>(i * w.k + j)] = x[i * ldx + w.perm[static_cast<size_t>(j)]];
    x = xp.data();
    ldx = w.k;
  }
  WeightSource src;
  src.fill = fill_source;
  src.ctx = &w;
  GemmArgs a;
  a.x = x;
  a.ldx = ldx;
  a.w_source = &src;
  a.bias = w.bias.empty() ? nullptr : w.bias.data();
  a.bias_dtype = DType::F32;
  a.y = y;
  a.ldy = ldy;
  a.m = m;
  a.n = w.n;
  a.k = w.k;
  a.accumulate = accumulate;
  gemm(a, pool);
}

}  // namespace xc2::kernels::cpu
