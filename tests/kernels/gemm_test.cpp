// kernels::cpu::gemm against a naive reference.
// Oracle: test::ref::linear (support/op_reference) — naive, single-threaded, double accumulation; ref_gemm
// below only moves strided rows in and out of it.
//   Exact cases: small-integer x, w, bias and y (exact in f32, f16 and bf16, every partial sum < 2^24),
//     so every path must match the reference bit for bit: all weight dtypes, every ISA this CPU has
//     (scalar / avx2 / avx512 forced), both paths (rows, packed) at every m, default and tiny block sizes,
//     bias of every dtype, accumulate, strides wider than the rows (padding filled with NaN, which must
//     not leak in) and y padding that must stay untouched.
//   Tolerance cases: random normal data, relative L2 <= 1e-6 against the double reference.
//   Determinism: 1, 2 and 3 threads (even or learned uneven splits) give identical bits; a row's result does not
//   depend on m within a path.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/half.h"
#include "core/thread_pool.h"
#include "cpu/gemm.h"
#include "support/op_reference.h"
#include "support/test_util.h"
#include "xc2/error.h"

namespace xc2 {
namespace {

using kernels::cpu::gemm;
using kernels::cpu::GemmArgs;
using kernels::cpu::GemmIsa;
using kernels::cpu::GemmOptions;
using kernels::cpu::GemmPath;

// A [rows, cols] matrix in a dtype with row stride ld >= cols; padding holds NaN.
struct Mat {
  DType dtype = DType::F32;
  int64_t rows = 0, cols = 0, ld = 0;
  std::vector<uint16_t> h;  // f16 / bf16 storage
  std::vector<float> f;     // f32 storage
  std::vector<float> vals;  // exact widened values, [rows, cols] dense

  const void* data() const { return dtype == DType::F32 ? static_cast<const void*>(f.data()) : h.data(); }
};

uint16_t to_half(DType dt, float v) { return dt == DType::F16 ? f32_to_f16(v) : f32_to_bf16(v); }
float from_half(DType dt, uint16_t v) { return dt == DType::F16 ? f16_to_f32(v) : bf16_to_f32(v); }

template <typename Gen>
Mat make_mat(DType dt, int64_t rows, int64_t cols, int64_t ld, Gen&& gen) {
  Mat m;
  m.dtype = dt;
  m.rows = rows;
  m.cols = cols;
  m.ld = ld;
  const size_t total = static_cast<size_t>(rows > 0 ? (rows - 1) * ld + cols : 0);
  m.vals.resize(static_cast<size_t>(rows * cols));
  if (dt == DType::F32) {
    m.f.assign(total + 1, std::numeric_limits<float>::quiet_NaN());
  } else {
    m.h.assign(total + 1, to_half(dt, std::numeric_limits<float>::quiet_NaN()));
  }
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const float v = gen();
      const size_t idx = static_cast<size_t>(r * ld + c);
      float exact;
      if (dt == DType::F32) {
        m.f[idx] = v;
        exact = v;
      } else {
        m.h[idx] = to_half(dt, v);
        exact = from_half(dt, m.h[idx]);
      }
      m.vals[static_cast<size_t>(r * cols + c)] = exact;
    }
  }
  return m;
}

// y_ref[i, j] = (accumulate ? y[i, j] : 0) + sum_k x[i, k] * w[j, k] + bias[j] (test::ref::linear, in double);
// y's padding (columns n .. ldy) is kept.
void ref_gemm(const Mat& x, const Mat& w, const Mat* bias, bool accumulate, const std::vector<float>& y_in,
              int64_t ldy, std::vector<float>* y_out) {
  *y_out = y_in;
  const int64_t m = x.rows, n = w.rows, k = x.cols;
  std::vector<float> y0(static_cast<size_t>(m * n));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) y0[static_cast<size_t>(i * n + j)] = y_in[static_cast<size_t>(i * ldy + j)];
  const std::vector<double> y = test::ref::linear(x.vals.data(), w.vals.data(), bias ? bias->vals.data() : nullptr,
                                                  accumulate ? y0.data() : nullptr, m, n, k);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j)
      (*y_out)[static_cast<size_t>(i * ldy + j)] = static_cast<float>(y[static_cast<size_t>(i * n + j)]);
}

