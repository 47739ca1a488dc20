// The CUDA backend op by op (label `cuda`; every test skips when no GPU is present).
// Oracles, per test:
//   - the naive double-precision references of support/op_reference (ref::*), on inputs rounded to the
//     backend dtype;
//   - the CPU backend (f32) on the same inputs, for the f32 mode (tight) and the real sizes;
//   - exact cases: small-integer inputs, where f32 accumulation is exact, compared bit for bit;
//   - bf16 noise floor (design.md §3.4): rms(cuda - ref_f64) <= 2 rms(ref_lowp - ref_f64) + eps, where ref_lowp is
//     the reference with the rounding an ideal bf16 kernel cannot avoid (output, and P for attention).
// Shapes: the tiny-model ones, the real ones (1024, 4096, 14336; 1025 rows) and odd sizes.
// Tolerances were set without a GPU run; tighten them from measurements.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "model/model_test_util.h"
#include "support/backend_test_util.h"
#include "support/op_reference.h"
#include "support/test_util.h"
#include "text/sampler.h"
#include "xc2/error.h"

namespace xc2 {
namespace {

namespace ref = test::ref;
using test::random_vec;
using test::rounded;
using test::to_f32;
using test::to_host;
using test::upload_weight;

using Vec = std::vector<float>;

Vec small_ints(size_t n, uint32_t seed, int lo, int hi) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> u(lo, hi);
  Vec v(n);
  for (float& x : v) x = static_cast<float>(u(gen));
  return v;
}

void expect_rel_l2(const Vec& got, const Vec& want, double tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  const test::CompareReport r = test::compare_rel_l2(got.data(), want.data(), static_cast<int64_t>(got.size()), tol);
  EXPECT_TRUE(r.ok) << what << ": " << r.detail;
}

void expect_bitwise(const Vec& got, const Vec& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i)
    if (std::memcmp(&got[i], &want[i], 4) != 0) {
      ADD_FAILURE() << what << ": first mismatch at " << i << ": got " << got[i] << ", want " << want[i];
      return;
    }
}

// Noise-floor rule for low-precision results.
void expect_noise_floor(const Vec& got, const std::vector<double>& ref64, const Vec& lowp, const std::string& what,
                        double eps = 1e-6) {
  ASSERT_EQ(got.size(), ref64.size()) << what;
  const test::CompareReport r =
      test::compare_noise_floor(got.data(), lowp.data(), ref64.data(), static_cast<int64_t>(got.size()), eps);
  EXPECT_TRUE(r.ok) << what << ": " << r.detail;
}

struct Backends {
  std::unique_ptr<Backend> cpu, f32, bf16;
};

Backends make_backends() {
  Backends b;
  b.cpu = make_cpu_backend(0);
  b.f32 = make_cuda_backend(0, DType::F32);
  b.bf16 = make_cuda_backend(0, DType::BF16);
  return b;
}

// ---- linear ------------------------------------------------------------------------------------------

struct LinearCase {
  int64_t m, n, k;
  bool bias, accumulate;
};

