// JPEG decoding equals Pillow's byte for byte (baseline, progressive, 4:4:4, greyscale, Adobe CMYK).
// Oracle: tests/data/images/jpeg/*.rgb, Pillow's .convert('RGB') (tools/reference/make_jpeg_goldens.py).
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "support/test_util.h"
#include "vision/image.h"
#include "xc2/error.h"

namespace xc2::vision {
namespace {

TEST(Jpeg, DecodeEqualsPillow) {
  const auto m = nlohmann::json::parse(test::read_file(test::data_path("images/jpeg/manifest.json")));
  int n = 0;
  for (const auto& e : m["images"]) {
    SCOPED_TRACE(e["file"].get<std::string>());
    const Image img = load_image(test::data_path("images/jpeg/" + e["file"].get<std::string>()));
    ASSERT_EQ(img.width, e["width"].get<int>());
    ASSERT_EQ(img.height, e["height"].get<int>());
    const std::string want = test::read_file(test::data_path("images/jpeg/" + e["rgb"].get<std::string>()));
    ASSERT_EQ(img.rgb.size(), want.size());
    size_t n_diff = 0;
    for (size_t i = 0; i < want.size(); ++i) n_diff += img.rgb[i] != static_cast<uint8_t>(want[i]);
    EXPECT_EQ(n_diff, 0u);
    ++n;
  }
  EXPECT_EQ(n, 5);
}

TEST(Jpeg, CorruptDataIsAnError) {
  std::string bytes = test::read_file(test::data_path("images/jpeg/baseline.jpg"));
  // Break the SOF marker's precision byte: libjpeg rejects the file.
  const size_t sof = bytes.find("\xff\xc0");
  ASSERT_NE(sof, std::string::npos);
  bytes[sof + 4] = 3;
  try {
    decode_image(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "bad.jpg");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.jpg"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace xc2::vision
