// The CUDA backend's GPTQ layout (backends/gptq_gpu_layout.h, kernels/common/gptq_gpu.h), checked on the CPU so
// that it is tested on machines without a GPU (these are not CUDA tests: label `model`).
// Oracles:
//   - the GPTQ format's own formula (io/gptq.h), decoded here in double from the raw tensors: the layout read back
//     (gptq_gpu_dequantize) must give every weight exactly (w = f16 scale * small integer is exact in f32);
//   - the CPU backend's exact quantized linear (set_exact_quant(true)): the host emulation of the CUDA GEMV
//     kernels' arithmetic over the layout (vector and generic paths, gptq_gpu_emulate_linear) must match it to
//     f32 rounding (rel L2 <= 1e-5), with bias and accumulate.
// Cases: 4 and 8 bits, group sizes 8 to 128 and per channel, k not a multiple of the group size, act-order and
// uneven random groups, sym and asym, n not a multiple of 8, with and without the vector path; and the quantized
// linears of the tiny GPTQ checkpoints (tests/data/models/tiny-q*).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "backends/gptq_gpu_layout.h"
#include "core/half.h"
#include "io/checkpoint.h"
#include "io/gptq.h"
#include "io/weight_store.h"
#include "model/gptq_test_util.h"
#include "model/weight_names.h"
#include "support/backend_test_util.h"
#include "support/test_util.h"

