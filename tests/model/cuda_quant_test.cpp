// The CUDA backend's GPTQ linears (Backend::quant_weight, linear_q) op by op (label `cuda`; every test skips when
// no GPU is present). Oracle: the CPU backend's exact quantized linear (set_exact_quant(true): f32 math on the
// exactly dequantized weights) on the same inputs; the CPU tests (gptq_gpu_layout_test.cpp) tie that path and the
// CUDA layout to the GPTQ format.
//   - f32 activations: rel L2 <= 1e-4 (both are f32 sums of the same exact products, in another order: ~1e-6
//     expected), for m in {1, 2, 3, 16} (the GEMV, vector or generic path) and {17, 40} (dequantize + cuBLASLt),
//     with and without accumulate, bias;
//   - bf16 activations: against the CPU on the bf16-rounded x (and y), rel L2 <= 1e-2 (the output's rounding,
//     and in the prefill path the weights' rounding to bf16: ~3e-3 expected); f16 activations the same way,
//     rel L2 <= 5e-3 (f16 keeps 3 more significand bits: ~5e-4 expected);
//   - the two GPU paths against each other at the same m (XC2_CUDA_GEMV=0 dequantizes for every m);
//   - a decode-sized linear_q recorded in a CUDA graph (act-order: the gathered x lives in the graph's memory)
//     and replayed, against the eager result;
//   - the real decoder shapes (4096, 6144, 14336; group size 128, act-order on w2).
// Tolerances were set without a GPU run (none was available when this was written); tighten from measurements.
#include <gtest/gtest.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "backends/gptq_gpu_layout.h"
#include "model/gptq_test_util.h"
#include "support/backend_test_util.h"
#include "support/op_reference.h"
#include "support/test_util.h"

