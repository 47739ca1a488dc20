#include "gptq_random.h"

#include <algorithm>
#include <numeric>
#include <random>

#include "core/half.h"

namespace xc2::test {

std::string GptqCase::str() const {
  return "bits " + std::to_string(bits) + " n=" + std::to_string(n) + " k=" + std::to_string(k) + " group " +
         std::to_string(group_size) + (random_groups ? " random-groups" : act_order ? " act-order" : "") +
         (sym ? " sym" : " asym") + (bias ? " bias" : "");
}

void fill_random_gptq(const GptqCase& c, uint32_t seed, GptqRaw* d) {
  d->c = c;
  std::mt19937 rng(seed);
  const int p = 32 / c.bits, maxq = (1 << c.bits) - 1;
  const int64_t gs = c.group_size == -1 ? c.k : c.group_size;
  d->groups = c.group_size == -1 ? 1 : (c.k + c.group_size - 1) / c.group_size;  // io::gptq_groups
  const int64_t G = d->groups;

  // Group of every input column.
  d->g_idx.resize(static_cast<size_t>(c.k));
  if (c.random_groups) {
    std::uniform_int_distribution<int32_t> gd(0, static_cast<int32_t>(G - 1));
    for (auto& g : d->g_idx) g = gd(rng);
  } else {
    std::vector<int32_t> order(static_cast<size_t>(c.k));
    std::iota(order.begin(), order.end(), 0);
    if (c.act_order) std::shuffle(order.begin(), order.end(), rng);
    for (int64_t i = 0; i < c.k; ++i) d->g_idx[static_cast<size_t>(order[static_cast<size_t>(i)])] = static_cast<int32_t>(i / gs);
  }

  std::uniform_int_distribution<int> qd(0, maxq), zd(1, maxq + 1);
  std::uniform_real_distribution<float> sd(0.001f, 0.02f);
  std::vector<int32_t> q(static_cast<size_t>(c.n * c.k)), z(static_cast<size_t>(G * c.n));
  for (auto& v : q) v = qd(rng);
  for (auto& v : z) v = c.sym ? (1 << (c.bits - 1)) : zd(rng);
  d->scales.resize(static_cast<size_t>(G * c.n));
  for (auto& s : d->scales) s = f32_to_f16(sd(rng));

  d->qweight.assign(static_cast<size_t>(c.k / p * c.n), 0);
  for (int64_t r = 0; r < c.n; ++r)
    for (int64_t col = 0; col < c.k; ++col)
      d->qweight[static_cast<size_t>((col / p) * c.n + r)] |=
          static_cast<int32_t>(static_cast<uint32_t>(q[static_cast<size_t>(r * c.k + col)]) << ((col % p) * c.bits));
  const int64_t zw = (c.n + p - 1) / p;
  d->qzeros.assign(static_cast<size_t>(G * zw), 0);
  for (int64_t g = 0; g < G; ++g)
    for (int64_t r = 0; r < c.n; ++r) {
      const uint32_t stored = static_cast<uint32_t>(z[static_cast<size_t>(g * c.n + r)] - 1) & static_cast<uint32_t>(maxq);
      d->qzeros[static_cast<size_t>(g * zw + r / p)] |= static_cast<int32_t>(stored << ((r % p) * c.bits));
    }
  d->w.resize(static_cast<size_t>(c.n * c.k));
  for (int64_t r = 0; r < c.n; ++r)
    for (int64_t col = 0; col < c.k; ++col) {
      const int32_t g = d->g_idx[static_cast<size_t>(col)];
      d->w[static_cast<size_t>(r * c.k + col)] =
          static_cast<double>(f16_to_f32(d->scales[static_cast<size_t>(g * c.n + r)])) *
          (q[static_cast<size_t>(r * c.k + col)] - z[static_cast<size_t>(g * c.n + r)]);
    }
  d->bias.clear();
  if (c.bias) {
    d->bias.resize(static_cast<size_t>(c.n));
    for (auto& b : d->bias) b = f32_to_f16(sd(rng) * 10);
  }
}

}  // namespace xc2::test
