// Every Backend op (backends/backend.h) against its naive double-precision reference (support/op_reference),
// as one suite instantiated per device:
//   Cpu/OpsTest.*            the CPU backend (f32)                       label `ops`
//   Cuda/OpsTest.*           the CUDA backend in f32, bf16 and f16       label `cuda`, skipped without a GPU
//   */OpsPositionsTest.*     the same ops with ids and positions in an IntBuffer (read when the op runs: what a
//                            graph-replayed decode step uses), on the CPU and CUDA backends
// Inputs: seeded uniform values rounded to the dtype the backend holds them in (activations: act_dtype();
// weights: their checkpoint dtype on the CPU, act_dtype() on CUDA, which converts them on upload), so a
// reference sees exactly the backend's inputs. Shapes: odd sizes, and real XC2 sizes where cheap (hidden
// 4096, wqkv 6144, 32 query / 8 KV heads of 128, ViT heads of 64).
// Tolerances (OpsTest::check):
//   exact ops (embedding, split_qkv, im2col_patches): bit for bit on every device and dtype;
//   f32 activations (CPU, CUDA f32): relative L2 <= 1e-6 for element-wise ops and RoPE, <= 1e-5 for the
//     reductions (linear, rms_norm, layer_norm, attention);
//   bf16 / f16 activations: the noise floor of tests/model/cuda_backend_test.cpp (design.md §3.4),
//     rms(got - ref) <= 2 rms(lowp - ref) + 1e-6, lowp = the reference rounded to the dtype, with the
//     intermediate roundings upstream makes in that dtype (RMSNorm's normalised value, SiLU's output) and the
//     probabilities of attention rounded too. The CUDA tolerances were set without a GPU run.
// The Backend ops are called only through the op_* wrappers below, one per op, so that a change of their
// signatures is one edit per op here.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "support/backend_test_util.h"
#include "support/op_reference.h"
#include "support/test_util.h"

namespace xc2 {
namespace {

namespace ref = test::ref;
using Vec = std::vector<float>;
using Shape = std::vector<int64_t>;

// ---- the Backend ops (the only calls of them in this file) -----------------------------------------------

void op_linear(Backend& be, const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y, bool accumulate) {
  be.linear(x, w, bias, y, accumulate);
}
void op_rms_norm(Backend& be, const Tensor& x, const Tensor& w, float eps, Tensor& y) { be.rms_norm(x, w, eps, y); }
void op_layer_norm(Backend& be, const Tensor& x, const Tensor& w, const Tensor& b, float eps, Tensor& y) {
  be.layer_norm(x, w, b, eps, y);
}
void op_add(Backend& be, const Tensor& a, const Tensor& b, Tensor& y) { be.add(a, b, y); }
void op_scale(Backend& be, Tensor& x, float s) { be.scale(x, s); }
void op_silu_mul(Backend& be, const Tensor& gate, const Tensor& up, Tensor& y) { be.silu_mul(gate, up, y); }
void op_gelu_erf(Backend& be, Tensor& x) { be.gelu_erf(x); }
void op_quick_gelu(Backend& be, Tensor& x) { be.quick_gelu(x); }
void op_embedding(Backend& be, const Tensor& table, const std::vector<int32_t>& ids, Tensor& y) {
  be.embedding(table, TokenIds::of(ids), y);
}
// Model-level attention geometry: heads and head size of q, k, v.
struct Heads {
  int64_t n_heads, n_kv_heads, head_dim;
};
// k, v: the cache rows to write (views), i.e. positions 0 .. T - 1 of those views.
void op_split_qkv(Backend& be, const Tensor& qkv, const Heads& h, Tensor& q, Tensor& k, Tensor& v) {
  be.split_qkv(qkv, h.n_heads, h.n_kv_heads, h.head_dim, q, k, v, Positions::at(0));
}
void op_rope(Backend& be, Tensor& x, int64_t n_heads, int64_t head_dim, int64_t pos0, double theta) {
  be.rope(x, x.rows(), n_heads, head_dim, Positions::at(pos0), false, theta);
}
void op_attention(Backend& be, const Tensor& q, const Tensor& k, const Tensor& v, int64_t n_kv, const Heads& h,
                  int64_t q_pos0, bool causal, float scale, Tensor& out) {
  test::attention(be, q, k, v, n_kv, h.n_heads, h.n_kv_heads, h.head_dim, Positions::at(q_pos0), causal, scale, out);
}
void op_im2col_patches(Backend& be, const Tensor& pixels, int64_t patch, Tensor& cols) {
  be.im2col_patches(pixels, patch, cols);
}
// Ids and positions in an IntBuffer, read when the op runs (device memory on a GPU, host memory on the CPU).
void op_embedding_at(Backend& be, const Tensor& table, const IntBuffer& ids, Tensor& y) {
  be.embedding(table, TokenIds::in(ids, y.rows()), y);
}
void op_split_qkv_at(Backend& be, const Tensor& qkv, const Heads& h, Tensor& q, Tensor& k_cache, Tensor& v_cache,
                     const IntBuffer& pos) {
  be.split_qkv(qkv, h.n_heads, h.n_kv_heads, h.head_dim, q, k_cache, v_cache, Positions::in(pos, k_cache.rows()));
}
void op_rope_at(Backend& be, Tensor& x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, const IntBuffer& pos,
                bool rows_at_pos, double theta, int64_t max_positions) {
  be.rope(x, n_tokens, n_heads, head_dim, Positions::in(pos, max_positions), rows_at_pos, theta);
}
void op_attention_at(Backend& be, const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Heads& h,
                     const IntBuffer& pos, float scale, Tensor& out) {
  test::attention(be, q, k_cache, v_cache, 0, h.n_heads, h.n_kv_heads, h.head_dim, Positions::in(pos, k_cache.rows()),
                  true, scale, out);
}

// ---- fixture -----------------------------------------------------------------------------------------------

struct DeviceParam {
  Device device;
  DType act;  // the backend's activation dtype
};

std::string param_name(const testing::TestParamInfo<DeviceParam>& info) { return dtype_name(info.param.act); }
void PrintTo(const DeviceParam& p, std::ostream* os) { *os << device_name(p.device) << " " << dtype_name(p.act); }

constexpr DType kWeightDtypes[] = {DType::F32, DType::F16, DType::BF16};
constexpr float kNan = std::numeric_limits<float>::quiet_NaN();

enum class Kind { Exact, Elementwise, Reduction };

const int64_t kPointwiseSizes[] = {1, 1000, 4097, 3 * 4096};

class OpsTest : public testing::TestWithParam<DeviceParam> {
 protected:
  void SetUp() override {
    if (GetParam().device == Device::Cuda) {
      XC2_SKIP_IF_NO_CUDA();
      be_ = make_cuda_backend(0, GetParam().act);
    } else {
      be_ = make_cpu_backend(2);
    }
  }