GemmArgs make_args(const Mat& x, const Mat& w, const Mat* bias, float* y, int64_t ldy, bool accumulate) {
  GemmArgs a;
  a.x = x.f.data();
  a.ldx = x.ld;
  a.w = w.data();
  a.w_dtype = w.dtype;
  a.ldw = w.ld;
  if (bias) {
    a.bias = bias->data();
    a.bias_dtype = bias->dtype;
  }
  a.y = y;
  a.ldy = ldy;
  a.m = x.rows;
  a.n = w.rows;
  a.k = x.cols;
  a.accumulate = accumulate;
  return a;
}

std::vector<GemmIsa> available_isas() {
  std::vector<GemmIsa> out;
  for (GemmIsa isa : {GemmIsa::Scalar, GemmIsa::Avx2, GemmIsa::Avx512})
    if (kernels::cpu::gemm_isa_supported(isa)) out.push_back(isa);
  return out;
}

std::string bits_mismatch(const std::vector<float>& got, const std::vector<float>& want) {
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::memcmp(&got[i], &want[i], sizeof(float)) != 0)
      return "first mismatch at flat index " + std::to_string(i) + ": got " + std::to_string(got[i]) + " want " +
             std::to_string(want[i]);
  }
  return "";
}

ThreadPool& pool2() {
  static ThreadPool pool(2);
  return pool;
}

class GemmExact : public ::testing::TestWithParam<DType> {};

TEST_P(GemmExact, SmallIntegersBitExactEveryIsaPathAndShape) {
  const DType dt = GetParam();
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int> small(-8, 8);
  auto gen = [&] { return static_cast<float>(small(rng)); };
  const int64_t ms[] = {1, 2, 3, 5, 7, 16, 33, 127};
  const std::pair<int64_t, int64_t> nks[] = {{1, 1},   {3, 17},  {17, 3},  {63, 65},  {65, 63},
                                             {257, 31}, {31, 257}, {33, 129}, {129, 600}};
  const auto isas = available_isas();
  // Tiny blocks force several k blocks, n blocks and m panels (and their tails) on small shapes.
  GemmOptions tiny;
  tiny.kc = 40;
  tiny.mc = 1;  // rounded up to one micro-tile
  tiny.nc = 1;
  int variant_counter = 0;
  for (const auto& [n, k] : nks) {
    for (int64_t m : ms) {
      const int variant = variant_counter++ % 4;
      const bool accumulate = variant & 1;
      const bool strided = variant >= 2;
      const DType bias_dt = variant == 0 ? DType::F32 : (variant == 1 ? dt : DType::BF16);
      const bool with_bias = variant != 3;
      const int64_t ldx = strided ? k + 3 : k, ldw = strided ? k + 5 : k, ldy = strided ? n + 7 : n;
      const Mat x = make_mat(DType::F32, m, k, ldx, gen);
      const Mat w = make_mat(dt, n, k, ldw, gen);
      const Mat bias = make_mat(bias_dt, 1, n, n, gen);
      std::vector<float> y0(static_cast<size_t>(m * ldy), 12345.0f);  // padding sentinel
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) y0[static_cast<size_t>(i * ldy + j)] = gen();
      std::vector<float> want;
      ref_gemm(x, w, with_bias ? &bias : nullptr, accumulate, y0, ldy, &want);
      for (GemmIsa isa : isas) {
        for (GemmPath path : {GemmPath::Rows, GemmPath::Packed, GemmPath::Auto}) {
          for (int blocks = 0; blocks < (path == GemmPath::Packed ? 2 : 1); ++blocks) {
            GemmOptions opts = blocks ? tiny : GemmOptions{};
            opts.isa = isa;
            opts.path = path;
            std::vector<float> y = y0;
            gemm(make_args(x, w, with_bias ? &bias : nullptr, y.data(), ldy, accumulate), pool2(), opts);
            const std::string err = bits_mismatch(y, want);
            ASSERT_TRUE(err.empty()) << "isa=" << kernels::cpu::gemm_isa_name(isa) << " path=" << int(path)
                                     << " tiny_blocks=" << blocks << " m=" << m << " n=" << n << " k=" << k
                                     << " variant=" << variant << ": " << err;
          }
        }
      }
    }
  }
}