void check_linear(Backends& b, const LinearCase& c, uint32_t seed) {
  SCOPED_TRACE("m=" + std::to_string(c.m) + " n=" + std::to_string(c.n) + " k=" + std::to_string(c.k) +
               (c.bias ? " bias" : "") + (c.accumulate ? " accumulate" : ""));
  const float ws = 1.0f / std::sqrt(static_cast<float>(c.k));
  const Vec x = random_vec(static_cast<size_t>(c.m * c.k), seed), w = random_vec(static_cast<size_t>(c.n * c.k), seed + 1, ws);
  const Vec bias = random_vec(static_cast<size_t>(c.n), seed + 2), y0 = random_vec(static_cast<size_t>(c.m * c.n), seed + 3);
  auto run = [&](Backend& be) {
    Tensor tx = be.from_host_f32(x.data(), {c.m, c.k});
    Tensor tw = upload_weight(be, w, {c.n, c.k});
    Tensor tb = upload_weight(be, bias, {c.n});
    Tensor ty = be.from_host_f32(y0.data(), {c.m, c.n});
    be.linear(tx, tw, c.bias ? &tb : nullptr, ty, c.accumulate);
    return to_host(be, ty);
  };
  // f32 mode against the CPU backend (both f32 accumulation, different order).
  expect_rel_l2(run(*b.f32), run(*b.cpu), 1e-5, "cuda f32 vs cpu");
  // bf16 against the f64 reference on the bf16-rounded inputs, with the noise-floor rule.
  const Vec xr = rounded(x, DType::BF16), wr = rounded(w, DType::BF16), br = rounded(bias, DType::BF16),
            yr = rounded(y0, DType::BF16);
  const std::vector<double> ref = ref::linear(xr.data(), wr.data(), c.bias ? br.data() : nullptr,
                                                c.accumulate ? yr.data() : nullptr, c.m, c.n, c.k);
  expect_noise_floor(run(*b.bf16), ref, rounded(to_f32(ref), DType::BF16), "cuda bf16");
}

TEST(CudaOps, LinearTinyAndOddShapes) {
  XC2_SKIP_IF_NO_CUDA();
  Backends b = make_backends();
  uint32_t seed = 10;
  for (const LinearCase& c : std::vector<LinearCase>{{1, 7, 33, false, false}, {7, 33, 127, true, false},
                                                      {33, 129, 65, false, true}, {127, 320, 256, true, true},
                                                      {3, 1000, 8, false, true}, {5, 37, 1025, true, false}})
    check_linear(b, c, seed += 7);
}

// The plain tiled kernel (the fallback for shapes cuBLASLt has no algorithm for), forced for every linear.
TEST(CudaOps, LinearSimpleKernelMatchesReference) {
  XC2_SKIP_IF_NO_CUDA();
  setenv("XC2_CUDA_GEMM", "simple", 1);
  Backends b = make_backends();
  unsetenv("XC2_CUDA_GEMM");
  uint32_t seed = 40;
  for (const LinearCase& c : std::vector<LinearCase>{{1, 7, 33, false, false}, {7, 33, 127, true, false},
                                                      {33, 129, 65, false, true}, {127, 320, 256, true, true},
                                                      {5, 37, 1025, true, false}, {300, 1024, 1024, true, true}})
    check_linear(b, c, seed += 7);
}

TEST(CudaOps, LinearRealShapes) {
  XC2_SKIP_IF_NO_CUDA();
  Backends b = make_backends();
  uint32_t seed = 100;
  for (const LinearCase& c : std::vector<LinearCase>{{1, 4096, 4096, false, false},    // decode wo (GEMV)
                                                      {2, 6144, 4096, false, false},    // wqkv, two rows
                                                      {1, 4096, 14336, false, false},   // decode w2
                                                      {8, 14336, 4096, false, false},   // GEMV at its row limit
                                                      {9, 1024, 4096, true, false},     // just past the GEMV
                                                      {1025, 1024, 1024, true, false},  // ViT q_proj (1025 rows)
                                                      {1025, 4096, 1024, true, false},  // ViT fc1
                                                      {1225, 256, 4096, false, false},  // Plora_A
                                                      {1225, 4096, 256, false, true}})  // Plora_B, beta = 1
    check_linear(b, c, seed += 7);
}

