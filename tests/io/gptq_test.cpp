// GPTQ settings and tensor validation (io/gptq.h): a valid quantized linear, then hostile variants (shapes off by
// one, g_idx out of range, wrong dtypes, missing tensors, unsupported settings), each a clear error naming the
// tensor or file. Oracle: small safetensors files written here.
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "io/checkpoint.h"
#include "io/gptq.h"
#include "io/io_test_util.h"
#include "io/weight_store.h"
#include "support/test_util.h"

namespace xc2::io {
namespace {

using iotest::pattern_bytes;
using iotest::StTensor;

const std::string kBase = "model.layers.0.attention.wo";
constexpr int64_t kN = 16, kK = 64;

std::string i32_bytes(const std::vector<int32_t>& v) { return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4); }

// A 4-bit, group-size-32 linear [16, 64]: qweight [8, 16], qzeros [2, 2], scales [2, 16], g_idx [64].
std::vector<StTensor> linear_tensors() {
  std::vector<int32_t> g(kK);
  for (int64_t i = 0; i < kK; ++i) g[static_cast<size_t>(i)] = static_cast<int32_t>(i / 32);
  return {{kBase + ".qweight", "I32", {8, kN}, pattern_bytes(8 * kN * 4)},
          {kBase + ".qzeros", "I32", {2, 2}, pattern_bytes(2 * 2 * 4)},
          {kBase + ".scales", "F16", {2, kN}, std::string(2 * kN * 2, '\x3c')},
          {kBase + ".g_idx", "I32", {kK}, i32_bytes(g)}};
}

GptqConfig config4() {
  GptqConfig c;
  c.bits = 4;
  c.group_size = 32;
  c.source = "test/config.json";
  return c;
}

class GptqTest : public ::testing::Test {
 protected:
  // Writes the tensors, opens them, and fetches the linear.
  GptqLinearViews load(const std::vector<StTensor>& ts, const GptqConfig& c = config4()) {
    const std::string path = dir_.file("model-" + std::to_string(n_++) + ".safetensors");
    test::write_bytes(path, iotest::make_safetensors(ts));
    ckpt_ = std::make_unique<Checkpoint>(Checkpoint::open_file(path));
    ws_ = std::make_unique<WeightStore>(*ckpt_, dir_.path());
    return get_gptq_linear(*ws_, kBase, kN, kK, c);
  }
  std::vector<StTensor> with(const std::string& part, StTensor t) {
    std::vector<StTensor> ts = linear_tensors();
    for (auto& x : ts)
      if (x.name == kBase + "." + part) x = std::move(t);
    return ts;
  }
  test::TempDir dir_;
  int n_ = 0;
  std::unique_ptr<Checkpoint> ckpt_;
  std::unique_ptr<WeightStore> ws_;
};

TEST_F(GptqTest, ValidLinear) {
  const GptqLinearViews v = load(linear_tensors());
  EXPECT_EQ(v.groups, 2);
  EXPECT_EQ(v.qweight->dtype, DType::I32);
  ASSERT_NE(v.g_idx, nullptr);
  EXPECT_EQ(v.bias, nullptr);
  ws_->check_all_used();
}

// The official 4-bit releases (internlm-xcomposer2-vl-7b-4bit) quantize the module `<linear>.linear`.
TEST_F(GptqTest, OfficialReleaseLinearInfix) {
  std::vector<StTensor> ts = linear_tensors();
  for (auto& t : ts) t.name = kBase + ".linear" + t.name.substr(kBase.size());
  const GptqLinearViews v = load(ts);
  EXPECT_EQ(v.base, kBase + ".linear");
  EXPECT_EQ(v.qweight->name, kBase + ".linear.qweight");
  EXPECT_TRUE(has_gptq_linear(*ckpt_, kBase));
  ws_->check_all_used();
  // Missing tensors are named with the prefix that was found.
  ts.erase(ts.begin() + 1);
  try {
    load(ts);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(kBase + ".linear.qzeros"), std::string::npos) << e.what();
  }
}

TEST_F(GptqTest, GIdxIsOptional) {
  std::vector<StTensor> ts = linear_tensors();
  ts.pop_back();
  EXPECT_EQ(load(ts).g_idx, nullptr);
}