  Backend& be() { return *be_; }
  DType act() const { return GetParam().act; }
  // The dtype the backend keeps a weight in that a checkpoint stores in `dtype`.
  DType held(DType dtype) const { return GetParam().device == Device::Cuda ? act() : dtype; }

  // n seeded values in [-scale, scale) as an activation.
  Vec act_values(int64_t n, uint32_t seed, float scale = 1.0f) const {
    Vec v = test::random_vec(static_cast<size_t>(n), seed, scale);
    for (float& x : v) x = test::round_to(x, act());
    return v;
  }
  // n seeded values in [-scale, scale) stored in `dtype`, as the backend holds them.
  Vec weight_values(int64_t n, uint32_t seed, DType dtype, float scale = 1.0f) const {
    Vec v = test::random_vec(static_cast<size_t>(n), seed, scale);
    for (float& x : v) x = test::round_to(test::round_to(x, dtype), held(dtype));
    return v;
  }
  Tensor activation(const Vec& v, const Shape& shape) { return be().from_host_f32(v.data(), shape); }
  Tensor weight(const Vec& v, const Shape& shape, DType dtype) { return test::upload_weight(be(), v, shape, dtype); }
  Vec host(const Tensor& t) { return test::to_host(be(), t); }

  // got against the double reference with the tolerance of this device and dtype (file comment); lowp
  // replaces the reference rounded to the activation dtype in the noise-floor rule.
  void check(const Vec& got, const std::vector<double>& want, Kind kind, const std::string& what,
             const Vec* lowp = nullptr) {
    ASSERT_EQ(got.size(), want.size()) << what;
    const int64_t n = static_cast<int64_t>(got.size());
    const Vec want32 = test::to_f32(want);
    test::CompareReport r;
    if (kind == Kind::Exact) {
      r = test::compare_close(got.data(), want32.data(), n, 0, 0);
    } else if (act() == DType::F32) {
      r = test::compare_rel_l2(got.data(), want32.data(), n, kind == Kind::Elementwise ? 1e-6 : 1e-5);
    } else {
      const Vec rounded_want = test::rounded(want32, act());
      r = test::compare_noise_floor(got.data(), lowp ? lowp->data() : rounded_want.data(), want.data(), n);
    }
    EXPECT_TRUE(r.ok) << what << ": " << r.detail;
  }