TEST(CudaOps, LinearSmallIntegersAreExact) {
  XC2_SKIP_IF_NO_CUDA();
  Backends b = make_backends();
  // f32: |sums| <= 2 * 2 * 4096 are exact in f32; bf16: values in {-1, 0, 1}, k <= 64, |sum| <= 64 + 64 exact.
  for (const auto& [be, m, n, k, lo, hi] :
       std::vector<std::tuple<Backend*, int64_t, int64_t, int64_t, int, int>>{{b.f32.get(), 1, 4096, 4096, -2, 2},
                                                                              {b.f32.get(), 33, 515, 4096, -2, 2},
                                                                              {b.bf16.get(), 1, 1024, 64, -1, 1},
                                                                              {b.bf16.get(), 65, 333, 64, -1, 1}}) {
    SCOPED_TRACE(std::string(dtype_name(be->act_dtype())) + " m=" + std::to_string(m) + " k=" + std::to_string(k));
    const Vec x = small_ints(static_cast<size_t>(m * k), 1, lo, hi), w = small_ints(static_cast<size_t>(n * k), 2, lo, hi);
    const Vec y0 = small_ints(static_cast<size_t>(m * n), 3, -50, 50);
    Tensor tx = be->from_host_f32(x.data(), {m, k});
    Tensor tw = upload_weight(*be, w, {n, k});
    Tensor ty = be->from_host_f32(y0.data(), {m, n});
    be->linear(tx, tw, nullptr, ty, true);
    expect_bitwise(to_host(*be, ty), to_f32(ref::linear(x.data(), w.data(), nullptr, y0.data(), m, n, k)),
                   "small-integer linear");
  }
}

TEST(CudaOps, LinearCublasLtPathForFewRows) {
  XC2_SKIP_IF_NO_CUDA();
  // The same decode shapes with the GEMV turned off: cuBLASLt must give the same numbers within f32 noise.
  setenv("XC2_CUDA_GEMV", "0", 1);
  auto lt = make_cuda_backend(0, DType::F32);
  unsetenv("XC2_CUDA_GEMV");
  auto gv = make_cuda_backend(0, DType::F32);
  const int64_t m = 3, n = 4096, k = 4096;
  const Vec x = random_vec(static_cast<size_t>(m * k), 5), w = random_vec(static_cast<size_t>(n * k), 6, 0.02f);
  auto run = [&](Backend& be) {
    Tensor tx = be.from_host_f32(x.data(), {m, k});
    Tensor tw = upload_weight(be, w, {n, k});
    Tensor ty = be.empty({m, n});
    be.linear(tx, tw, nullptr, ty, false);
    return to_host(be, ty);
  };
  expect_rel_l2(run(*lt), run(*gv), 1e-5, "cuBLASLt vs GEMV");
}

// ---- norms and pointwise ------------------------------------------------------------------------------

TEST(CudaOps, NormsMatchCpu) {
  XC2_SKIP_IF_NO_CUDA();
  Backends b = make_backends();
  for (const auto& [rows, dim] : std::vector<std::pair<int64_t, int64_t>>{{1, 64}, {7, 127}, {33, 1024}, {1025, 1024},
                                                                          {3, 4096}, {2, 14336}}) {
    SCOPED_TRACE("rows=" + std::to_string(rows) + " dim=" + std::to_string(dim));
    const Vec x = random_vec(static_cast<size_t>(rows * dim), 20, 3.0f), w = random_vec(static_cast<size_t>(dim), 21);
    const Vec bias = random_vec(static_cast<size_t>(dim), 22);
    auto run = [&](Backend& be, bool layer) {
      Tensor tx = be.from_host_f32(x.data(), {rows, dim});
      Tensor tw = upload_weight(be, w, {dim}), tb = upload_weight(be, bias, {dim});
      if (layer) be.layer_norm(tx, tw, tb, 1e-5f, tx);  // in place, as the ViT calls it
      else be.rms_norm(tx, tw, 1e-5f, tx);
      return to_host(be, tx);
    };
    for (bool layer : {false, true}) {
      const Vec cpu = run(*b.cpu, layer);
      expect_rel_l2(run(*b.f32, layer), cpu, 2e-6, layer ? "layer_norm f32" : "rms_norm f32");
      expect_rel_l2(run(*b.bf16, layer), cpu, 1e-2, layer ? "layer_norm bf16" : "rms_norm bf16");
    }
  }
}