TEST_F(GptqTest, QweightShapeDisagreeingWithTheConfig) {
  EXPECT_XC2_ERROR(load(with("qweight", {kBase + ".qweight", "I32", {9, kN}, pattern_bytes(9 * kN * 4)})), ShapeMismatch,
                   "tensor 'model.layers.0.attention.wo.qweight' in model-0.safetensors has shape [9, 16], expected [8, 16]");
  GptqConfig c8 = config4();
  c8.bits = 8;  // the same file read as 8-bit: qweight should be [16, 16]
  EXPECT_XC2_ERROR(load(linear_tensors(), c8), ShapeMismatch, "wo.qweight' in model-1.safetensors has shape [8, 16]");
}

TEST_F(GptqTest, PackedSizesOffByOne) {
  EXPECT_XC2_ERROR(load(with("qzeros", {kBase + ".qzeros", "I32", {2, 3}, pattern_bytes(2 * 3 * 4)})), ShapeMismatch,
                   "tensor 'model.layers.0.attention.wo.qzeros' in model-0.safetensors has shape [2, 3], expected [2, 2]");
  EXPECT_XC2_ERROR(load(with("scales", {kBase + ".scales", "F16", {3, kN}, pattern_bytes(3 * kN * 2)})), ShapeMismatch,
                   "wo.scales' in model-1.safetensors has shape [3, 16], expected [2, 16]");
  EXPECT_XC2_ERROR(load(with("g_idx", {kBase + ".g_idx", "I32", {kK - 1}, std::string((kK - 1) * 4, '\0')})),
                   ShapeMismatch, "wo.g_idx' in model-2.safetensors has shape [63], expected [64]");
}

TEST_F(GptqTest, GIdxOutOfRange) {
  std::vector<int32_t> g(kK, 0);
  g[40] = 2;
  EXPECT_XC2_ERROR(load(with("g_idx", {kBase + ".g_idx", "I32", {kK}, i32_bytes(g)})), ShapeMismatch,
                   "tensor 'model.layers.0.attention.wo.g_idx' in model-0.safetensors: entry 40 is 2, outside the 2 groups");
  g[40] = -1;
  EXPECT_XC2_ERROR(load(with("g_idx", {kBase + ".g_idx", "I32", {kK}, i32_bytes(g)})), ShapeMismatch, "entry 40 is -1");
}

TEST_F(GptqTest, WrongDtypes) {
  EXPECT_XC2_ERROR(load(with("qweight", {kBase + ".qweight", "F32", {8, kN}, pattern_bytes(8 * kN * 4)})),
                   ShapeMismatch, "wo.qweight' in model-0.safetensors has dtype F32, expected I32");
  EXPECT_XC2_ERROR(load(with("scales", {kBase + ".scales", "I32", {2, kN}, pattern_bytes(2 * kN * 4)})), ShapeMismatch,
                   "wo.scales' in model-1.safetensors has dtype I32, expected a float dtype");
}

TEST_F(GptqTest, MissingTensors) {
  for (const std::string part : {"qweight", "qzeros", "scales"}) {
    std::vector<StTensor> ts;
    for (auto& t : linear_tensors())
      if (t.name != kBase + "." + part) ts.push_back(t);
    EXPECT_XC2_ERROR(load(ts), NotFound, "tensor 'model.layers.0.attention.wo." + part + "' not found");
  }
}

TEST(GptqConfigTest, Settings) {
  EXPECT_FALSE(parse_gptq_config(R"({"hidden_size": 8})", "", "m").has_value());
  auto c = parse_gptq_config(R"({"quantization_config": {"bits": 8, "group_size": -1, "desc_act": true,
                               "sym": false, "quant_method": "gptq"}})", "", "m");
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->bits, 8);
  EXPECT_EQ(c->group_size, -1);
  EXPECT_TRUE(c->desc_act);
  EXPECT_FALSE(c->sym);
  EXPECT_EQ(c->source, "m/config.json");
  c = parse_gptq_config(R"({})", R"({"bits": 4, "group_size": 128, "desc_act": false, "sym": true})", "m");
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->group_size, 128);
  EXPECT_EQ(c->source, "m/quantize_config.json");
}