namespace xc2 {
namespace {

using test::GptqCase;
using Vec = std::vector<float>;

void expect_rel_l2(const Vec& got, const Vec& want, double tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  const test::CompareReport r = test::compare_rel_l2(got.data(), want.data(), static_cast<int64_t>(got.size()), tol);
  EXPECT_TRUE(r.ok) << what << ": " << r.detail;
}

// y0 (+)= x . w^T (+ bias) on `be` with the quantized weight `qw` of `be`.
Vec run_linear_q(Backend& be, const QuantWeight& qw, const Vec& x, const Vec& y0, int64_t m, bool accumulate) {
  Tensor tx = be.from_host_f32(x.data(), {m, qw.k});
  Tensor ty = be.from_host_f32(y0.data(), {m, qw.n});
  be.linear_q(tx, qw, ty, accumulate);
  return test::to_host(be, ty);
}

struct QBackends {
  std::unique_ptr<Backend> cpu, f32, bf16, f16;
};

QBackends make_qbackends() {
  QBackends b;
  // Mapped: the default (Auto) CPU backend drops the pages of the GPTQ tensors it has repacked (MADV_DONTNEED),
  // which for a checkpoint's file mapping only leaves the resident set, but zeroes these tests' heap tensors, which
  // the CUDA backends read next.
  b.cpu = make_cpu_backend(0, CpuWeights::Mapped);
  b.cpu->set_exact_quant(true);
  b.f32 = make_cuda_backend(0, DType::F32);
  b.bf16 = make_cuda_backend(0, DType::BF16);
  b.f16 = make_cuda_backend(0, DType::F16);
  return b;
}

void check_case(QBackends& b, const GptqCase& c, const std::vector<int64_t>& ms, uint32_t seed) {
  auto g = test::make_random_gptq(c, seed);
  const QuantWeight q_cpu = b.cpu->quant_weight(g->views);
  const QuantWeight q_f32 = b.f32->quant_weight(g->views);
  const QuantWeight q_bf16 = b.bf16->quant_weight(g->views);
  const QuantWeight q_f16 = b.f16->quant_weight(g->views);
  const GptqGpuLayout lay = gptq_gpu_layout(g->views);
  EXPECT_EQ(q_f32.bytes, lay.bytes(4)) << c.str();
  EXPECT_EQ(q_bf16.bytes, lay.bytes(2)) << c.str();
  EXPECT_EQ(q_f16.bytes, lay.bytes(2)) << c.str();
  for (int64_t m : ms) {
    for (bool accumulate : {false, true}) {
      SCOPED_TRACE(c.str() + " m=" + std::to_string(m) + (accumulate ? " accumulate" : ""));
      const Vec x = test::random_vec(static_cast<size_t>(m * c.k), seed * 11 + 1);
      const Vec y0 = test::random_vec(static_cast<size_t>(m * c.n), seed * 11 + 2);
      expect_rel_l2(run_linear_q(*b.f32, q_f32, x, y0, m, accumulate),
                    run_linear_q(*b.cpu, q_cpu, x, y0, m, accumulate), 1e-4, "cuda f32 vs cpu exact");
      const Vec xr = test::rounded(x, DType::BF16), yr = test::rounded(y0, DType::BF16);
      expect_rel_l2(run_linear_q(*b.bf16, q_bf16, xr, yr, m, accumulate),
                    run_linear_q(*b.cpu, q_cpu, xr, yr, m, accumulate), 1e-2, "cuda bf16 vs cpu exact");
      const Vec xh = test::rounded(x, DType::F16), yh = test::rounded(y0, DType::F16);
      expect_rel_l2(run_linear_q(*b.f16, q_f16, xh, yh, m, accumulate),
                    run_linear_q(*b.cpu, q_cpu, xh, yh, m, accumulate), 5e-3, "cuda f16 vs cpu exact");
    }
  }
}

const std::vector<GptqCase>& op_cases() {
  //                                   bits  n    k   group act    random sym    bias
  static const std::vector<GptqCase> v = {
      {4, 48, 256, 32, false, false, false, false},
      {4, 37, 256, 32, true, false, false, true},    // act-order, n not a multiple of 8, bias
      {4, 92, 512, -1, false, false, true, false},   // per channel, sym
      {4, 45, 384, -1, true, false, false, true},    // per channel with g_idx (all zeros)
      {8, 40, 256, 32, true, false, true, false},
      {8, 33, 160, -1, false, false, false, true},
      {8, 21, 80, 32, true, false, false, true},     // groups of 32, 32, 16
      // generic GEMV path (no 16-byte vector path in the layout)
      {4, 29, 72, 32, false, false, false, true},    // 9 words per output
      {4, 24, 128, 16, false, false, false, false},  // two groups per 32-value vector
      {4, 30, 256, 32, true, true, false, true},     // uneven random groups
      {8, 17, 64, 8, true, false, true, false},
  };
  return v;
}

TEST(CudaQuantOps, LinearQMatchesCpuExactPath) {
  XC2_SKIP_IF_NO_CUDA();
  QBackends b = make_qbackends();
  uint32_t seed = 1;
  for (const GptqCase& c : op_cases()) check_case(b, c, {1, 2, 3, 16, 17, 40}, seed++);
}

TEST(CudaQuantOps, RealDecoderShapes) {
  XC2_SKIP_IF_NO_CUDA();
  QBackends b = make_qbackends();
  uint32_t seed = 50;
  for (const GptqCase& c : std::vector<GptqCase>{{4, 4096, 4096, 128, false, false, false, false},    // wo
                                                 {4, 6144, 4096, 128, false, false, false, false},    // wqkv
                                                 {4, 4096, 14336, 128, true, false, false, false},    // w2, act-order
                                                 {8, 14336, 4096, 128, false, false, false, false}})  // w1, 8-bit
    check_case(b, c, {1, 8, 17}, seed++);
}

TEST(CudaQuantOps, GemvAndDequantizePathsAgree) {
  XC2_SKIP_IF_NO_CUDA();
  setenv("XC2_CUDA_GEMV", "0", 1);
  auto dq = make_cuda_backend(0, DType::F32);
  unsetenv("XC2_CUDA_GEMV");
  auto gv = make_cuda_backend(0, DType::F32);
  uint32_t seed = 70;
  for (const GptqCase& c : op_cases()) {
    auto g = test::make_random_gptq(c, seed++);
    const QuantWeight q_dq = dq->quant_weight(g->views), q_gv = gv->quant_weight(g->views);
    for (int64_t m : {1, 5, 16}) {
      SCOPED_TRACE(c.str() + " m=" + std::to_string(m));
      const Vec x = test::random_vec(static_cast<size_t>(m * c.k), seed * 3);
      const Vec y0 = test::random_vec(static_cast<size_t>(m * c.n), seed * 3 + 1);
      expect_rel_l2(run_linear_q(*gv, q_gv, x, y0, m, true), run_linear_q(*dq, q_dq, x, y0, m, true), 1e-5,
                    "qgemv vs dequantize + cuBLASLt");
    }
  }
}

TEST(CudaQuantOps, GraphReplayMatchesEager) {
  XC2_SKIP_IF_NO_CUDA();
  auto be = make_cuda_backend(0, DType::BF16);
  ASSERT_TRUE(be->supports_graphs());
  const GptqCase c{4, 256, 512, 128, true, false, false, true};
  auto g = test::make_random_gptq(c, 90);
  const QuantWeight qw = be->quant_weight(g->views);
  const Vec x = test::random_vec(static_cast<size_t>(c.k), 91);
  Tensor tx = be->from_host_f32(x.data(), {1, c.k});
  Tensor eager = be->empty({1, c.n}), replayed = be->empty({1, c.n});
  be->linear_q(tx, qw, eager, false);
  const Vec want = test::to_host(*be, eager);
  be->graph_begin();
  be->linear_q(tx, qw, replayed, false);
  GraphHandle graph = be->graph_end();
  for (int i = 0; i < 3; ++i) be->graph_launch(graph);
  expect_rel_l2(test::to_host(*be, replayed), want, 0.0, "graph replay vs eager");
}

}  // namespace
}  // namespace xc2