TEST(CudaOps, PointwiseMatchCpu) {
  XC2_SKIP_IF_NO_CUDA();
  Backends b = make_backends();
  for (int64_t n : {int64_t{1}, int64_t{1000}, int64_t{1025} * 4096}) {
    SCOPED_TRACE("n=" + std::to_string(n));
    const Vec a = random_vec(static_cast<size_t>(n), 30, 6.0f), c = random_vec(static_cast<size_t>(n), 31, 6.0f);
    auto run = [&](Backend& be, int op) {
      Tensor ta = be.from_host_f32(a.data(), {n}), tc = be.from_host_f32(c.data(), {n});
      switch (op) {
        case 0: be.add(ta, tc, ta); break;
        case 1: be.scale(ta, 0.125f); break;
        case 2: be.silu_mul(ta, tc, tc); break;
        case 3: be.gelu_erf(ta); break;
        case 4: be.quick_gelu(ta); break;
      }
      return to_host(be, op == 2 ? tc : ta);
    };
    const char* names[] = {"add", "scale", "silu_mul", "gelu_erf", "quick_gelu"};
    for (int op = 0; op < 5; ++op) {
      const Vec cpu = run(*b.cpu, op);
      expect_rel_l2(run(*b.f32, op), cpu, 1e-6, std::string(names[op]) + " f32");
      expect_rel_l2(run(*b.bf16, op), cpu, 1e-2, std::string(names[op]) + " bf16");
    }
  }
}

// ---- gathers and re-layouts (exact) ---------------------------------------------------------------------

TEST(CudaOps, EmbeddingIm2colSplitQkvAreExact) {
  XC2_SKIP_IF_NO_CUDA();
  Backends b = make_backends();
  for (Backend* be : {b.f32.get(), b.bf16.get()}) {
    SCOPED_TRACE(dtype_name(be->act_dtype()));
    const DType dt = be->act_dtype();
    // embedding: [vocab 1000, dim 96]
    const Vec table = rounded(random_vec(1000 * 96, 40), dt);
    const std::vector<int32_t> ids = {0, 999, 5, 5, 123, 1};
    Tensor tt = upload_weight(*be, table, {1000, 96}), ty = be->empty({6, 96});
    be->embedding(tt, TokenIds::of(ids), ty);
    expect_bitwise(to_host(*be, ty), to_f32(ref::embedding(table.data(), 96, ids)), "embedding");
    // im2col: 2 images of 3 x 28 x 28, patch 14
    const Vec px = rounded(random_vec(2 * 3 * 28 * 28, 41), dt);
    Tensor tp = be->from_host_f32(px.data(), {2, 3, 28, 28}), tc = be->empty({8, 3 * 14 * 14});
    be->im2col_patches(tp, 14, tc);
    auto cpu = make_cpu_backend(1);
    Tensor cp = cpu->from_host_f32(px.data(), {2, 3, 28, 28}), cc = cpu->empty({8, 3 * 14 * 14});
    cpu->im2col_patches(cp, 14, cc);
    expect_bitwise(to_host(*be, tc), to_host(*cpu, cc), "im2col");
    // split_qkv: 5 tokens, 4 heads over 2 KV heads, head_dim 64, k and v written into cache rows 3..7
    const int64_t T = 5, H = 4, Hk = 2, d = 64, row = (H + 2 * Hk) * d;
    const Vec qkv = rounded(random_vec(static_cast<size_t>(T * row), 42), dt);
    auto split = [&](Backend& bk) {
      Tensor tq = bk.from_host_f32(qkv.data(), {T, row}), q = bk.empty({T, H, d});
      Tensor kc = bk.empty({10, Hk, d}), vc = bk.empty({10, Hk, d});
      Tensor k = kc.rows(3, T), v = vc.rows(3, T);
      bk.split_qkv(tq, H, Hk, d, q, kc, vc, Positions::at(3));
      Vec out = to_host(bk, q), hk = to_host(bk, k), hv = to_host(bk, v);
      out.insert(out.end(), hk.begin(), hk.end());
      out.insert(out.end(), hv.begin(), hv.end());
      return out;
    };
    expect_bitwise(split(*be), split(*cpu), "split_qkv");
  }
}

// ---- RoPE ----------------------------------------------------------------------------------------------

