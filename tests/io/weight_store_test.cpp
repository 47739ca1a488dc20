// WeightStore: lookups, shape checks and the leftover-tensor check, with their exact messages.
// Oracle: a small checkpoint written here.
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "io/checkpoint.h"
#include "io/io_test_util.h"
#include "io/weight_store.h"
#include "support/test_util.h"

namespace xc2::io {
namespace {

using iotest::pattern_bytes;

class WeightStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::vector<iotest::StTensor> ts = {
        {"model.layers.3.attention.wqkv.Plora_B.weight", "BF16", {4096, 2}, pattern_bytes(4096 * 2 * 2)},
        {"model.norm.weight", "F32", {8}, pattern_bytes(32)}};
    for (int k = 0; k < 7; ++k) ts.push_back({"extra." + std::to_string(k), "F16", {1}, pattern_bytes(2)});
    test::write_bytes(dir_.file("model-00001-of-00002.safetensors"), iotest::make_safetensors(ts));
    ckpt_ = std::make_unique<Checkpoint>(Checkpoint::open_file(dir_.file("model-00001-of-00002.safetensors")));
  }
  test::TempDir dir_;
  std::unique_ptr<Checkpoint> ckpt_;
};

TEST_F(WeightStoreTest, GetChecksNameAndShape) {
  WeightStore ws(*ckpt_, "/models/xc2");
  const TensorView& t = ws.get("model.norm.weight", {8});
  EXPECT_EQ(t.dtype, DType::F32);
  EXPECT_EQ(&t, ckpt_->find("model.norm.weight"));
  EXPECT_XC2_ERROR(ws.get("model.layers.3.attention.wqkv.Plora_B.weight", {6144, 2}), ShapeMismatch,
                   "tensor 'model.layers.3.attention.wqkv.Plora_B.weight' in model-00001-of-00002.safetensors has "
                   "shape [4096, 2], expected [6144, 2]");
  EXPECT_XC2_ERROR(ws.get("model.norm.weight", {}), ShapeMismatch, "has shape [8], expected []");
  EXPECT_XC2_ERROR(ws.get("model.layers.3.attention.wqkv.Plora_A.weight", {256, 4096}), NotFound,
                   "tensor 'model.layers.3.attention.wqkv.Plora_A.weight' not found in '/models/xc2' (is this an "
                   "InternLM-XComposer2 folder?)");
  EXPECT_EQ(ws.get_optional("vit.vision_tower.vision_model.post_layernorm.weight", {1024}), nullptr);
  EXPECT_XC2_ERROR(ws.get_optional("model.norm.weight", {9}), ShapeMismatch, "expected [9]");
  EXPECT_EQ(&ws.checkpoint(), ckpt_.get());
}

TEST_F(WeightStoreTest, CheckAllUsed) {
  WeightStore ws(*ckpt_, "/models/xc2");
  ws.get("model.norm.weight", {8});
  EXPECT_XC2_ERROR(ws.check_all_used(), ShapeMismatch,
                   "'/models/xc2' holds 8 unexpected tensors (a checkpoint for another model or variant?): "
                   "'model.layers.3.attention.wqkv.Plora_B.weight' [4096, 2], 'extra.0' [1], 'extra.1' [1], "
                   "'extra.2' [1], 'extra.3' [1], ... (3 more)");
  // A failed shape check does not count as a use.
  EXPECT_ANY_THROW(ws.get("model.layers.3.attention.wqkv.Plora_B.weight", {1}));
  EXPECT_XC2_ERROR(ws.check_all_used(), ShapeMismatch, "holds 8 unexpected tensors");
  ws.get_optional("model.layers.3.attention.wqkv.Plora_B.weight", {4096, 2});
  for (int k = 0; k < 6; ++k) ws.ignore("extra." + std::to_string(k));
  ws.ignore("not.in.checkpoint");  // harmless
  EXPECT_XC2_ERROR(ws.check_all_used(), ShapeMismatch, "holds 1 unexpected tensor (a checkpoint for another model or "
                                                        "variant?): 'extra.6' [1]");
  ws.ignore("extra.6");
  EXPECT_NO_THROW(ws.check_all_used());
}

}  // namespace
}  // namespace xc2::io
