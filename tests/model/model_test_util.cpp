#include "model/model_test_util.h"

#include <random>

namespace xc2::test {

std::vector<int32_t> random_ids(size_t n, int32_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> d(3, vocab - 1);
  std::vector<int32_t> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

Tensor assemble_rows(Backend& be, model::XComposer2& model, const text::Prompt& prompt, const Tensor& image_rows,
                     std::vector<model::RowSpan>& spans) {
  const int64_t vt = model.config().visual_tokens();
  const int64_t T = prompt.n_positions(vt);
  Tensor rows = be.empty({T, model.config().hidden_size});
  spans.clear();
  int64_t pos = 0;
  for (const auto& s : prompt.segments) {
    if (s.image >= 0) {
      Tensor dst = rows.rows(pos, vt);
      be.copy(image_rows.rows(s.image * vt, vt), dst);
      spans.push_back({pos, vt});
      pos += vt;
    } else if (!s.ids.empty()) {
      Tensor dst = rows.rows(pos, static_cast<int64_t>(s.ids.size()));
      be.copy(model.embed_tokens(s.ids), dst);
      pos += static_cast<int64_t>(s.ids.size());
    }
  }
  return rows;
}

}  // namespace xc2::test
