// Partial LoRA touches image rows only (model-spec §7): with every Plora_A/Plora_B tensor zeroed, a
// text-only prompt gives bit-identical logits, and a prompt with an image does not.
// Oracle: the same engine on the unmodified checkpoint.
#include <gtest/gtest.h>

#include <filesystem>
#include <vector>

#include "io/checkpoint.h"
#include "support/test_util.h"
#include "xc2/engine.h"

namespace xc2 {
namespace {

namespace fs = std::filesystem;

// Writes a copy of `src` with all Partial-LoRA tensors set to zero.
void write_zeroed_plora_copy(const std::string& src, const std::string& dst, std::vector<std::vector<char>>& keep) {
  const io::Checkpoint ck = io::Checkpoint::open_dir(src);
  std::vector<io::TensorView> views;
  int zeroed = 0;
  for (io::TensorView v : ck.tensors()) {
    if (v.name.find(".Plora_") != std::string::npos) {
      keep.emplace_back(v.nbytes, 0);
      v.data = keep.back().data();
      ++zeroed;
    }
    views.push_back(v);
  }
  ASSERT_GT(zeroed, 0);
  io::write_safetensors_shards(views, dst, size_t{1} << 40);
  fs::copy_file(src + "/config.json", dst + "/config.json");
  fs::copy_file(src + "/tokenizer.model", dst + "/tokenizer.model");
}

std::unique_ptr<Engine> load(const std::string& dir) {
  EngineOptions o;
  o.model_dir = dir;
  o.device = DeviceChoice::Cpu;
  o.threads = 2;
  return Engine::load(o);
}

TEST(PloraTest, DeltaOnlyOnImageRows) {
  for (const std::string model : {"tiny-a", "tiny-b"}) {
    SCOPED_TRACE(model);
    test::TempDir tmp;
    std::vector<std::vector<char>> keep;
    const std::string src = test::data_path("models/" + model);
    write_zeroed_plora_copy(src, tmp.path(), keep);
    auto normal = load(src);
    auto zeroed = load(tmp.path());

    Request text;
    text.text = chat_prompt_text(default_system_prompt(), {}, "How many shapes are there?");
    text.style = PromptStyle::ChatText;
    const LogitsResult a = normal->logits(text), b = zeroed->logits(text);
    ASSERT_EQ(a.logits.size(), b.logits.size());
    EXPECT_EQ(a.logits, b.logits) << "text-only logits changed when the LoRA weights were zeroed";

    Request img;
    img.text = chat_prompt_text(default_system_prompt(), {}, place_image_markers("Describe the picture.", 1));
    img.style = PromptStyle::ChatImage;
    const std::string image = test::data_path("images/rgb_64x48.png");
    img.images = {normal->encode_image(image)};
    const LogitsResult c = normal->logits(img);
    img.images = {zeroed->encode_image(image)};
    const LogitsResult d = zeroed->logits(img);
    ASSERT_EQ(c.logits.size(), d.logits.size());
    // Rows before the image are text-only and causal: identical. From the image on they must differ.
    int64_t first_image_row = 0;
    while (c.tokens[static_cast<size_t>(first_image_row)] >= 0) ++first_image_row;
    const int64_t V = c.vocab_size;
    double max_before = 0, max_after = 0;
    for (int64_t i = 0; i < static_cast<int64_t>(c.logits.size()); ++i) {
      const double diff = std::abs(c.logits[static_cast<size_t>(i)] - d.logits[static_cast<size_t>(i)]);
      (i < first_image_row * V ? max_before : max_after) = std::max(i < first_image_row * V ? max_before : max_after, diff);
    }
    EXPECT_EQ(max_before, 0.0);
    EXPECT_GT(max_after, 1e-2) << "zeroing the LoRA weights did not change the logits of an image prompt";
  }
}

}  // namespace
}  // namespace xc2