TEST(CudaOps, RopeMatchesCpu) {
  XC2_SKIP_IF_NO_CUDA();
  Backends b = make_backends();
  for (const auto& [T, H, d, pos0, theta] : std::vector<std::tuple<int64_t, int64_t, int64_t, int64_t, double>>{
           {1, 32, 128, 1299, 1e6}, {1290, 8, 128, 0, 1e6}, {33, 4, 64, 17, 1e4}, {7, 2, 128, 5000, 1e6}}) {
    SCOPED_TRACE("T=" + std::to_string(T) + " d=" + std::to_string(d) + " pos0=" + std::to_string(pos0));
    const Vec x = random_vec(static_cast<size_t>(T * H * d), 50, 2.0f);
    auto run = [&](Backend& be) {
      Tensor t = be.from_host_f32(x.data(), {T, H, d});
      be.rope(t, T, H, d, Positions::at(pos0), false, theta);
      return to_host(be, t);
    };
    const Vec cpu = run(*b.cpu);
    expect_rel_l2(run(*b.f32), cpu, 1e-6, "rope f32");
    expect_rel_l2(run(*b.bf16), cpu, 1e-2, "rope bf16");
  }
}

// A RoPE table is built on the first rope() call with a new theta, possibly into a block that queued work
// just released: the upload must wait for that work, and the work must not see the table. Then more thetas
// than the backend keeps tables for (dynamic NTK, one per sequence in a batch), each checked against the CPU.
TEST(CudaOps, RopeTablesFollowQueuedWorkAndManyThetas) {
  XC2_SKIP_IF_NO_CUDA();
  auto be = make_cuda_backend(0, DType::F32);
  auto cpu = make_cpu_backend(1);
  const int64_t n = 4096 * 64;  // the bytes of one 4096-position table for head_dim 128
  const Vec a = random_vec(static_cast<size_t>(n), 60);
  Tensor dst = be->from_host_f32(Vec(static_cast<size_t>(n), 0.0f).data(), {n});
  Vec want(static_cast<size_t>(n), 0.0f);
  {
    Tensor src = be->from_host_f32(a.data(), {n});
    for (int r = 0; r < 200; ++r) be->add(dst, src, dst);  // queued; src is released before it has run
  }
  for (int r = 0; r < 200; ++r)
    for (size_t i = 0; i < want.size(); ++i) want[i] += a[i];
  const int64_t H = 4, d = 128, T = 3;
  const Vec x = random_vec(static_cast<size_t>(T * H * d), 61, 2.0f);
  auto rope = [&](Backend& b, int64_t pos0, double theta) {
    Tensor t = b.from_host_f32(x.data(), {T, H, d});
    b.rope(t, T, H, d, Positions::at(pos0), false, theta);
    return to_host(b, t);
  };
  expect_rel_l2(rope(*be, 1000, 1e6), rope(*cpu, 1000, 1e6), 1e-6, "rope after queued work");
  expect_bitwise(to_host(*be, dst), want, "queued adds next to the table upload");
  for (int round = 0; round < 2; ++round)
    for (int j = 0; j < 12; ++j) {
      const double theta = 1e6 * (1.0 + 0.125 * j);
      const int64_t pos0 = 33000 + 7 * j + round;
      SCOPED_TRACE("theta " + std::to_string(theta) + " round " + std::to_string(round));
      expect_rel_l2(rope(*be, pos0, theta), rope(*cpu, pos0, theta), 1e-6, "rope with another theta");
    }
}

// ---- attention -----------------------------------------------------------------------------------------

struct AttnCase {
  int64_t n_q, n_kv, H, Hk, d, q_pos0;
  bool causal;
};

std::string attn_name(const AttnCase& c) {
  return "n_q=" + std::to_string(c.n_q) + " n_kv=" + std::to_string(c.n_kv) + " H=" + std::to_string(c.H) + "/" +
         std::to_string(c.Hk) + " d=" + std::to_string(c.d) + " pos0=" + std::to_string(c.q_pos0) +
         (c.causal ? " causal" : "");
}