  // An in-place element-wise op (op(x) on a tensor; want(x, n) its reference) on every size of
  // kPointwiseSizes, inputs in [-range, range).
  template <typename Op, typename Ref>
  void check_in_place(uint32_t seed, float range, Op&& op, Ref&& want, const std::string& what) {
    for (int64_t n : kPointwiseSizes) {
      SCOPED_TRACE(testing::Message() << what << " n " << n);
      const Vec x = act_values(n, ++seed, range);
      Tensor tx = activation(x, {n});
      op(tx);
      check(host(tx), want(x.data(), n), Kind::Elementwise, what);
    }
  }

  // Rows [0, begin) and [begin + count, rows) of `t` still hold `fill`.
  void expect_rows_untouched(const Tensor& t, int64_t begin, int64_t count, float fill, const std::string& what) {
    const Vec all = host(t);
    const int64_t row = t.row_numel();
    for (int64_t r = 0; r < t.rows(); ++r) {
      if (r >= begin && r < begin + count) continue;
      for (int64_t i = 0; i < row; ++i) {
        const float x = all[static_cast<size_t>(r * row + i)];
        if (!(x == fill || (std::isnan(x) && std::isnan(fill)))) {
          ADD_FAILURE() << what << ": row " << r << " outside [" << begin << ", " << begin + count
                        << ") was written (" << x << ")";
          return;
        }
      }
    }
  }

  // `count` rows [begin, begin + count) of a [rows, ...] host copy, flattened.
  static Vec row_range(const Vec& all, int64_t row, int64_t begin, int64_t count) {
    return Vec(all.begin() + begin * row, all.begin() + (begin + count) * row);
  }

  // A tensor of `shape` with every element `fill`.
  Tensor filled(const Shape& shape, float fill) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return activation(Vec(static_cast<size_t>(n), fill), shape);
  }

  // The rows of k or v ([n, n_kv_heads, head_dim]) as a cache of `cap` >= n rows whose other rows hold NaN.
  Tensor nan_padded_cache(const Vec& rows, int64_t cap, const Heads& h) {
    Vec all = rows;
    all.resize(static_cast<size_t>(cap * h.n_kv_heads * h.head_dim), kNan);
    return activation(all, {cap, h.n_kv_heads, h.head_dim});
  }

  // Checks attention output against the reference (and, below f32, against the reference with the
  // probabilities rounded to the activation dtype as a kernel multiplying P in that dtype must).
  void check_attention(const Vec& got, const Vec& q, const Vec& k, const Vec& v, int64_t n_kv, const Heads& h,
                       int64_t q_pos0, bool causal, float scale, const std::string& what) {
    const int64_t n_q = static_cast<int64_t>(q.size()) / (h.n_heads * h.head_dim);
    auto reference = [&](DType p_dtype) {
      return ref::attention(q.data(), k.data(), v.data(), n_q, n_kv, h.n_heads, h.n_kv_heads, h.head_dim, q_pos0,
                            causal, scale, p_dtype);
    };
    const std::vector<double> want = reference(DType::F32);
    const Vec lowp = test::rounded(test::to_f32(reference(act())), act());
    check(got, want, Kind::Reduction, what, &lowp);
  }