namespace xc2 {
namespace {

using test::GptqCase;

struct LayoutCase {
  GptqCase c;
  bool vector_path;  // whether the layout must offer the GEMV's 16-byte vector path
};

const std::vector<LayoutCase>& layout_cases() {
  //                              bits  n    k   group  act    random sym    bias
  static const std::vector<LayoutCase> v = {
      {{4, 48, 256, 32, false, false, false, false}, true},
      {{4, 37, 256, 128, true, false, false, true}, true},    // act-order, n odd, bias
      {{4, 64, 512, -1, false, false, true, false}, true},    // per channel, sym
      {{8, 40, 256, 32, true, false, false, false}, true},
      {{8, 33, 160, -1, false, false, false, true}, true},
      {{8, 21, 80, 32, true, false, true, false}, true},      // groups of 32, 32, 16 (k % group != 0)
      {{4, 29, 72, 32, false, false, false, true}, false},    // 9 words per output: not whole 16-byte vectors
      {{4, 24, 128, 16, false, false, false, false}, false},  // two groups inside one 32-value vector
      {{4, 30, 256, 32, true, true, false, true}, false},     // uneven random groups
      {{8, 17, 64, 8, true, false, true, false}, false},      // 8-bit, group 8 < 16 values per vector
  };
  return v;
}

void expect_rel_l2(const std::vector<float>& got, const std::vector<float>& want, double tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  const test::CompareReport r = test::compare_rel_l2(got.data(), want.data(), static_cast<int64_t>(got.size()), tol);
  EXPECT_TRUE(r.ok) << what << ": " << r.detail;
}

std::vector<float> to_float(const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); }

TEST(GptqGpuLayout, ReadsBackEveryWeightExactly) {
  uint32_t seed = 1;
  for (const LayoutCase& lc : layout_cases()) {
    SCOPED_TRACE(lc.c.str());
    auto g = test::make_random_gptq(lc.c, seed++);
    const GptqGpuLayout lay = gptq_gpu_layout(g->views);
    const int p = 32 / lc.c.bits;
    EXPECT_EQ(lay.kw, lc.c.k / p);
    EXPECT_EQ(lay.q.size(), static_cast<size_t>(lc.c.n * lay.kw));
    EXPECT_EQ(lay.sz.size(), static_cast<size_t>(2 * lc.c.n * g->groups));
    EXPECT_EQ(!lay.vec_group.empty(), lc.vector_path);
    if (!lay.vec_group.empty()) {
      EXPECT_EQ(lay.vec_group.size(), static_cast<size_t>(lay.kw / 4));
    }
    EXPECT_EQ(lay.perm.empty(), !lc.c.act_order && !lc.c.random_groups);  // a shuffle of 64+ columns moves some
    EXPECT_EQ(lay.bias.size(), lc.c.bias ? static_cast<size_t>(lc.c.n) : 0u);
    for (size_t j = 1; j < lay.col_group.size(); ++j) ASSERT_LE(lay.col_group[j - 1], lay.col_group[j]) << "column " << j;
    EXPECT_EQ(lay.bytes(2), lay.q.size() * 4 + lay.sz.size() * 4 + lay.col_group.size() * 4 +
                                lay.vec_group.size() * 4 + lay.perm.size() * 4 + lay.bias.size() * 2);
    const std::vector<float> w = gptq_gpu_dequantize(lay);
    ASSERT_EQ(w.size(), g->w.size());
    for (size_t i = 0; i < w.size(); ++i)
      if (w[i] != static_cast<float>(g->w[i])) {
        ADD_FAILURE() << "weight [" << i / static_cast<size_t>(lc.c.k) << ", " << i % static_cast<size_t>(lc.c.k)
                      << "]: layout gives " << w[i] << ", the format " << g->w[i];
        break;
      }
  }
}

TEST(GptqGpuLayout, KernelEmulationMatchesCpuExactPath) {
  auto cpu = make_cpu_backend(1);
  cpu->set_exact_quant(true);
  uint32_t seed = 100;
  for (const LayoutCase& lc : layout_cases()) {
    auto g = test::make_random_gptq(lc.c, seed++);
    const GptqGpuLayout lay = gptq_gpu_layout(g->views);
    const QuantWeight qw = cpu->quant_weight(g->views);
    for (int64_t m : {1, 3, 17}) {
      for (bool accumulate : {false, true}) {
        SCOPED_TRACE(lc.c.str() + " m=" + std::to_string(m) + (accumulate ? " accumulate" : ""));
        const std::vector<float> x = test::random_vec(static_cast<size_t>(m * lc.c.k), seed * 7 + 1);
        const std::vector<float> y0 = test::random_vec(static_cast<size_t>(m * lc.c.n), seed * 7 + 2);
        Tensor tx = cpu->from_host_f32(x.data(), {m, lc.c.k});
        Tensor ty = cpu->from_host_f32(y0.data(), {m, lc.c.n});
        cpu->linear_q(tx, qw, ty, accumulate);
        const std::vector<float> want = test::to_host(*cpu, ty);
        const std::vector<double> ref = test::gptq_reference_linear(*g, x, m, accumulate ? &y0 : nullptr);
        expect_rel_l2(want, to_float(ref), 1e-5, "cpu exact path vs the double reference");
        for (bool vec : {true, false}) {
          if (vec && lay.vec_group.empty()) continue;
          std::vector<float> y = y0;
          gptq_gpu_emulate_linear(lay, x.data(), m, y.data(), accumulate, vec);
          expect_rel_l2(y, want, 1e-5, vec ? "vector path emulation vs cpu" : "generic path emulation vs cpu");
        }
      }
    }
  }
}

// The tiny GPTQ checkpoints: every quantized linear of layer 0 (and the head where it is quantized) read back from
// the layout equals the format's formula applied to the file's tensors, and takes the GEMV's vector path.
TEST(GptqGpuLayout, TinyCheckpointsReadBackExactly) {
  for (const std::string name : {"tiny-q4-g32", "tiny-q4-g32-act", "tiny-q4-pc-sym", "tiny-q8-g32-act", "tiny-q8-pc",
                                  "tiny-q4-g32-h8"}) {
    const std::string dir = test::data_path("models/" + name);
    const io::Checkpoint ckpt = io::Checkpoint::open_dir(dir);
    io::WeightStore ws(ckpt, dir);
    const std::optional<io::GptqConfig> cfg = io::read_gptq_config(dir);
    ASSERT_TRUE(cfg.has_value()) << name;
    std::vector<std::pair<std::string, io::GptqConfig>> linears;
    for (const char* lin : {"attention.wqkv", "attention.wo", "feed_forward.w1", "feed_forward.w3", "feed_forward.w2"})
      linears.push_back({model::names::plora_base(0, lin), *cfg});
    if (cfg->lm_head) linears.push_back({"output", cfg->head()});
    for (const auto& [base, c] : linears) {
      SCOPED_TRACE(name + " " + base);
      const io::TensorView* qv = ckpt.find(base + ".qweight");
      if (qv == nullptr) qv = ckpt.find(base + ".linear.qweight");
      ASSERT_NE(qv, nullptr);
      const int p = 32 / c.bits;
      const int64_t n = qv->shape[1], k = qv->shape[0] * p;
      const io::GptqLinearViews v = io::get_gptq_linear(ws, base, n, k, c);
      const GptqGpuLayout lay = gptq_gpu_layout(v);
      EXPECT_FALSE(lay.vec_group.empty());
      const std::vector<float> w = gptq_gpu_dequantize(lay);
      // The format, straight from the tensors.
      const int64_t gs = c.group_size == -1 ? k : c.group_size, zw = (n + p - 1) / p;
      const uint32_t mask = (1u << c.bits) - 1u;
      auto i32 = [](const io::TensorView* t, int64_t i) {
        uint32_t u;
        std::memcpy(&u, static_cast<const char*>(t->data) + 4 * i, 4);
        return u;
      };
      int64_t bad = 0;
      for (int64_t r = 0; r < n; ++r)
        for (int64_t i = 0; i < k; ++i) {
          const int64_t g = v.g_idx ? static_cast<int64_t>(i32(v.g_idx, i)) : i / gs;
          const uint32_t q = (i32(v.qweight, (i / p) * n + r) >> ((i % p) * c.bits)) & mask;
          const uint32_t z = ((i32(v.qzeros, g * zw + r / p) >> ((r % p) * c.bits)) & mask) + 1;
          const float want = float_at(v.scales->data, v.scales->dtype, g * n + r) *
                             (static_cast<float>(q) - static_cast<float>(z));
          if (w[static_cast<size_t>(r * k + i)] != want && bad++ == 0)
            ADD_FAILURE() << "weight [" << r << ", " << i << "]: layout gives " << w[static_cast<size_t>(r * k + i)]
                          << ", the format " << want;
        }
      EXPECT_EQ(bad, 0);
    }
  }
}

}  // namespace
}  // namespace xc2
