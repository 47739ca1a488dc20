#include "model/gptq_test_util.h"

#include "core/half.h"

namespace xc2::test {

namespace {

io::TensorView view(const std::string& name, DType dt, std::vector<int64_t> shape, const void* data, size_t nbytes) {
  io::TensorView v;
  v.name = name;
  v.dtype = dt;
  v.shape = std::move(shape);
  v.data = data;
  v.nbytes = nbytes;
  v.file = "random";
  return v;
}

}  // namespace

std::unique_ptr<RandomGptq> make_random_gptq(const GptqCase& c, uint32_t seed) {
  auto d = std::make_unique<RandomGptq>();
  fill_random_gptq(c, seed, d.get());
  const int p = 32 / c.bits;
  const int64_t G = d->groups;
  const int64_t zw = (c.n + p - 1) / p;

  d->qweight_v = view("l.qweight", DType::I32, {c.k / p, c.n}, d->qweight.data(), d->qweight.size() * 4);
  d->qzeros_v = view("l.qzeros", DType::I32, {G, zw}, d->qzeros.data(), d->qzeros.size() * 4);
  d->scales_v = view("l.scales", DType::F16, {G, c.n}, d->scales.data(), d->scales.size() * 2);
  d->g_idx_v = view("l.g_idx", DType::I32, {c.k}, d->g_idx.data(), d->g_idx.size() * 4);
  d->bias_v = view("l.bias", DType::F16, {c.n}, d->bias.data(), d->bias.size() * 2);
  io::GptqLinearViews& v = d->views;
  v.base = "l";
  v.qweight = &d->qweight_v;
  v.qzeros = &d->qzeros_v;
  v.scales = &d->scales_v;
  v.g_idx = c.act_order || c.random_groups ? &d->g_idx_v : nullptr;  // absent: column j is in group j / group_size
  v.bias = c.bias ? &d->bias_v : nullptr;
  v.n = c.n;
  v.k = c.k;
  v.groups = G;
  v.bits = c.bits;
  v.group_size = c.group_size;
  return d;
}

std::vector<double> gptq_reference_linear(const RandomGptq& g, const std::vector<float>& x, int64_t m,
                                          const std::vector<float>* y0) {
  const int64_t n = g.c.n, k = g.c.k;
  std::vector<double> y(static_cast<size_t>(m * n));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t r = 0; r < n; ++r) {
      double s = g.c.bias ? f16_to_f32(g.bias[static_cast<size_t>(r)]) : 0.0;
      for (int64_t c = 0; c < k; ++c) s += x[static_cast<size_t>(i * k + c)] * g.w[static_cast<size_t>(r * k + c)];
      if (y0) s += (*y0)[static_cast<size_t>(i * n + r)];
      y[static_cast<size_t>(i * n + r)] = s;
    }
  return y;
}

}  // namespace xc2::test
