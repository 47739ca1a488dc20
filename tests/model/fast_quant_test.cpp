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

#include "cpu/qgemm.h"
#include "io/checkpoint.h"
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

}  // namespace
}  // namespace xc2