Vec run_attention(Backend& be, const AttnCase& c, const Vec& q, const Vec& k, const Vec& v, float scale) {
  Tensor tq = be.from_host_f32(q.data(), {c.n_q, c.H, c.d});
  Tensor tk = be.from_host_f32(k.data(), {c.n_kv, c.Hk, c.d});
  Tensor tv = be.from_host_f32(v.data(), {c.n_kv, c.Hk, c.d});
  Tensor out = be.empty({c.n_q, c.H * c.d});
  test::attention(be, tq, tk, tv, c.n_kv, c.H, c.Hk, c.d, Positions::at(c.q_pos0), c.causal, scale, out);
  return to_host(be, out);
}

TEST(CudaOps, AttentionAgainstReference) {
  XC2_SKIP_IF_NO_CUDA();
  Backends b = make_backends();
  setenv("XC2_CUDA_FLASH", "0", 1);  // a second bf16 backend on the split-KV kernel only
  auto split_only = make_cuda_backend(0, DType::BF16);
  unsetenv("XC2_CUDA_FLASH");
  for (const AttnCase& c : std::vector<AttnCase>{{1, 1, 2, 1, 128, 0, true},      // first decode step
                                                 {1, 300, 4, 1, 128, 299, true},  // decode, tiny-a grouping
                                                 {17, 17, 2, 2, 64, 0, false},    // tiny ViT
                                                 {33, 50, 4, 2, 64, 17, true},    // prefill after a past
                                                 {70, 70, 4, 2, 64, 0, true},     // two q tiles, odd
                                                 {130, 130, 8, 2, 128, 0, true},
                                                 {200, 200, 2, 2, 64, 0, false}}) {
    SCOPED_TRACE(attn_name(c));
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.d));
    const Vec q = rounded(random_vec(static_cast<size_t>(c.n_q * c.H * c.d), 60, 2.0f), DType::BF16);
    const Vec k = rounded(random_vec(static_cast<size_t>(c.n_kv * c.Hk * c.d), 61, 2.0f), DType::BF16);
    const Vec v = rounded(random_vec(static_cast<size_t>(c.n_kv * c.Hk * c.d), 62), DType::BF16);
    const std::vector<double> ref = ref::attention(q.data(), k.data(), v.data(), c.n_q, c.n_kv, c.H, c.Hk, c.d,
                                                   c.q_pos0, c.causal, scale);
    const Vec lowp = rounded(to_f32(ref::attention(q.data(), k.data(), v.data(), c.n_q, c.n_kv, c.H, c.Hk, c.d,
                                                   c.q_pos0, c.causal, scale, DType::BF16)),
                             DType::BF16);
    expect_rel_l2(run_attention(*b.f32, c, q, k, v, scale), to_f32(ref), 1e-5, "cuda f32 vs f64 reference");
    expect_rel_l2(run_attention(*b.cpu, c, q, k, v, scale), to_f32(ref), 1e-5, "cpu vs f64 reference");
    expect_noise_floor(run_attention(*b.bf16, c, q, k, v, scale), ref, lowp, "cuda bf16 (tensor cores when n_q >= 16)");
    expect_noise_floor(run_attention(*split_only, c, q, k, v, scale), ref, lowp, "cuda bf16 split-KV");
  }
}

TEST(CudaOps, AttentionRealShapesMatchCpu) {
  XC2_SKIP_IF_NO_CUDA();
  Backends b = make_backends();
  for (const AttnCase& c : std::vector<AttnCase>{{1290, 1290, 32, 8, 128, 0, true},    // one-image prefill
                                                 {1, 1300, 32, 8, 128, 1299, true},    // decode
                                                 {1226, 1226, 16, 16, 64, 0, false}})  // ViT-L/14 at 490 px
  {
    SCOPED_TRACE(attn_name(c));
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.d));
    const Vec q = rounded(random_vec(static_cast<size_t>(c.n_q * c.H * c.d), 70, 2.0f), DType::BF16);
    const Vec k = rounded(random_vec(static_cast<size_t>(c.n_kv * c.Hk * c.d), 71, 2.0f), DType::BF16);
    const Vec v = rounded(random_vec(static_cast<size_t>(c.n_kv * c.Hk * c.d), 72), DType::BF16);
    const Vec cpu = run_attention(*b.cpu, c, q, k, v, scale);
    expect_rel_l2(run_attention(*b.f32, c, q, k, v, scale), cpu, 1e-5, "cuda f32 vs cpu");
    expect_rel_l2(run_attention(*b.bf16, c, q, k, v, scale), cpu, 1e-2, "cuda bf16 vs cpu");
  }
}