TEST_P(GemmExact, KZeroGivesBiasOrLeavesY) {
  const DType dt = GetParam();
  auto gen = [] { return 3.0f; };
  const Mat x = make_mat(DType::F32, 3, 0, 0, gen);
  const Mat w = make_mat(dt, 5, 0, 0, gen);
  const Mat bias = make_mat(dt, 1, 5, 5, gen);
  for (bool accumulate : {false, true}) {
    for (bool with_bias : {false, true}) {
      std::vector<float> y(15, 2.0f), want;
      ref_gemm(x, w, with_bias ? &bias : nullptr, accumulate, y, 5, &want);
      gemm(make_args(x, w, with_bias ? &bias : nullptr, y.data(), 5, accumulate), pool2());
      EXPECT_EQ(bits_mismatch(y, want), "") << "accumulate=" << accumulate << " bias=" << with_bias;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Cpu, GemmExact, ::testing::Values(DType::F32, DType::F16, DType::BF16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

class GemmRandom : public ::testing::TestWithParam<DType> {};

TEST_P(GemmRandom, RelL2Within1e6OfDoubleReference) {
  const DType dt = GetParam();
  std::mt19937 rng(99);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto gen = [&] { return normal(rng); };
  struct Shape {
    int64_t m, n, k;
  };
  const Shape shapes[] = {{1, 300, 1000}, {2, 77, 4096}, {4, 129, 777}, {13, 200, 1100}, {130, 96, 513}};
  for (const Shape& s : shapes) {
    const Mat x = make_mat(DType::F32, s.m, s.k, s.k, gen);
    const Mat w = make_mat(dt, s.n, s.k, s.k, gen);
    const Mat bias = make_mat(DType::F32, 1, s.n, s.n, gen);
    std::vector<float> y0(static_cast<size_t>(s.m * s.n), 0.0f), want;
    ref_gemm(x, w, &bias, false, y0, s.n, &want);
    for (GemmIsa isa : available_isas()) {
      for (GemmPath path : {GemmPath::Rows, GemmPath::Packed}) {
        GemmOptions opts;
        opts.isa = isa;
        opts.path = path;
        std::vector<float> y = y0;
        gemm(make_args(x, w, &bias, y.data(), s.n, false), pool2(), opts);
        const auto rep = test::compare_rel_l2(y.data(), want.data(), s.m * s.n, 1e-6);
        EXPECT_TRUE(rep.ok) << "isa=" << kernels::cpu::gemm_isa_name(isa) << " path=" << int(path) << " m=" << s.m
                            << " n=" << s.n << " k=" << s.k << " rel_l2=" << rep.rel_l2 << rep.detail;
      }
    }
  }
}

// The same bits for any thread count, and a row's bits do not depend on which other rows share the call.
TEST_P(GemmRandom, DeterministicAcrossThreadsAndRowGrouping) {
  const DType dt = GetParam();
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto gen = [&] { return normal(rng); };
  ThreadPool p1(1), p2(2), p3(3), pskew(3);
  ASSERT_GT(test::skew_pool_speeds(pskew), 0.36);  // uneven splits (ThreadPool::run_balanced); even: 1/3
  const int64_t n = 1000, k = 700;
  const Mat w = make_mat(dt, n, k, k, gen);
  for (int64_t m : {int64_t{1}, int64_t{3}, int64_t{50}}) {
    const Mat x = make_mat(DType::F32, m, k, k, gen);
    for (GemmIsa isa : available_isas()) {
      for (GemmPath path : {GemmPath::Rows, GemmPath::Packed}) {
        GemmOptions opts;
        opts.isa = isa;
        opts.path = path;
        std::vector<float> y1(static_cast<size_t>(m * n)), y2 = y1, y3 = y1, y4 = y1;
        gemm(make_args(x, w, nullptr, y1.data(), n, false), p1, opts);
        gemm(make_args(x, w, nullptr, y2.data(), n, false), p2, opts);
        gemm(make_args(x, w, nullptr, y3.data(), n, false), p3, opts);
        gemm(make_args(x, w, nullptr, y4.data(), n, false), pskew, opts);
        EXPECT_EQ(bits_mismatch(y4, y1), "") << "uneven 3-thread split vs 1 thread, m=" << m << " isa " << int(isa)
                                             << " path " << int(path);
        EXPECT_EQ(bits_mismatch(y2, y1), "") << "2 vs 1 threads, m=" << m << " isa " << int(isa) << " path "
                                             << int(path);
        EXPECT_EQ(bits_mismatch(y3, y1), "") << "3 vs 1 threads, m=" << m << " isa " << int(isa) << " path "
                                             << int(path);
        // Last row alone (a view of x) gives the same bits as inside the batch.
        Mat last = x;
        last.rows = 1;
        last.f.erase(last.f.begin(), last.f.begin() + static_cast<std::ptrdiff_t>((m - 1) * k));
        last.vals.erase(last.vals.begin(), last.vals.begin() + static_cast<std::ptrdiff_t>((m - 1) * k));
        std::vector<float> y_last(static_cast<size_t>(n));
        gemm(make_args(last, w, nullptr, y_last.data(), n, false), p2, opts);
        std::vector<float> batch_last(y1.end() - n, y1.end());
        EXPECT_EQ(bits_mismatch(y_last, batch_last), "") << "row grouping, m=" << m << " path " << int(path);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Cpu, GemmRandom, ::testing::Values(DType::F32, DType::F16, DType::BF16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(Gemm, EmptyShapesAreNoOps) {
  std::vector<float> y(4, 7.0f);
  GemmArgs a;
  a.y = y.data();
  a.m = 0;
  a.n = 4;
  a.k = 3;
  gemm(a, pool2());
  a.m = 2;
  a.n = 0;
  gemm(a, pool2());
  for (float v : y) EXPECT_EQ(v, 7.0f);
}

TEST(Gemm, RejectsBadArguments) {
  std::vector<float> x(6), w(6), y(4);
  GemmArgs a;
  a.x = x.data();
  a.w = w.data();
  a.y = y.data();
  a.m = 2;
  a.n = 2;
  a.k = 3;
  a.ldx = 3;
  a.ldw = 3;
  a.ldy = 2;
  EXPECT_NO_THROW(gemm(a, pool2()));
  GemmArgs b = a;
  b.m = -1;
  EXPECT_THROW(gemm(b, pool2()), Error);
  b = a;
  b.ldx = 2;
  EXPECT_THROW(gemm(b, pool2()), Error);
  b = a;
  b.ldw = 1;
  EXPECT_THROW(gemm(b, pool2()), Error);
  b = a;
  b.ldy = 1;
  EXPECT_THROW(gemm(b, pool2()), Error);
  b = a;
  b.w = nullptr;
  EXPECT_THROW(gemm(b, pool2()), Error);
}

TEST(Gemm, ReportsAnIsa) {
  const std::string isa = kernels::cpu::gemm_isa();
  EXPECT_TRUE(isa == "scalar" || isa == "avx2" || isa == "avx512") << isa;
}

}  // namespace
}  // namespace xc2
