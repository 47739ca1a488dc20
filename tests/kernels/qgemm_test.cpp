// The quantized linears (kernels/cpu/qgemm.h) against a reference written from the GPTQ format itself:
// w[r, c] = scale[g(c), r] * (q[r, c] - (stored_zero[g(c), r] + 1)), with g(c) = g_idx[c], summed in double.
// Cases: 4 and 8 bits, group sizes 32, 64, 128 and per channel, act-order g_idx, sym and asym zero points,
// n not a multiple of 16, a bias; every ISA this CPU has, the rows and the packed paths, m across the
// rows/packed threshold, 1 and 2 threads. The int8 path is checked with every int8 kernel this CPU has
// (AVX-512 VNNI, AVX-VNNI, plain AVX2): against the same int8 arithmetic done here (equal up to f32 rounding),
// against the exact result within the bound that rounding x to 8 bits per 32-column block allows, and the
// kernels against each other, bit for bit.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <tuple>
#include <vector>

#include "core/half.h"
#include "core/thread_pool.h"
#include "cpu/gemm.h"
#include "cpu/qgemm.h"
#include "support/gptq_random.h"
#include "support/test_util.h"
#include "xc2/error.h"

namespace xc2 {
namespace {

using kernels::cpu::GemmIsa;
using kernels::cpu::GemmPath;
using kernels::cpu::GptqTensors;
using kernels::cpu::QuantMatrix;

struct QCase {
  int bits;
  int64_t n, k, group_size;  // -1: per channel
  bool act_order, sym, bias;
};

struct QData : test::GptqRaw {
  GptqTensors t;  // points into the vectors above
};

// A random linear of case c (tests/support/gptq_random.h: the tensors as a checkpoint holds them, and w).
QData make(const QCase& qc, uint32_t seed) {
  test::GptqCase c;
  c.bits = qc.bits;
  c.n = qc.n;
  c.k = qc.k;
  c.group_size = qc.group_size;
  c.act_order = qc.act_order;
  c.sym = qc.sym;
  c.bias = qc.bias;
  QData d;
  test::fill_random_gptq(c, seed, &d);
  d.t.bits = c.bits;
  d.t.n = c.n;
  d.t.k = c.k;
  d.t.groups = d.groups;
  d.t.group_size = c.group_size;
  d.t.qweight = d.qweight.data();
  d.t.qzeros = d.qzeros.data();
  d.t.scales = d.scales.data();
  d.t.scales_dtype = DType::F16;
  d.t.g_idx = c.act_order ? d.g_idx.data() : nullptr;
  d.t.bias = c.bias ? d.bias.data() : nullptr;
  d.t.bias_dtype = DType::F16;
  return d;
}

std::vector<float> random_x(int64_t m, int64_t ldx, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(m * ldx));
  for (auto& v : x) v = nd(rng);
  return x;
}

// y = x . w^T + bias in double; *mag: sum |x| |w| per output (the scale of f32 rounding).
std::vector<double> reference(const QData& d, const std::vector<float>& x, int64_t m, int64_t ldx,
                              std::vector<double>* mag) {
  const test::GptqCase& c = d.c;
  std::vector<double> y(static_cast<size_t>(m * c.n));
  mag->assign(y.size(), 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t r = 0; r < c.n; ++r) {
      double s = c.bias ? f16_to_f32(d.bias[static_cast<size_t>(r)]) : 0.0, a = std::fabs(s);
      for (int64_t col = 0; col < c.k; ++col) {
        const double t = x[static_cast<size_t>(i * ldx + col)] * d.w[static_cast<size_t>(r * c.k + col)];
        s += t;
        a += std::fabs(t);
      }
      y[static_cast<size_t>(i * c.n + r)] = s;
      (*mag)[static_cast<size_t>(i * c.n + r)] = a;
    }
  return y;
}

const std::vector<QCase>& cases() {
  static const std::vector<QCase> c = {
      {4, 48, 256, 32, false, false, false},  {4, 40, 256, 64, true, false, true},
      {4, 64, 512, -1, false, true, false},   {4, 33, 384, 128, true, true, false},
      {8, 48, 256, 32, true, false, false},   {8, 40, 256, -1, false, false, true},
      {8, 64, 512, 128, false, true, false},  {4, 96, 4352, 128, false, false, false},
      {8, 32, 16896, 128, false, false, true},  // k past the int8 path's 16384-column chunk
  };
  return c;
}

// The int8 path: cases() and more with n not a multiple of 16, act-order at group sizes 128 and -1, and a
// 4-bit k past the 16384-column chunk.
const std::vector<QCase>& int8_cases() {
  static const std::vector<QCase> c = [] {
    std::vector<QCase> v = cases();
    v.push_back({8, 50, 512, 128, true, false, true});
    v.push_back({4, 70, 1024, -1, true, false, true});
    v.push_back({8, 24, 384, -1, true, true, false});
    v.push_back({4, 45, 512, 128, true, false, true});
    v.push_back({4, 20, 16896, 32, true, false, false});
    // 10 tiles: one row of x runs 2 tiles per pass (a remainder on 2 threads); act order (one group
    // per segment, in g_idx order) and 8-bit.
    v.push_back({4, 150, 1024, 64, true, false, true});
    v.push_back({8, 160, 512, 32, false, false, false});
    // 33 tiles, the last one partial: the one-row kernel's passes take tiles half of each thread's range apart
    // (stride 16 on 1 thread, 8 on 2) and leave a remainder.
    v.push_back({4, 520, 256, 32, false, false, true});
    return v;
  }();
  return c;
}

using kernels::cpu::QInt8Kernel;

// The int8 kernels this CPU has, the best first.
std::vector<QInt8Kernel> int8_kernels() {
  std::vector<QInt8Kernel> v;
  for (QInt8Kernel k : {QInt8Kernel::Avx512Vnni, QInt8Kernel::AvxVnni, QInt8Kernel::Avx2})
    if (kernels::cpu::qint8_kernel_available(k)) v.push_back(k);
  return v;
}

std::vector<GemmIsa> isas() {
  std::vector<GemmIsa> v = {GemmIsa::Scalar};
  if (kernels::cpu::gemm_isa_supported(GemmIsa::Avx2)) v.push_back(GemmIsa::Avx2);
  if (kernels::cpu::gemm_isa_supported(GemmIsa::Avx512)) v.push_back(GemmIsa::Avx512);
  return v;
}

TEST(QGemm, RepackKeepsEveryValue) {
  for (const QCase& c : cases()) {
    const QData d = make(c, 7);
    const QuantMatrix w = kernels::cpu::repack_gptq(d.t);
    for (int64_t r = 0; r < c.n; ++r)
      for (int64_t j = 0; j < c.k; ++j) {
        const int64_t col = w.perm.empty() ? j : w.perm[static_cast<size_t>(j)];
        ASSERT_EQ(static_cast<double>(w.at(r, j)), d.w[static_cast<size_t>(r * c.k + col)]) << r << " " << j;
      }
    EXPECT_EQ(w.run_start.empty(), false);
  }
}

// Every field of two repacked matrices.
void expect_same_matrix(const QuantMatrix& a, const QuantMatrix& b) {
  ASSERT_EQ(std::tie(a.bits, a.n, a.k, a.groups, a.n_pad, a.kw, a.uniform_group),
            std::tie(b.bits, b.n, b.k, b.groups, b.n_pad, b.kw, b.uniform_group));
  ASSERT_EQ(a.q.size(), b.q.size());
  for (size_t i = 0; i < a.q.size(); ++i) ASSERT_EQ(a.q[i], b.q[i]) << "word " << i;
  EXPECT_EQ(std::tie(a.scale, a.bias), std::tie(b.scale, b.bias));
  EXPECT_EQ(std::tie(a.zero_m1, a.group, a.perm, a.run_start, a.run_group, a.chunk_start),
            std::tie(b.zero_m1, b.group, b.perm, b.run_start, b.run_group, b.chunk_start));
  ASSERT_EQ(a.segments.size(), b.segments.size());
  for (size_t i = 0; i < a.segments.size(); ++i)
    EXPECT_EQ(std::tie(a.segments[i].b0, a.segments[i].b1, a.segments[i].g),
              std::tie(b.segments[i].b0, b.segments[i].b1, b.segments[i].g))
        << "segment " << i;
}

// The pool's threads write the tiles in bands of 16 (load time): the same matrix as one thread, word for word,
// with several bands and a partial last one, act-order (words assembled from several GPTQ words) or not.
TEST(QGemm, RepackOnThePoolEqualsOneThread) {
  ThreadPool pool(3);
  for (const QCase& c : std::vector<QCase>{{4, 517, 256, 64, false, false, true},
                                           {4, 517, 256, 64, true, false, false},
                                           {8, 530, 128, -1, false, true, true},
                                           {8, 272, 256, 32, true, false, false}}) {
    SCOPED_TRACE(::testing::Message() << c.bits << "-bit n " << c.n << (c.act_order ? " act-order" : ""));
    const QData d = make(c, 11);
    const QuantMatrix one = kernels::cpu::repack_gptq(d.t);
    const QuantMatrix many = kernels::cpu::repack_gptq(d.t, &pool);
    expect_same_matrix(one, many);
    for (int64_t r = 0; r < c.n; ++r)
      for (int64_t j = r % 5; j < c.k; j += 5) {
        const int64_t col = many.perm.empty() ? j : many.perm[static_cast<size_t>(j)];
        ASSERT_EQ(static_cast<double>(many.at(r, j)), d.w[static_cast<size_t>(r * c.k + col)]) << r << " " << j;
      }
  }
}

TEST(QGemm, EveryIsaAndPathMatchesTheReference) {
  for (int threads : {1, 2}) {
    ThreadPool pool(threads);
    for (const QCase& c : cases()) {
      const QData d = make(c, 11);
      const QuantMatrix w = kernels::cpu::repack_gptq(d.t);
      for (int64_t m : {1, 3, 8, 9, 17, 70}) {
        const int64_t ldx = c.k + 3, ldy = c.n + 5;
        const std::vector<float> x = random_x(m, ldx, static_cast<uint32_t>(m));
        std::vector<double> mag;
        const std::vector<double> ref = reference(d, x, m, ldx, &mag);
        for (GemmIsa isa : isas()) {
          for (GemmPath path : {GemmPath::Rows, GemmPath::Packed}) {
            for (bool acc : {false, true}) {
              SCOPED_TRACE(::testing::Message() << "bits " << c.bits << " n " << c.n << " k " << c.k << " gs "
                                                << c.group_size << " act " << c.act_order << " m " << m << " isa "
                                                << kernels::cpu::gemm_isa_name(isa) << " path "
                                                << (path == GemmPath::Rows ? "rows" : "packed") << " acc " << acc
                                                << " threads " << threads);
              std::vector<float> y(static_cast<size_t>(m * ldy), acc ? 0.5f : -7.0f);
              kernels::cpu::QLinearOptions o;
              o.isa = isa;
              o.path = path;
              kernels::cpu::qlinear(x.data(), ldx, w, y.data(), ldy, m, acc, pool, o);
              for (int64_t i = 0; i < m; ++i) {
                for (int64_t r = 0; r < c.n; ++r) {
                  const double want = ref[static_cast<size_t>(i * c.n + r)] + (acc ? 0.5 : 0.0);
                  const double tol = 2e-6 * mag[static_cast<size_t>(i * c.n + r)] + 1e-6;
                  ASSERT_NEAR(y[static_cast<size_t>(i * ldy + r)], want, tol) << "row " << i << " out " << r;
                }
                for (int64_t r = c.n; r < ldy; ++r)  // the padding of y is never written
                  ASSERT_EQ(y[static_cast<size_t>(i * ldy + r)], acc ? 0.5f : -7.0f);
              }
            }
          }
        }
      }
    }
  }
}

TEST(QGemm, Int8KernelChoice) {
  using kernels::cpu::qlinear_int8_kernel;
  const std::vector<QInt8Kernel> have = int8_kernels();
  if (kernels::cpu::gemm_isa_supported(GemmIsa::Avx2)) {
    // Every AVX2 CPU has the plain AVX2 kernel (this build is x86); AVX-VNNI and AVX-512 VNNI where the CPU has them.
    ASSERT_FALSE(have.empty());
    EXPECT_EQ(have.back(), QInt8Kernel::Avx2);
  }
  const QInt8Kernel chosen = qlinear_int8_kernel();
  std::printf("[ int8 ] kernels on this CPU:");
  for (QInt8Kernel k : have) std::printf(" %s", kernels::cpu::qint8_kernel_name(k));
  std::printf("; qlinear_int8 runs %s\n", kernels::cpu::qint8_kernel_name(chosen));
  if (!std::getenv("XC2_QINT8") && !std::getenv("XC2_GEMM_ISA")) {  // else they choose
    EXPECT_EQ(chosen, have.empty() ? QInt8Kernel::None : have.front());
  }
  EXPECT_EQ(chosen == QInt8Kernel::None, !kernels::cpu::qlinear_int8_supported());
  for (QInt8Kernel k : {QInt8Kernel::Avx512Vnni, QInt8Kernel::AvxVnni, QInt8Kernel::Avx2}) {
    const bool in = std::find(have.begin(), have.end(), k) != have.end();
    EXPECT_EQ(qlinear_int8_kernel(k), in ? k : QInt8Kernel::None);
    EXPECT_EQ(kernels::cpu::qlinear_int8_supported(k), in);
  }
  EXPECT_STREQ(kernels::cpu::qint8_kernel_name(QInt8Kernel::AvxVnni), "AVX-VNNI");
}

TEST(QGemm, Int8ActivationsAreTheDocumentedArithmetic) {
  const std::vector<QInt8Kernel> kernels_here = int8_kernels();
  if (kernels_here.empty()) GTEST_SKIP() << "no int8 kernel on this CPU (needs AVX2)";
  ThreadPool pool(2);
  for (const QCase& c : int8_cases()) {
    const QData d = make(c, 23);
    const QuantMatrix w = kernels::cpu::repack_gptq(d.t);
    ASSERT_TRUE(kernels::cpu::qlinear_int8_supported(w, kernels_here.front()));
    for (int64_t m : {1, 5, 7, 37, 100}) {
      const int64_t ldx = c.k + 1, ldy = c.n;
      const std::vector<float> x = random_x(m, ldx, static_cast<uint32_t>(100 + m));
      std::vector<double> mag;
      const std::vector<double> exact = reference(d, x, m, ldx, &mag);
      // x rounded to int8 per 32 input columns, in the matrix's column order (act-order groups them).
      std::vector<double> xr(static_cast<size_t>(m * c.k)), bound(static_cast<size_t>(m * c.n), 0.0);
      for (int64_t i = 0; i < m; ++i)
        for (int64_t b = 0; b < c.k / 32; ++b) {
          float amax = 0;
          for (int64_t j = b * 32; j < b * 32 + 32; ++j) {
            const int64_t col = w.perm.empty() ? j : w.perm[static_cast<size_t>(j)];
            amax = std::max(amax, std::fabs(x[static_cast<size_t>(i * ldx + col)]));
          }
          const float sc = amax / 127.0f, inv = amax > 0 ? 127.0f / amax : 0.0f;
          for (int64_t j = b * 32; j < b * 32 + 32; ++j) {
            const int64_t col = w.perm.empty() ? j : w.perm[static_cast<size_t>(j)];
            const float qv = std::nearbyint(x[static_cast<size_t>(i * ldx + col)] * inv);
            xr[static_cast<size_t>(i * c.k + col)] = static_cast<double>(sc) * std::max(-127.0f, std::min(127.0f, qv));
            for (int64_t r = 0; r < c.n; ++r)
              bound[static_cast<size_t>(i * c.n + r)] += sc * 0.5 * std::fabs(d.w[static_cast<size_t>(r * c.k + col)]);
          }
        }
      std::vector<double> emu(static_cast<size_t>(m * c.n)), emu_mag(emu.size());
      for (int64_t i = 0; i < m; ++i)
        for (int64_t r = 0; r < c.n; ++r) {
          double e = c.bias ? f16_to_f32(d.bias[static_cast<size_t>(r)]) : 0.0, a = std::fabs(e);
          for (int64_t col = 0; col < c.k; ++col) {
            const double t = xr[static_cast<size_t>(i * c.k + col)] * d.w[static_cast<size_t>(r * c.k + col)];
            e += t;
            a += std::fabs(t);
          }
          emu[static_cast<size_t>(i * c.n + r)] = e;
          emu_mag[static_cast<size_t>(i * c.n + r)] = a;
        }
      for (QInt8Kernel kern : kernels_here) {
        SCOPED_TRACE(::testing::Message() << "bits " << c.bits << " n " << c.n << " k " << c.k << " gs "
                                          << c.group_size << " act " << c.act_order << " m " << m << " kernel "
                                          << kernels::cpu::qint8_kernel_name(kern));
        std::vector<float> y(static_cast<size_t>(m * ldy), 0.0f);
        kernels::cpu::qlinear_int8(x.data(), ldx, w, y.data(), ldy, m, false, pool, kern);
        double err2 = 0, ref2 = 0;
        for (int64_t i = 0; i < m; ++i)
          for (int64_t r = 0; r < c.n; ++r) {
            const size_t o = static_cast<size_t>(i * c.n + r);
            const double got = y[static_cast<size_t>(i * ldy + r)];
            ASSERT_NEAR(got, emu[o], 4e-6 * emu_mag[o] + 1e-6) << "row " << i << " out " << r;
            const double e = exact[o];
            ASSERT_LE(std::fabs(got - e), bound[o] * 1.001 + 4e-6 * emu_mag[o] + 1e-6);
            err2 += (got - e) * (got - e);
            ref2 += e * e;
          }
        EXPECT_GT(err2, 0.0);  // x really was rounded
        EXPECT_LT(std::sqrt(err2 / ref2), 0.02);
      }
    }
  }
}

// The AVX-512 quantizer of x gives the scalar one's bits: values, scales, sums, the 4-bit column order; on
// normal values, exact halves (round to even), zeros, -0, subnormals, one large value per block.
TEST(QGemm, QuantizeXSimdEqualsScalar) {
  const int64_t m = 9, k = 256, ldx = k + 3;
  std::vector<float> x = random_x(m, ldx, 77);
  for (int64_t j = 0; j < k; ++j) {
    x[static_cast<size_t>(j)] = 0.0f;                                                  // row 0: zeros
    x[static_cast<size_t>(ldx + j)] = j % 2 ? -0.0f : 1e-40f * static_cast<float>(j % 5);  // row 1: -0, subnormal
    x[static_cast<size_t>(2 * ldx + j)] = j % 32 == 7 ? 127.0f : static_cast<float>(j % 9) - 4.5f;  // row 2: halves
    x[static_cast<size_t>(3 * ldx + j)] = j % 32 == 3 ? -3e4f : x[static_cast<size_t>(3 * ldx + j)];
  }
  for (int bits : {4, 8}) {
    const int64_t nb = k / 32;
    std::vector<int8_t> q0(static_cast<size_t>(m * k)), q1(q0.size());
    std::vector<float> s0(static_cast<size_t>(m * nb)), s1(s0.size());
    std::vector<int32_t> z0(s0.size()), z1(s0.size());
    kernels::cpu::quantize_x_int8(x.data(), ldx, m, k, bits, q0.data(), s0.data(), z0.data(), false);
    kernels::cpu::quantize_x_int8(x.data(), ldx, m, k, bits, q1.data(), s1.data(), z1.data(), true);
    EXPECT_EQ(q0, q1) << "bits " << bits;
    EXPECT_EQ(std::memcmp(s0.data(), s1.data(), s0.size() * sizeof(float)), 0) << "bits " << bits;
    EXPECT_EQ(z0, z1) << "bits " << bits;
    // Row 2's halves round to even: -4.5 / 127 * 127 and friends (scale 1 exactly).
    EXPECT_EQ(s0[static_cast<size_t>(2 * nb)], 1.0f);
    EXPECT_EQ(q0[static_cast<size_t>(2 * k + (bits == 4 ? 4 : 1))], -4);  // column 1: -3.5 -> -4
  }
}

// The int8 kernels compute the same int32 block sums and the same f32 operations in the same order: identical
// outputs, bit for bit (store and accumulate, with and without bias, 1 and 2 threads; y's padding untouched), for
// one row, a few (decode steps of 2-4 sequences: AVX-512 VNNI's int8_mr) and many.
TEST(QGemm, Int8KernelsAgreeBitForBit) {
  const std::vector<QInt8Kernel> kernels_here = int8_kernels();
  if (kernels_here.size() < 2) GTEST_SKIP() << "fewer than two int8 kernels on this CPU";
  for (int threads : {1, 2}) {
    ThreadPool pool(threads);
    for (const QCase& c : int8_cases()) {
      const QData d = make(c, 31);
      const QuantMatrix w = kernels::cpu::repack_gptq(d.t);
      for (int64_t m : {1, 2, 3, 4, 5, 37}) {
        const int64_t ldx = c.k + 2, ldy = c.n + 3;
        std::vector<float> x = random_x(m, ldx, static_cast<uint32_t>(200 + m));
        if (m > 1)  // a row of zeros (block scale 0) and one with a single large value per block
          for (int64_t j = 0; j < c.k; ++j) {
            x[static_cast<size_t>(j)] = 0.0f;
            x[static_cast<size_t>(ldx + j)] = j % 32 == 5 ? 1e4f : 1e-3f * static_cast<float>(j % 7);
          }
        for (bool acc : {false, true}) {
          std::vector<std::vector<float>> ys;
          for (QInt8Kernel kern : kernels_here) {
            std::vector<float> y(static_cast<size_t>(m * ldy), 0.25f);
            kernels::cpu::qlinear_int8(x.data(), ldx, w, y.data(), ldy, m, acc, pool, kern);
            ys.push_back(std::move(y));
          }
          for (size_t kk = 1; kk < ys.size(); ++kk) {
            SCOPED_TRACE(::testing::Message() << "bits " << c.bits << " n " << c.n << " k " << c.k << " gs "
                                              << c.group_size << " act " << c.act_order << " bias " << c.bias << " m "
                                              << m << " acc " << acc << " threads " << threads << ": "
                                              << kernels::cpu::qint8_kernel_name(kernels_here[kk]) << " vs "
                                              << kernels::cpu::qint8_kernel_name(kernels_here[0]));
            for (int64_t i = 0; i < m; ++i)
              for (int64_t r = 0; r < ldy; ++r) {
                const float a = ys[0][static_cast<size_t>(i * ldy + r)], b = ys[kk][static_cast<size_t>(i * ldy + r)];
                ASSERT_EQ(std::memcmp(&a, &b, sizeof(float)), 0) << "row " << i << " out " << r << ": " << a << " vs " << b;
                if (r >= c.n) {
                  ASSERT_EQ(b, 0.25f);
                }
              }
          }
        }
      }
    }
  }
}

// A row's result does not depend on the rows beside it: each row of an m-row call (decode steps of m sequences,
// prefill blocks) equals a one-row call on that row, bit for bit, with every int8 kernel.
TEST(QGemm, Int8RowsEqualOneRowCalls) {
  ThreadPool pool(2);
  for (QInt8Kernel kern : int8_kernels())
    for (const QCase& c : int8_cases()) {
      const QData d = make(c, 41);
      const QuantMatrix w = kernels::cpu::repack_gptq(d.t);
      for (int64_t m : {2, 3, 4, 5, 37}) {
        SCOPED_TRACE(::testing::Message() << kernels::cpu::qint8_kernel_name(kern) << " bits " << c.bits << " n "
                                          << c.n << " k " << c.k << " gs " << c.group_size << " m " << m);
        const std::vector<float> x = random_x(m, c.k, static_cast<uint32_t>(300 + m));
        std::vector<float> y(static_cast<size_t>(m * c.n)), y1(static_cast<size_t>(c.n));
        kernels::cpu::qlinear_int8(x.data(), c.k, w, y.data(), c.n, m, false, pool, kern);
        for (int64_t i = 0; i < m; ++i) {
          kernels::cpu::qlinear_int8(x.data() + i * c.k, c.k, w, y1.data(), c.n, 1, false, pool, kern);
          ASSERT_EQ(std::memcmp(y.data() + i * c.n, y1.data(), y1.size() * sizeof(float)), 0) << "row " << i;
        }
      }
    }
}

// Products fused into qlinear_int8's pass (the PLoRA B deltas of image rows) give the bits of separate accumulating
// calls after the main one: spans across the 96-row blocks, a one-row span (the one-row kernel), an empty one, n not
// a multiple of 16 (odd tile counts per thread), act-order main matrices, 1 and 2 threads, every int8 kernel.
TEST(QGemm, FusedProductsEqualSeparateCalls) {
  const std::vector<QInt8Kernel> kernels_here = int8_kernels();
  if (kernels_here.empty()) GTEST_SKIP() << "no int8 kernel on this CPU";
  const QCase mains[] = {{4, 150, 1024, 64, true, false, true}, {8, 50, 512, 128, true, false, true},
                         {4, 33, 384, 128, true, true, false}};
  for (QInt8Kernel kern : kernels_here)
    for (int threads : {1, 2}) {
      ThreadPool pool(threads);
      for (const QCase& c : mains) {
        const QData d = make(c, 57);
        const QuantMatrix w = kernels::cpu::repack_gptq(d.t);
        const int64_t rank = 64, m = 230, ldx = c.k + 1, ldy = c.n + 5;
        std::vector<float> bw = random_x(c.n, rank, 91);  // B [n, rank] in f32
        const QuantMatrix b = kernels::cpu::quantize_rtn8(bw.data(), DType::F32, c.n, rank, pool);
        const std::vector<float> x = random_x(m, ldx, 92);
        const int64_t ldt = rank + 3;
        const std::vector<float> t = random_x(m, ldt, 93);
        struct Span {
          int64_t row0, rows;
        };
        const Span spans[] = {{3, 180}, {200, 1}, {210, 0}, {212, 18}};
        std::vector<float> y1(static_cast<size_t>(m * ldy), 0.25f), y2 = y1;
        kernels::cpu::qlinear_int8(x.data(), ldx, w, y1.data(), ldy, m, false, pool, kern);
        std::vector<kernels::cpu::QInt8Extra> extra;
        for (const Span& sp : spans) {
          const float* ts = t.data() + sp.row0 * ldt;
          kernels::cpu::qlinear_int8(ts, ldt, b, y1.data() + sp.row0 * ldy, ldy, sp.rows, true, pool, kern);
          extra.push_back({&b, ts, ldt, sp.row0, sp.rows});
        }
        kernels::cpu::qlinear_int8(x.data(), ldx, w, y2.data(), ldy, m, false, pool, kern, &extra);
        SCOPED_TRACE(::testing::Message() << kernels::cpu::qint8_kernel_name(kern) << " threads " << threads << " bits "
                                          << c.bits << " n " << c.n << " k " << c.k);
        for (size_t i = 0; i < y1.size(); ++i)
          ASSERT_EQ(std::memcmp(&y1[i], &y2[i], sizeof(float)), 0) << "row " << i / ldy << " out " << i % ldy << ": "
                                                                   << y1[i] << " vs " << y2[i];
        // The fused products changed the rows they cover (the test would pass with them dropped otherwise).
        std::vector<float> y3(static_cast<size_t>(m * ldy), 0.25f);
        kernels::cpu::qlinear_int8(x.data(), ldx, w, y3.data(), ldy, m, false, pool, kern);
        EXPECT_NE(std::memcmp(&y3[3 * ldy], &y2[3 * ldy], sizeof(float) * c.n), 0);
        EXPECT_EQ(std::memcmp(&y3[199 * ldy], &y2[199 * ldy], sizeof(float) * ldy), 0);
      }
      // An extra whose n differs from the main matrix's is refused.
      const QData d = make(mains[1], 58);
      const QuantMatrix w = kernels::cpu::repack_gptq(d.t);
      std::vector<float> bw = random_x(mains[1].n + 1, 32, 94);
      const QuantMatrix b = kernels::cpu::quantize_rtn8(bw.data(), DType::F32, mains[1].n + 1, 32, pool);
      const std::vector<float> x = random_x(4, mains[1].k, 95), t = random_x(4, 32, 96);
      std::vector<float> y(static_cast<size_t>(4 * (mains[1].n + 1)));
      const std::vector<kernels::cpu::QInt8Extra> bad = {{&b, t.data(), 32, 0, 4}};
      EXPECT_THROW(kernels::cpu::qlinear_int8(x.data(), mains[1].k, w, y.data(), mains[1].n, 4, false, pool, kern, &bad),
                   Error);
    }
}

// Thread pools that split the tiles unevenly (ThreadPool::run_balanced after learning a slower task) give the bits
// of an even split: every int8 kernel and the exact path (rows and packed), one row, a few and many.
TEST(QGemm, UnevenThreadSplitsGiveTheSameBits) {
  ThreadPool even(2), skewed(2);
  ASSERT_GT(test::skew_pool_speeds(skewed), 0.6);
  for (const QCase& c : int8_cases()) {
    const QData d = make(c, 77);
    const QuantMatrix w = kernels::cpu::repack_gptq(d.t);
    for (int64_t m : {1, 3, 37}) {
      const int64_t ldx = c.k + 1, ldy = c.n + 2;
      const std::vector<float> x = random_x(m, ldx, static_cast<uint32_t>(300 + m));
      auto same = [&](auto&& run, const char* what) {
        std::vector<float> y1(static_cast<size_t>(m * ldy), 0.5f), y2 = y1;
        run(even, y1.data());
        run(skewed, y2.data());
        SCOPED_TRACE(::testing::Message() << what << " bits " << c.bits << " n " << c.n << " k " << c.k << " m " << m);
        for (size_t i = 0; i < y1.size(); ++i)
          ASSERT_EQ(std::memcmp(&y1[i], &y2[i], sizeof(float)), 0) << "row " << i / ldy << " out " << i % ldy;
      };
      for (QInt8Kernel kern : int8_kernels())
        same([&](ThreadPool& p, float* y) { kernels::cpu::qlinear_int8(x.data(), ldx, w, y, ldy, m, false, p, kern); },
             kernels::cpu::qint8_kernel_name(kern));
      for (GemmPath path : {GemmPath::Rows, GemmPath::Packed}) {
        kernels::cpu::QLinearOptions o;
        o.path = path;
        same([&](ThreadPool& p, float* y) { kernels::cpu::qlinear(x.data(), ldx, w, y, ldy, m, false, p, o); },
             path == GemmPath::Rows ? "exact rows" : "exact packed");
      }
    }
  }
}

// quantize_rtn8 (the fast path's 8-bit PLoRA weights): per output row, scale = max |w| / 127 in f32, values
// round(w / scale) (half to even) clamped to [-127, 127]; from f32 and bf16, 1 and 2 threads; a row of zeros
// stays zero; the int8 kernels accept the result; k not a multiple of 32 is refused.
TEST(QGemm, QuantizeRtn8) {
  const int64_t n = 37, k = 96;
  std::vector<float> w = random_x(n, k, 5);
  for (int64_t j = 0; j < k; ++j) w[static_cast<size_t>(3 * k + j)] = 0.0f;  // row 3: zeros
  w[static_cast<size_t>(5 * k + 0)] = 127.0f;                              // row 5: scale 1 exactly,
  w[static_cast<size_t>(5 * k + 1)] = 2.5f;                                // a half rounds to even (2)
  w[static_cast<size_t>(5 * k + 2)] = -3.5f;                               // (-4)
  std::vector<uint16_t> wb(w.size());
  for (size_t i = 0; i < w.size(); ++i) wb[i] = f32_to_bf16(w[i]);
  for (int threads : {1, 2}) {
    ThreadPool pool(threads);
    for (DType dt : {DType::F32, DType::BF16}) {
      SCOPED_TRACE(::testing::Message() << dtype_name(dt) << ", " << threads << " threads");
      const void* src = dt == DType::F32 ? static_cast<const void*>(w.data()) : static_cast<const void*>(wb.data());
      const QuantMatrix m = kernels::cpu::quantize_rtn8(src, dt, n, k, pool);
      ASSERT_EQ(m.bits, 8);
      ASSERT_EQ(m.n, n);
      ASSERT_EQ(m.k, k);
      ASSERT_EQ(m.groups, 1);
      for (int64_t r = 0; r < n; ++r) {
        float amax = 0.0f;
        for (int64_t j = 0; j < k; ++j) amax = std::max(amax, std::fabs(float_at(src, dt, r * k + j)));
        const float scale = amax / 127.0f;
        ASSERT_EQ(m.scale[m.gz(0, r)], scale) << "row " << r;
        ASSERT_EQ(m.zero_m1[m.gz(0, r)], 127);
        for (int64_t j = 0; j < k; ++j) {
          const float v = float_at(src, dt, r * k + j);
          const float q = scale > 0 ? std::nearbyint(v / scale) : 0.0f;
          ASSERT_EQ(m.at(r, j), scale * q) << "row " << r << " column " << j;
          ASSERT_LE(std::fabs(m.at(r, j) - v), 0.5f * scale * 1.0001f);
        }
      }
      EXPECT_EQ(m.at(3, 40), 0.0f);
      EXPECT_EQ(m.at(5, 0), 127.0f);
      EXPECT_EQ(m.at(5, 1), 2.0f);
      EXPECT_EQ(m.at(5, 2), -4.0f);
      if (!int8_kernels().empty()) {
        EXPECT_FALSE(m.segments.empty());
        EXPECT_TRUE(kernels::cpu::qlinear_int8_supported(m, int8_kernels().front()));
      }
      // The same matrix as repack_gptq() of those values written as a GPTQ checkpoint would hold them (qweight
      // [k / 4, n] with q + 128 in each byte, every stored zero 127, one f32 scale per row), padding included.
      std::vector<int32_t> qweight(static_cast<size_t>(k / 4 * n), 0);
      const std::vector<int32_t> qzeros(static_cast<size_t>((n + 3) / 4), 0x7f7f7f7f);
      std::vector<float> scales(static_cast<size_t>(n));
      for (int64_t r = 0; r < n; ++r) {
        scales[static_cast<size_t>(r)] = m.scale[m.gz(0, r)];
        for (int64_t j = 0; j < k; ++j) {
          const float v = float_at(src, dt, r * k + j), scale = scales[static_cast<size_t>(r)];
          const int32_t q = scale > 0 ? static_cast<int32_t>(std::nearbyint(v / scale)) : 0;
          qweight[static_cast<size_t>((j / 4) * n + r)] |=
              static_cast<int32_t>(static_cast<uint32_t>(std::clamp(q, -127, 127) + 128) << ((j % 4) * 8));
        }
      }
      const GptqTensors t{8, n, k, 1, -1, qweight.data(), qzeros.data(), scales.data(), DType::F32};
      expect_same_matrix(kernels::cpu::repack_gptq(t), m);
    }
    EXPECT_THROW(kernels::cpu::quantize_rtn8(w.data(), DType::F32, n, 80, pool), Error);
  }
}

}  // namespace
}  // namespace xc2