TEST(GptqConfigTest, OutputHead) {
  // 16-bit head unless lm_head; then the folder's bits, or those of a "dynamic" rule that matches "output".
  auto c = parse_gptq_config(R"({"quantization_config": {"bits": 4, "group_size": 32}})", "", "m");
  ASSERT_TRUE(c.has_value());
  EXPECT_FALSE(c->lm_head);
  c = parse_gptq_config(R"({"quantization_config": {"bits": 4, "group_size": 32, "lm_head": true}})", "", "m");
  ASSERT_TRUE(c.has_value());
  EXPECT_TRUE(c->lm_head);
  EXPECT_EQ(c->head().bits, 4);
  EXPECT_EQ(c->head().group_size, 32);
  c = parse_gptq_config(R"({"quantization_config": {"bits": 4, "group_size": 32, "lm_head": true,
                           "dynamic": {"-:^model\\.layers\\.0\\.": {}, "+:^output$": {"bits": 8, "group_size": 64}}}})",
                        "", "m");
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->bits, 4);
  EXPECT_EQ(c->head().bits, 8);
  EXPECT_EQ(c->head().group_size, 64);
  // A bare pattern matches from the start of the name, as re.match; "-:" leaves the head 16-bit.
  c = parse_gptq_config(R"({"quantization_config": {"bits": 4, "lm_head": true, "dynamic": {"out": {"bits": 8}}}})",
                        "", "m");
  EXPECT_EQ(c->head().bits, 8);
  c = parse_gptq_config(R"({"quantization_config": {"bits": 4, "lm_head": true, "dynamic": {"-:output": {}}}})",
                        "", "m");
  EXPECT_FALSE(c->lm_head);
  // '.', '.*', escapes and anchors, as re.match reads them.
  for (const char* key : {"+:out.ut", "+:.*put$", "+:^o.*", "+:output.*$"}) {
    SCOPED_TRACE(key);
    c = parse_gptq_config(std::string(R"({"quantization_config": {"bits": 4, "lm_head": true, "dynamic": {")") + key +
                              R"(": {"bits": 8}}}})",
                          "", "m");
    EXPECT_EQ(c->head().bits, 8);
  }
  for (const char* key : {"+:^outputs", "+:output.$", "+:^model\\\\.output", "+:outpu$"}) {
    SCOPED_TRACE(key);
    EXPECT_XC2_ERROR(parse_gptq_config(std::string(R"({"quantization_config": {"bits": 4, "lm_head": true, "dynamic": {")") +
                                           key + R"(": {"bits": 8}}}})",
                                       "", "m"),
                     Unsupported, "changes the bits or group size of other modules");
  }
}

TEST(GptqConfigTest, HostileSettings) {
  EXPECT_XC2_ERROR(parse_gptq_config(R"({"quantization_config": {"bits": 4, "lm_head": true,
                                        "dynamic": {"+:^output$": {"bits": 3}}}})", "", "m"),
                   Unsupported, "bits 3 for the output head is not supported");
  EXPECT_XC2_ERROR(parse_gptq_config(R"({"quantization_config": {"bits": 4, "lm_head": true,
                                        "dynamic": {"+:(output": {"bits": 8}}}})", "", "m"),
                   Unsupported, "\"dynamic\" rule \"+:(output\": xc2 reads rules made of module names");
  EXPECT_XC2_ERROR(parse_gptq_config(R"({"quantization_config": {"bits": 4,
                                        "dynamic": {"+:^model\\.layers\\.1\\.": {"bits": 8}}}})", "", "m"),
                   Unsupported, "changes the bits or group size of other modules than the output head");
  EXPECT_XC2_ERROR(parse_gptq_config(R"({"quantization_config": {"bits": 4, "dynamic": [1]}})", "", "m"), Io,
                   "\"dynamic\" is not an object");
  EXPECT_XC2_ERROR(parse_gptq_config(R"({"quantization_config": {"bits": 4, "lm_head": 1}})", "", "m"), Io,
                   "\"lm_head\" is not a boolean");
  EXPECT_XC2_ERROR(parse_gptq_config(R"({"quantization_config": {"bits": 3, "group_size": 128}})", "", "m"),
                   Unsupported, "m/config.json: bits 3 is not supported (xc2 reads 4 and 8)");
  EXPECT_XC2_ERROR(parse_gptq_config("", R"({"bits": 4, "group_size": 0})", "m"), Io,
                   "m/quantize_config.json: group_size 0 is invalid");
  EXPECT_XC2_ERROR(parse_gptq_config(R"({"quantization_config": {"bits": 4, "quant_method": "awq"}})", "", "m"),
                   Unsupported, "quant_method \"awq\" is not supported");
  EXPECT_XC2_ERROR(
      parse_gptq_config(R"({"quantization_config": {"bits": 4, "checkpoint_format": "gptq_v2"}})", "", "m"),
      Unsupported, "checkpoint_format \"gptq_v2\" is not supported");
  EXPECT_XC2_ERROR(parse_gptq_config(R"({"quantization_config": {"bits": "4"}})", "", "m"), Io,
                   "\"bits\" is not an integer");
  EXPECT_XC2_ERROR(parse_gptq_config("", "{not json", "m"), Io, "m/quantize_config.json: not valid JSON");
}

}  // namespace
}  // namespace xc2::io
