// Quantized folders through the engine. The default quantized path on CPUs with AVX2 (int8 activations,
// EngineOptions::exact_quant false; the kernel qlinear_int8_kernel() picks, XC2_QINT8 forces one: ctest also runs
// these with the AVX-VNNI and the plain AVX2 kernels, tests/CMakeLists.txt) against the exact path on the tiny
// GPTQ checkpoints: the logits of an image prompt and of a text prompt stay within the documented error
// (relative L2 about 1e-2), are not identical (the fast kernels really ran), and exact_quant gives the exact path
// back. The exact path itself is checked against the reference in tiny_model_test.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "core/half.h"
#include "cpu/qgemm.h"
#include "io/checkpoint.h"
#include "model/xcomposer2.h"
#include "support/test_util.h"
#include "xc2/engine.h"

namespace xc2 {
namespace {

std::vector<float> logits_of(const std::string& model, bool exact, bool image) {
  EngineOptions eo;
  eo.model_dir = test::data_path("models/" + model);
  eo.device = DeviceChoice::Cpu;
  eo.threads = 2;
  eo.exact_quant = exact;
  auto engine = Engine::load(eo);
  Request req;
  req.text = image ? "<ImageHere>What is in the picture? Describe the colours and the shapes."
                   : "Write a short poem about the sea, the wind and the sky.";
  if (image) req.images = engine->encode_images({test::data_path("images/rgb_64x48.png")});
  req.style = image ? PromptStyle::ChatImage : PromptStyle::ChatText;
  return engine->logits(req).logits;
}

double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
  double e = 0, r = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    e += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    r += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(e / r);
}

TEST(FastQuant, Int8ActivationsStayCloseToTheExactPath) {
  if (!kernels::cpu::qlinear_int8_supported()) GTEST_SKIP() << "no int8 kernel (needs AVX2): the exact path is the only one";
  std::printf("[ fast-quant ] int8 kernel: %s\n", kernels::cpu::qint8_kernel_name(kernels::cpu::qlinear_int8_kernel()));
  for (const std::string model : {"tiny-q4-g32", "tiny-q4-g32-act", "tiny-q4-pc-sym", "tiny-q8-g32-act", "tiny-q8-pc",
                                   "tiny-q4-g32-h8"}) {
    for (bool image : {false, true}) {
      SCOPED_TRACE(model + (image ? " image" : " text"));
      const std::vector<float> exact = logits_of(model, true, image);
      const std::vector<float> fast = logits_of(model, false, image);
      ASSERT_EQ(fast.size(), exact.size());
      const double err = rel_l2(fast, exact);
      std::printf("[ fast-quant ] %s %s: logits rel L2 vs exact %.3g\n", model.c_str(), image ? "image" : "text", err);
      EXPECT_GT(err, 0.0);
      EXPECT_LT(err, 3e-2);
    }
  }
}

// A copy of a tiny GPTQ folder with its quantized tensors named as the official 4-bit releases name them
// (`...attention.wqkv.linear.qweight`) gives exactly the same logits.
TEST(QuantFolders, OfficialLinearInfixLoadsTheSame) {
  const std::string src = test::data_path("models/tiny-q4-g32");
  test::TempDir dir;
  const io::Checkpoint ck = io::Checkpoint::open_dir(src);
  std::vector<io::TensorView> views = ck.tensors();
  int renamed = 0;
  for (io::TensorView& v : views) {
    for (const char* part : {".qweight", ".qzeros", ".scales", ".g_idx"}) {
      const std::string p = part;
      if (v.name.size() > p.size() && v.name.compare(v.name.size() - p.size(), p.size(), p) == 0) {
        v.name = v.name.substr(0, v.name.size() - p.size()) + ".linear" + p;
        ++renamed;
      }
    }
  }
  ASSERT_GT(renamed, 0);
  io::write_safetensors_shards(views, dir.path(), 0);
  io::copy_non_weight_files(src, dir.path());
  auto logits = [](const std::string& model) {
    EngineOptions eo;
    eo.model_dir = model;
    eo.device = DeviceChoice::Cpu;
    eo.threads = 2;
    eo.exact_quant = true;
    auto engine = Engine::load(eo);
    Request req;
    req.text = "Hello, who are you?";
    req.style = PromptStyle::ChatText;
    return engine->logits(req).logits;
  };
  EXPECT_EQ(logits(dir.path()), logits(src));
}

// The fast path runs the 16-bit PLoRA weights of a quantized model on the int8 kernels too: the backend rounds
// a [n, k] weight with k a multiple of 32 to 8 bits (none on the exact path, none for k = 8), its products stay
// within int8 rounding of the 16-bit ones; the tiny GPTQ model's Plora_A ([8, 128]) go to int8 on the fast path,
// its Plora_B ([out, 8]) stay 16-bit, and on the exact path every PLoRA weight stays 16-bit.
TEST(FastQuant, PloraWeightsGoToInt8OnTheFastPath) {
  if (!kernels::cpu::qlinear_int8_supported()) GTEST_SKIP() << "no int8 kernel (needs AVX2)";
  auto be = make_cpu_backend(2, CpuWeights::Mapped);
  auto view = [](std::vector<uint16_t>& data, int64_t n, int64_t k) {
    io::TensorView v;
    v.name = "w";
    v.dtype = DType::F16;
    v.shape = {n, k};
    v.data = data.data();
    v.nbytes = data.size() * 2;
    return v;
  };
  uint32_t seed = 1;
  auto rnd = [&seed] {
    seed = seed * 1664525u + 1013904223u;
    return static_cast<float>(seed >> 8) / 16777216.0f - 0.5f;
  };
  for (int64_t k : {32, 128, 8}) {
    SCOPED_TRACE(k);
    const int64_t n = 40, m = 7;
    std::vector<uint16_t> w(static_cast<size_t>(n * k));
    for (auto& h : w) h = f32_to_f16(rnd());
    std::vector<float> xh(static_cast<size_t>(m * k));
    for (float& v : xh) v = rnd();
    const io::TensorView wv = view(w, n, k);
    be->set_exact_quant(true);
    EXPECT_FALSE(be->quant_weight_int8(wv));
    be->set_exact_quant(false);
    const QuantWeight q = be->quant_weight_int8(wv);
    if (k % 32 != 0) {
      EXPECT_FALSE(q);
      continue;
    }
    ASSERT_TRUE(q);
    EXPECT_EQ(q.bits, 8);
    EXPECT_EQ(q.group_size, -1);  // one scale per row
    EXPECT_EQ(q.n, n);
    EXPECT_EQ(q.k, k);
    const Tensor x = be->from_host_f32(xh.data(), {m, k});
    Tensor y16 = be->empty({m, n}), y8 = be->empty({m, n});
    be->linear(x, be->weight(wv), nullptr, y16, false);
    be->linear_q(x, q, y8, false);
    std::vector<float> a(static_cast<size_t>(m * n)), b(a.size());
    be->to_host_f32(y16, a.data());
    be->to_host_f32(y8, b.data());
    const double err = rel_l2(b, a);
    std::printf("[ fast-quant ] PLoRA-like [%lld, %lld] weight in 8 bits, int8 x: rel L2 vs 16-bit %.3g\n",
                static_cast<long long>(n), static_cast<long long>(k), err);
    EXPECT_GT(err, 0.0);
    EXPECT_LT(err, 2e-2);
  }
  for (bool exact : {true, false}) {
    SCOPED_TRACE(exact ? "exact" : "fast");
    auto cpu = make_cpu_backend(2);
    cpu->set_exact_quant(exact);
    auto model = model::XComposer2::load(test::data_path("models/tiny-q4-g32"), *cpu);
    for (const model::DecoderLayer& L : model->layers())
      for (const model::PloraLinear* p : {&L.wqkv, &L.wo, &L.w1, &L.w3, &L.w2}) {
        EXPECT_EQ(static_cast<bool>(p->lora_a_q), !exact);
        EXPECT_EQ(p->lora_a.data != nullptr, exact);
        EXPECT_FALSE(p->lora_b_q);  // rank 8: no 32-column block
        EXPECT_NE(p->lora_b.data, nullptr);
        EXPECT_EQ(p->rank(), 8);
      }
  }
}

}  // namespace
}  // namespace xc2