// ---- device-resident decode ops and graphs -------------------------------------------------------------

TEST(CudaOps, DeviceDecodeOpsMatchHostPositionOps) {
  XC2_SKIP_IF_NO_CUDA();
  auto be = make_cuda_backend(0, DType::F32);
  const int64_t H = 4, Hk = 2, d = 128, cap = 64, pos = 37, row = (H + 2 * Hk) * d;
  const double theta = 1e6;
  const Vec qkv = random_vec(static_cast<size_t>(row), 80);
  const Vec past = random_vec(static_cast<size_t>(cap * Hk * d), 81);
  IntBuffer p = be->ints(1);
  be->write_ints(p, {static_cast<int32_t>(pos)});
  auto run = [&](bool at) {
    Tensor tq = be->from_host_f32(qkv.data(), {1, row}), q = be->empty({1, H, d});
    Tensor kc = be->from_host_f32(past.data(), {cap, Hk, d}), vc = be->from_host_f32(past.data(), {cap, Hk, d});
    Tensor out = be->empty({1, H * d});
    const float scale = 1.0f / std::sqrt(static_cast<float>(d));
    const Positions at_pos = at ? Positions::in(p, cap) : Positions::at(pos);
    be->split_qkv(tq, H, Hk, d, q, kc, vc, at_pos);
    be->rope(q, 1, H, d, at_pos, false, theta);
    be->rope(kc, 1, Hk, d, at_pos, true, theta);
    test::attention(*be, q, kc, vc, pos + 1, H, Hk, d, at_pos, true, scale, out);
    Vec r = to_host(*be, q), kr = to_host(*be, kc), o = to_host(*be, out);
    return std::vector<Vec>{r, kr, o};
  };
  const std::vector<Vec> a = run(true), h = run(false);
  expect_bitwise(a[0], h[0], "q after split + rope");
  expect_bitwise(a[1], h[1], "k cache after split + rope");
  expect_rel_l2(a[2], h[2], 1e-6, "attention (split counts may differ)");

  // embedding from ids on the device
  const Vec table = random_vec(50 * 32, 82);
  Tensor tt = upload_weight(*be, table, {50, 32}), y1 = be->empty({2, 32}), y2 = be->empty({2, 32});
  IntBuffer ids = be->ints(2);
  be->write_ints(ids, {49, 3});
  be->embedding(tt, TokenIds::in(ids, 2), y1);
  const std::vector<int32_t> host_ids = {49, 3};
  be->embedding(tt, TokenIds::of(host_ids), y2);
  expect_bitwise(to_host(*be, y1), to_host(*be, y2), "embedding of device ids");
}