 private:
  std::unique_ptr<Backend> be_;
};

// ---- linear -------------------------------------------------------------------------------------------------

TEST_P(OpsTest, Linear) {
  struct Case {
    int64_t m, n, k;
  };
  // Odd sizes with every weight dtype and every (bias, accumulate) variant; real sizes (decode wo, the ViT's
  // fc1 and fc2) with the checkpoint's bf16 and one variant each.
  const Case odd[] = {{1, 7, 33}, {7, 33, 127}, {33, 129, 65}, {127, 65, 300}, {5, 37, 1025}, {16, 64, 64}};
  const Case real[] = {{1, 4096, 4096}, {2, 4096, 1024}, {3, 1024, 4096}};
  uint32_t seed = 1000;
  auto run = [&](const Case& c, DType wdt, bool with_bias, bool accumulate) {
    SCOPED_TRACE(testing::Message() << "m " << c.m << " n " << c.n << " k " << c.k << " w " << dtype_name(wdt)
                                    << (with_bias ? " bias" : "") << (accumulate ? " accumulate" : ""));
    seed += 4;
    const Vec x = act_values(c.m * c.k, seed);
    const Vec w = weight_values(c.n * c.k, seed + 1, wdt, 1.0f / std::sqrt(static_cast<float>(c.k)));
    const Vec bias = weight_values(c.n, seed + 2, wdt);
    const Vec y0 = act_values(c.m * c.n, seed + 3);
    Tensor tx = activation(x, {c.m, c.k}), tw = weight(w, {c.n, c.k}, wdt), tb = weight(bias, {c.n}, wdt);
    Tensor ty = activation(y0, {c.m, c.n});
    op_linear(be(), tx, tw, with_bias ? &tb : nullptr, ty, accumulate);
    check(host(ty),
          ref::linear(x.data(), w.data(), with_bias ? bias.data() : nullptr, accumulate ? y0.data() : nullptr, c.m,
                      c.n, c.k),
          Kind::Reduction, "linear");
  };
  for (DType wdt : kWeightDtypes)
    for (const Case& c : odd)
      for (int variant = 0; variant < 4; ++variant) run(c, wdt, variant & 1, variant & 2);
  int variant = 0;
  for (const Case& c : real) {
    run(c, DType::BF16, variant & 1, variant & 2);
    variant += 3;
  }
}

// ---- norms --------------------------------------------------------------------------------------------------

struct RowsDim {
  int64_t rows, dim;
};
const RowsDim kNormShapes[] = {{1, 64}, {7, 127}, {33, 1024}, {3, 4096}, {2, 4097}, {5, 1}};

TEST_P(OpsTest, RmsNorm) {
  uint32_t seed = 2000;
  for (DType wdt : kWeightDtypes)
    for (const RowsDim& s : kNormShapes)
      for (bool in_place : {false, true}) {
        const float eps = in_place ? 1e-5f : 1e-6f;
        SCOPED_TRACE(testing::Message() << "rows " << s.rows << " dim " << s.dim << " w " << dtype_name(wdt)
                                        << (in_place ? " in place" : "") << " eps " << eps);
        const Vec x = act_values(s.rows * s.dim, ++seed, 3.0f), w = weight_values(s.dim, ++seed, wdt, 2.0f);
        Tensor tx = activation(x, {s.rows, s.dim}), tw = weight(w, {s.dim}, wdt);
        Tensor ty = in_place ? tx : be().empty({s.rows, s.dim});
        op_rms_norm(be(), tx, tw, eps, ty);
        // Below f32 the normalised value is rounded before the weight multiply (model-spec §6.1).
        const Vec lowp =
            test::rounded(test::to_f32(ref::rms_norm(x.data(), w.data(), s.rows, s.dim, eps, act())), act());
        check(host(ty), ref::rms_norm(x.data(), w.data(), s.rows, s.dim, eps), Kind::Reduction, "rms_norm", &lowp);
      }
}

TEST_P(OpsTest, LayerNorm) {
  uint32_t seed = 3000;
  for (DType wdt : kWeightDtypes)
    for (const RowsDim& s : kNormShapes) {
      if (s.dim == 1) continue;  // var = 0: y = b, a degenerate row
      for (bool in_place : {false, true}) {
        SCOPED_TRACE(testing::Message() << "rows " << s.rows << " dim " << s.dim << " w " << dtype_name(wdt)
                                        << (in_place ? " in place" : ""));
        Vec x = test::random_vec(static_cast<size_t>(s.rows * s.dim), ++seed, 3.0f);
        for (float& v : x) v += 1.5f;  // a mean far from 0
        x = test::rounded(x, act());
        const Vec w = weight_values(s.dim, ++seed, wdt, 2.0f), b = weight_values(s.dim, ++seed, wdt);
        Tensor tx = activation(x, {s.rows, s.dim}), tw = weight(w, {s.dim}, wdt), tb = weight(b, {s.dim}, wdt);
        Tensor ty = in_place ? tx : be().empty({s.rows, s.dim});
        op_layer_norm(be(), tx, tw, tb, 1e-5f, ty);
        check(host(ty), ref::layer_norm(x.data(), w.data(), b.data(), s.rows, s.dim, 1e-5), Kind::Reduction,
              "layer_norm");
      }
    }
}

// ---- element-wise -----------------------------------------------------------------------------------------

TEST_P(OpsTest, Add) {
  uint32_t seed = 4000;
  for (int64_t n : kPointwiseSizes)
    for (int alias = 0; alias < 4; ++alias) {  // y apart, y = a, y = b, y = a = b
      SCOPED_TRACE(testing::Message() << "n " << n << " alias " << alias);
      const Vec a = act_values(n, ++seed, 4.0f), b = alias == 3 ? a : act_values(n, ++seed, 4.0f);
      Tensor ta = activation(a, {n}), tb = alias == 3 ? ta : activation(b, {n});
      Tensor ty = alias == 0 ? be().empty({n}) : alias == 2 ? tb : ta;
      op_add(be(), ta, tb, ty);
      check(host(ty), ref::add(a.data(), b.data(), n), Kind::Elementwise, "add");
    }
}

TEST_P(OpsTest, Scale) {
  uint32_t seed = 5000;
  for (float s : {0.125f, 1.0f / std::sqrt(128.0f), -3.7f})
    check_in_place(
        seed += 10, 4.0f, [&](Tensor& x) { op_scale(be(), x, s); },
        [&](const float* x, int64_t n) { return ref::scale(x, s, n); }, "scale by " + std::to_string(s));
}

TEST_P(OpsTest, SiluMul) {
  uint32_t seed = 6000;
  for (int64_t n : kPointwiseSizes)
    for (int alias = 0; alias < 3; ++alias) {  // y apart, y = gate, y = up
      SCOPED_TRACE(testing::Message() << "n " << n << " alias " << alias);
      const Vec gate = act_values(n, ++seed, 8.0f), up = act_values(n, ++seed, 3.0f);
      Tensor tg = activation(gate, {n}), tu = activation(up, {n});
      Tensor ty = alias == 0 ? be().empty({n}) : alias == 1 ? tg : tu;
      op_silu_mul(be(), tg, tu, ty);
      // Below f32 SiLU's output is rounded before the multiply, as upstream's act_fn(w1(x)) * w3(x) is.
      const Vec lowp = test::rounded(test::to_f32(ref::silu_mul(gate.data(), up.data(), n, act())), act());
      check(host(ty), ref::silu_mul(gate.data(), up.data(), n), Kind::Elementwise, "silu_mul", &lowp);
    }
}

TEST_P(OpsTest, GeluErf) {
  check_in_place(7000, 8.0f, [&](Tensor& x) { op_gelu_erf(be(), x); }, ref::gelu_erf, "gelu_erf");
}

TEST_P(OpsTest, QuickGelu) {
  check_in_place(8000, 8.0f, [&](Tensor& x) { op_quick_gelu(be(), x); }, ref::quick_gelu, "quick_gelu");
}

// ---- gathers and re-layouts (exact) -------------------------------------------------------------------------

TEST_P(OpsTest, Embedding) {
  struct Case {
    int64_t vocab, dim;
    std::vector<int32_t> ids;
  };
  const Case cases[] = {{1000, 96, {0, 999, 5, 5, 123, 1}}, {50, 4096, {49, 0, 7}}, {17, 13, {16}}};
  uint32_t seed = 9000;
  for (DType tdt : kWeightDtypes)
    for (const Case& c : cases) {
      SCOPED_TRACE(testing::Message() << "vocab " << c.vocab << " dim " << c.dim << " table " << dtype_name(tdt));
      const Vec table = weight_values(c.vocab * c.dim, ++seed, tdt, 2.0f);
      Tensor tt = weight(table, {c.vocab, c.dim}, tdt), ty = be().empty({static_cast<int64_t>(c.ids.size()), c.dim});
      op_embedding(be(), tt, c.ids, ty);
      check(host(ty), ref::embedding(table.data(), c.dim, c.ids), Kind::Exact, "embedding");
    }
}

struct QkvCase {
  int64_t tokens;
  Heads h;
};
// G = 2, XC2's 32 / 8 of 128, G = 1, G = 8, and a ViT-sized head.
const QkvCase kQkvCases[] = {{5, {4, 2, 64}}, {3, {32, 8, 128}}, {2, {4, 4, 64}}, {7, {8, 1, 64}}, {1, {16, 4, 64}}};

int64_t qkv_row(const Heads& h) { return (h.n_heads + 2 * h.n_kv_heads) * h.head_dim; }

TEST_P(OpsTest, SplitQkvIntoCacheRows) {
  uint32_t seed = 10000;
  for (const QkvCase& c : kQkvCases) {
    const Heads& h = c.h;
    SCOPED_TRACE(testing::Message() << "T " << c.tokens << " heads " << h.n_heads << "/" << h.n_kv_heads << " d "
                                    << h.head_dim);
    const int64_t T = c.tokens, row0 = 3, cap = T + 5;
    const Vec qkv = act_values(T * qkv_row(h), ++seed, 2.0f);
    Tensor tqkv = activation(qkv, {T, qkv_row(h)}), q = be().empty({T, h.n_heads, h.head_dim});
    Tensor kc = filled({cap, h.n_kv_heads, h.head_dim}, 7.0f), vc = filled({cap, h.n_kv_heads, h.head_dim}, 7.0f);
    Tensor k = kc.rows(row0, T), v = vc.rows(row0, T);  // KV-cache row views
    op_split_qkv(be(), tqkv, h, q, k, v);
    const ref::Qkv want = ref::split_qkv(qkv.data(), T, h.n_heads, h.n_kv_heads, h.head_dim);
    check(host(q), want.q, Kind::Exact, "q");
    check(host(k), want.k, Kind::Exact, "k");
    check(host(v), want.v, Kind::Exact, "v");
    expect_rows_untouched(kc, row0, T, 7.0f, "k cache");
    expect_rows_untouched(vc, row0, T, 7.0f, "v cache");
  }
}

TEST_P(OpsTest, Im2colPatches) {
  struct Case {
    int64_t n_images, size, patch;
  };
  // ViT-L/14 patches (a 224-pixel image: 16 x 16), a size that is not a multiple of the patch, small odd ones.
  const Case cases[] = {{1, 28, 14}, {2, 42, 14}, {3, 12, 4}, {1, 30, 14}, {1, 224, 14}};
  uint32_t seed = 11000;
  for (const Case& c : cases) {
    SCOPED_TRACE(testing::Message() << c.n_images << " images of " << c.size << " patch " << c.patch);
    const int64_t g = c.size / c.patch;
    const Vec px = act_values(c.n_images * 3 * c.size * c.size, ++seed, 2.0f);
    Tensor tp = activation(px, {c.n_images, 3, c.size, c.size});
    Tensor cols = be().empty({c.n_images * g * g, 3 * c.patch * c.patch});
    op_im2col_patches(be(), tp, c.patch, cols);
    check(host(cols), ref::im2col_patches(px.data(), c.n_images, c.size, c.patch), Kind::Exact, "im2col_patches");
  }
}

// ---- RoPE -------------------------------------------------------------------------------------------------

struct RopeCase {
  int64_t tokens, n_heads, head_dim, pos0;
  double theta;
};
const RopeCase kRopeCases[] = {
    {1, 32, 128, 1299, 1e6},  // decode, XC2 query heads
    {17, 8, 128, 0, 1e6},     // prefill, XC2 KV heads
    {33, 4, 64, 17, 1e4},     // head_dim 64, another base
    {7, 2, 128, 5000, 1e6},
    {3, 8, 128, 40000, ref::ntk_theta(1e6, 40003, 32768, 128)},  // dynamic NTK past 32768 positions
    {5, 3, 64, 1, 5e5},
};

TEST_P(OpsTest, Rope) {
  uint32_t seed = 12000;
  for (const RopeCase& c : kRopeCases) {
    SCOPED_TRACE(testing::Message() << "T " << c.tokens << " heads " << c.n_heads << " d " << c.head_dim << " pos0 "
                                    << c.pos0 << " theta " << c.theta);
    const int64_t row = c.n_heads * c.head_dim;
    const Vec x = act_values(c.tokens * row, ++seed, 2.0f);
    // x as rows 1 .. T of a larger buffer (as the model rotates k rows of a KV cache).
    Tensor buf = filled({c.tokens + 2, c.n_heads, c.head_dim}, 5.0f);
    Tensor tx = buf.rows(1, c.tokens), src = activation(x, {c.tokens, c.n_heads, c.head_dim});
    be().copy(src, tx);
    op_rope(be(), tx, c.n_heads, c.head_dim, c.pos0, c.theta);
    check(row_range(host(buf), row, 1, c.tokens), ref::rope(x.data(), c.tokens, c.n_heads, c.head_dim, c.pos0, c.theta),
          Kind::Elementwise, "rope");
    expect_rows_untouched(buf, 1, c.tokens, 5.0f, "rope buffer");
  }
}

// ---- attention ----------------------------------------------------------------------------------------------

struct AttnCase {
  int64_t n_q, n_kv;
  Heads h;
  int64_t q_pos0;
  bool causal;
};
const AttnCase kAttnCases[] = {
    {1, 1, {2, 1, 128}, 0, true},       // first decode step
    {1, 37, {32, 8, 128}, 36, true},    // decode, XC2 heads (G = 4)
    {7, 7, {4, 4, 64}, 0, true},        // G = 1 prefill
    {17, 17, {16, 16, 64}, 0, false},   // ViT-like, bidirectional
    {5, 40, {8, 1, 64}, 35, true},      // G = 8, a chunk after a past
    {20, 50, {8, 1, 128}, 30, true},    // G = 8, 20 queries (CUDA tensor-core path) after a past
    {33, 33, {32, 8, 128}, 0, true},    // XC2 heads, prefill
    {9, 30, {4, 1, 64}, 0, false},      // bidirectional over a longer KV
    {4, 30, {4, 1, 64}, 10, true},      // causal queries at 10 .. 13 with keys past them
    {70, 70, {4, 2, 64}, 0, true},      // two query tiles, odd
};

TEST_P(OpsTest, Attention) {
  uint32_t seed = 13000;
  for (const AttnCase& c : kAttnCases) {
    const Heads& h = c.h;
    SCOPED_TRACE(testing::Message() << "n_q " << c.n_q << " n_kv " << c.n_kv << " heads " << h.n_heads << "/"
                                    << h.n_kv_heads << " d " << h.head_dim << " q_pos0 " << c.q_pos0
                                    << (c.causal ? " causal" : ""));
    const int64_t kv_row = h.n_kv_heads * h.head_dim, cap = c.n_kv + 3;
    const float scale = 1.0f / std::sqrt(static_cast<float>(h.head_dim));
    const Vec q = act_values(c.n_q * h.n_heads * h.head_dim, ++seed, 2.0f);
    const Vec k = act_values(c.n_kv * kv_row, ++seed, 2.0f), v = act_values(c.n_kv * kv_row, ++seed);
    // k, v: caches of `cap` rows; the rows past n_kv hold NaN, which must not be read.
    Tensor tq = activation(q, {c.n_q, h.n_heads, h.head_dim});
    Tensor tk = nan_padded_cache(k, cap, h), tv = nan_padded_cache(v, cap, h);
    Tensor out = be().empty({c.n_q, h.n_heads * h.head_dim});
    op_attention(be(), tq, tk, tv, c.n_kv, h, c.q_pos0, c.causal, scale, out);
    check_attention(host(out), q, k, v, c.n_kv, h, c.q_pos0, c.causal, scale, "attention");
  }
}

INSTANTIATE_TEST_SUITE_P(Cpu, OpsTest, testing::Values(DeviceParam{Device::Cpu, DType::F32}), param_name);
INSTANTIATE_TEST_SUITE_P(Cuda, OpsTest,
                         testing::Values(DeviceParam{Device::Cuda, DType::F32}, DeviceParam{Device::Cuda, DType::BF16},
                                         DeviceParam{Device::Cuda, DType::F16}),
                         param_name);

// ---- ids and positions in an IntBuffer -------------------------------------------------------------------

class OpsPositionsTest : public OpsTest {
 protected:
  IntBuffer ints(const std::vector<int32_t>& values) {
    IntBuffer b = be().ints(static_cast<int64_t>(values.size()));
    be().write_ints(b, values);
    return b;
  }
};

TEST_P(OpsPositionsTest, EmbeddingAt) {
  uint32_t seed = 20000;
  for (DType tdt : kWeightDtypes) {
    SCOPED_TRACE(dtype_name(tdt));
    const int64_t vocab = 50, dim = 96;
    const std::vector<int32_t> ids = {7, 0, 49, 7, 3};  // y takes the first 4
    const Vec table = weight_values(vocab * dim, ++seed, tdt, 2.0f);
    Tensor tt = weight(table, {vocab, dim}, tdt), y = be().empty({4, dim});
    op_embedding_at(be(), tt, ints(ids), y);
    check(host(y), ref::embedding(table.data(), dim, {ids.begin(), ids.begin() + 4}), Kind::Exact, "embedding_at");
  }
}

TEST_P(OpsPositionsTest, SplitQkvAt) {
  uint32_t seed = 21000;
  for (const QkvCase& c : kQkvCases) {
    const Heads& h = c.h;
    SCOPED_TRACE(testing::Message() << "T " << c.tokens << " heads " << h.n_heads << "/" << h.n_kv_heads);
    const int64_t T = c.tokens, pos = 4, cap = pos + T + 3;
    const Vec qkv = act_values(T * qkv_row(h), ++seed, 2.0f);
    Tensor tqkv = activation(qkv, {T, qkv_row(h)}), q = be().empty({T, h.n_heads, h.head_dim});
    Tensor kc = filled({cap, h.n_kv_heads, h.head_dim}, 7.0f), vc = filled({cap, h.n_kv_heads, h.head_dim}, 7.0f);
    op_split_qkv_at(be(), tqkv, h, q, kc, vc, ints({static_cast<int32_t>(pos)}));
    const ref::Qkv want = ref::split_qkv(qkv.data(), T, h.n_heads, h.n_kv_heads, h.head_dim);
    const int64_t kv_row = h.n_kv_heads * h.head_dim;
    check(host(q), want.q, Kind::Exact, "q");
    check(row_range(host(kc), kv_row, pos, T), want.k, Kind::Exact, "k cache rows at pos");
    check(row_range(host(vc), kv_row, pos, T), want.v, Kind::Exact, "v cache rows at pos");
    expect_rows_untouched(kc, pos, T, 7.0f, "k cache");
    expect_rows_untouched(vc, pos, T, 7.0f, "v cache");
  }
}

TEST_P(OpsPositionsTest, RopeAt) {
  uint32_t seed = 22000;
  for (const RopeCase& c : kRopeCases) {
    for (bool rows_at_pos : {false, true}) {
      if (rows_at_pos && c.pos0 > 10000) continue;  // a cache of pos0 rows: kept small
      SCOPED_TRACE(testing::Message() << "T " << c.tokens << " heads " << c.n_heads << " d " << c.head_dim << " pos "
                                      << c.pos0 << " theta " << c.theta << (rows_at_pos ? " rows at pos" : ""));
      const int64_t row = c.n_heads * c.head_dim, max_positions = c.pos0 + c.tokens + 2;
      const Vec x = act_values(c.tokens * row, ++seed, 2.0f);
      const std::vector<double> want = ref::rope(x.data(), c.tokens, c.n_heads, c.head_dim, c.pos0, c.theta);
      const IntBuffer pos = ints({static_cast<int32_t>(c.pos0)});
      if (rows_at_pos) {
        // x is a whole cache: token t is row pos0 + t.
        Tensor cache = filled({max_positions, c.n_heads, c.head_dim}, 5.0f);
        Tensor rows = cache.rows(c.pos0, c.tokens), src = activation(x, {c.tokens, c.n_heads, c.head_dim});
        be().copy(src, rows);
        op_rope_at(be(), cache, c.tokens, c.n_heads, c.head_dim, pos, true, c.theta, max_positions);
        check(row_range(host(cache), row, c.pos0, c.tokens), want, Kind::Elementwise, "rope_at on cache rows");
        expect_rows_untouched(cache, c.pos0, c.tokens, 5.0f, "cache");
      } else {
        Tensor tx = activation(x, {c.tokens, c.n_heads, c.head_dim});
        op_rope_at(be(), tx, c.tokens, c.n_heads, c.head_dim, pos, false, c.theta, max_positions);
        check(host(tx), want, Kind::Elementwise, "rope_at");
      }
    }
  }
}

TEST_P(OpsPositionsTest, AttentionAt) {
  // Causal attention of T queries at positions pos .. pos + T - 1 over cache rows [0, pos + T); the cache
  // rows past pos + T hold NaN.
  struct Case {
    int64_t tokens, pos;
    Heads h;
  };
  const Case cases[] = {{1, 0, {2, 1, 128}},   {1, 36, {32, 8, 128}}, {3, 40, {8, 1, 64}},
                        {1, 100, {16, 16, 64}}, {5, 7, {4, 2, 128}}};
  uint32_t seed = 23000;
  for (const Case& c : cases) {
    const Heads& h = c.h;
    SCOPED_TRACE(testing::Message() << "T " << c.tokens << " pos " << c.pos << " heads " << h.n_heads << "/"
                                    << h.n_kv_heads << " d " << h.head_dim);
    const int64_t n_kv = c.pos + c.tokens, cap = n_kv + 9, kv_row = h.n_kv_heads * h.head_dim;
    const float scale = 1.0f / std::sqrt(static_cast<float>(h.head_dim));
    const Vec q = act_values(c.tokens * h.n_heads * h.head_dim, ++seed, 2.0f);
    const Vec k = act_values(n_kv * kv_row, ++seed, 2.0f), v = act_values(n_kv * kv_row, ++seed);
    Tensor tq = activation(q, {c.tokens, h.n_heads, h.head_dim});
    Tensor tk = nan_padded_cache(k, cap, h), tv = nan_padded_cache(v, cap, h);
    Tensor out = be().empty({c.tokens, h.n_heads * h.head_dim});
    op_attention_at(be(), tq, tk, tv, h, ints({static_cast<int32_t>(c.pos)}), scale, out);
    check_attention(host(out), q, k, v, n_kv, h, c.pos, true, scale, "attention_at");
  }
}

INSTANTIATE_TEST_SUITE_P(Cpu, OpsPositionsTest, testing::Values(DeviceParam{Device::Cpu, DType::F32}), param_name);
INSTANTIATE_TEST_SUITE_P(Cuda, OpsPositionsTest,
                         testing::Values(DeviceParam{Device::Cuda, DType::F32}, DeviceParam{Device::Cuda, DType::BF16},
                                         DeviceParam{Device::Cuda, DType::F16}),
                         param_name);

}  // namespace
}  // namespace xc2