TEST(CudaOps, TokenSelectionMatchesHostSampler) {
  XC2_SKIP_IF_NO_CUDA();
  for (DType dt : {DType::F32, DType::BF16}) {
    SCOPED_TRACE(dtype_name(dt));
    auto be = make_cuda_backend(0, dt);
    const int64_t V = 92544;
    Vec logits = rounded(random_vec(static_cast<size_t>(V), 90, 8.0f), dt);
    logits[777] = logits[778] = 20.0f;  // a tie at the top: the lower id wins
    logits[5] = 25.0f;                  // the max, but penalised below 20 (seen)
    const std::vector<int32_t> history = {5, 100, 100, 90000};
    Tensor tl = be->from_host_f32(logits.data(), {1, V});
    IntBuffer seen = be->ints(V), tok = be->ints(1);
    std::vector<int32_t> mask(static_cast<size_t>(V), 0);
    for (int32_t id : history) mask[static_cast<size_t>(id)] = 1;
    be->write_ints(seen, mask);
    const float penalty = 1.3f;
    be->select_greedy(tl, seen, penalty, tok);
    text::SamplingParams greedy;
    greedy.do_sample = false;
    greedy.repetition_penalty = penalty;
    text::Sampler s(1);
    Vec row = logits;
    EXPECT_EQ(be->read_ints(tok, 1)[0], s.next(row, history, greedy));

    for (int top_k : {1, 50, 1000}) {
      SCOPED_TRACE(top_k);
      const int cap = 1024;
      IntBuffer out = be->ints(1 + 2 * cap);
      be->select_candidates(tl, seen, penalty, 0.7f, top_k, out);
      const std::vector<int32_t> v = be->read_ints(out, 1 + 2 * cap);
      // Host: the same penalty and temperature, then every value >= the k-th largest.
      Vec w = logits;
      text::apply_repetition_penalty(w, history, penalty);
      for (float& l : w) l /= 0.7f;
      Vec sorted = w;
      std::nth_element(sorted.begin(), sorted.begin() + (top_k - 1), sorted.end(), std::greater<float>());
      const float kth = sorted[static_cast<size_t>(top_k - 1)];
      std::vector<std::pair<int32_t, float>> want, got;
      for (int64_t i = 0; i < V; ++i)
        if (w[static_cast<size_t>(i)] >= kth) want.push_back({static_cast<int32_t>(i), w[static_cast<size_t>(i)]});
      ASSERT_EQ(v[0], static_cast<int32_t>(want.size()));
      for (int32_t i = 0; i < v[0]; ++i) {
        float f;
        std::memcpy(&f, &v[static_cast<size_t>(1 + cap + i)], 4);
        got.push_back({v[static_cast<size_t>(1 + i)], f});
      }
      std::sort(got.begin(), got.end());
      EXPECT_EQ(got, want);
    }
  }
}

TEST(CudaOps, GraphReplaysWithDeviceState) {
  XC2_SKIP_IF_NO_CUDA();
  auto be = make_cuda_backend(0, DType::F32);
  ASSERT_TRUE(be->supports_graphs());
  const Vec table = random_vec(10 * 8, 95);
  Tensor tt = upload_weight(*be, table, {10, 8});
  Tensor acc = be->from_host_f32(Vec(8, 0.0f).data(), {1, 8});
  IntBuffer id = be->ints(1);
  be->write_ints(id, {2});
  be->graph_begin();
  {
    Tensor row = be->empty({1, 8});  // allocated while capturing: must stay valid for replays
    be->embedding(tt, TokenIds::in(id, 1), row);
    be->add(acc, row, acc);
    be->add_to(id, 3);
  }
  GraphHandle g = be->graph_end();
  for (int i = 0; i < 3; ++i) be->graph_launch(g);  // rows 2, 5, 8
  Vec want(8, 0.0f);
  for (int r : {2, 5, 8})
    for (int j = 0; j < 8; ++j) want[static_cast<size_t>(j)] += table[static_cast<size_t>(r * 8 + j)];
  expect_rel_l2(to_host(*be, acc), want, 1e-7, "three replays");
  EXPECT_EQ(be->read_ints(id, 1)[0], 11);
}

TEST(CudaOps, ErrorsAreCudaErrors) {
  XC2_SKIP_IF_NO_CUDA();
  try {
    make_cuda_backend(999, DType::BF16);
    ADD_FAILURE() << "no error for device 999";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Cuda) << e.what();
  }
  auto be = make_cuda_backend(0, DType::BF16);
  Tensor q = be->empty({1, 2, 96}), out = be->empty({1, 192});
  EXPECT_THROW(test::attention(*be, q, q, q, 1, 2, 2, 96, Positions::at(0), true, 1.0f, out), Error);  // head_dim 96: not supported
}

}  // namespace
}  // namespace xc2
