// Image files are checked before they are read (issue #14): only regular files (a FIFO or /dev/zero is
// never read), a size limit before any byte is read (a sparse 3 GB file is refused at once), a PNG over the
// side limit is "too large" like BMP and GIF, and a top-down BMP (negative height) decodes upright.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support/test_util.h"
#include "vision/image.h"
#include "xc2/error.h"

namespace xc2::vision {
namespace {

// The error a load gives: its code and message.
std::pair<ErrorCode, std::string> load_error(const std::string& path) {
  try {
    load_image(path);
  } catch (const Error& e) {
    return {e.code(), e.what()};
  }
  return {ErrorCode::Internal, "no error"};
}

TEST(ImageFileChecks, OnlyRegularFilesAreRead) {
  test::TempDir tmp;
  const std::string fifo = tmp.file("pipe.png");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  auto [code, msg] = load_error(fifo);  // would block forever if it were opened for a blocking read
  EXPECT_EQ(code, ErrorCode::Unsupported);
  EXPECT_NE(msg.find("not a regular file (a FIFO)"), std::string::npos) << msg;
  std::tie(code, msg) = load_error("/dev/zero");
  EXPECT_EQ(code, ErrorCode::Unsupported);
  EXPECT_NE(msg.find("not a regular file (a device)"), std::string::npos) << msg;
  std::tie(code, msg) = load_error(tmp.file("missing.png"));
  EXPECT_EQ(code, ErrorCode::NotFound);
  EXPECT_NE(msg.find("no such image file"), std::string::npos) << msg;
  std::tie(code, msg) = load_error(tmp.path());
  EXPECT_NE(msg.find("is a directory"), std::string::npos) << msg;
}

TEST(ImageFileChecks, HugeFileRefusedBeforeReading) {
  test::TempDir tmp;
  const std::string big = tmp.file("big.png");
  test::write_bytes(big, "");
  ASSERT_EQ(::truncate(big.c_str(), int64_t{3} << 30), 0);  // sparse: costs no disk
  const auto [code, msg] = load_error(big);
  EXPECT_EQ(code, ErrorCode::Unsupported);
  EXPECT_NE(msg.find("file is too large (3221225472 bytes"), std::string::npos) << msg;
}

uint32_t be(uint32_t v) { return __builtin_bswap32(v); }

TEST(ImageFileChecks, WidePngIsTooLarge) {
  // Signature + IHDR (20000 x 10) + IEND; the CRCs do not matter to the size check.
  std::string png("\x89PNG\r\n\x1a\n", 8);
  const uint32_t len = be(13), w = be(20000), h = be(10);
  png.append(reinterpret_cast<const char*>(&len), 4);
  png += "IHDR";
  png.append(reinterpret_cast<const char*>(&w), 4);
  png.append(reinterpret_cast<const char*>(&h), 4);
  png += std::string("\x08\x02\x00\x00\x00", 5) + std::string(4, '\0');
  png += std::string(4, '\0') + "IEND" + std::string(4, '\0');
  test::TempDir tmp;
  test::write_bytes(tmp.file("wide.png"), png);
  const auto [code, msg] = load_error(tmp.file("wide.png"));
  EXPECT_EQ(code, ErrorCode::Unsupported);
  EXPECT_NE(msg.find("image is too large (20000x10"), std::string::npos) << msg;
}

TEST(ImageFileChecks, TopDownBmpDecodesUpright) {
  const std::string src = test::read_file(test::data_path("images/rgb_45x31.bmp"));
  std::string b = src;
  uint32_t off = 0;
  int32_t w = 0, h = 0;
  uint16_t bpp = 0;
  std::memcpy(&off, b.data() + 10, 4);
  std::memcpy(&w, b.data() + 18, 4);
  std::memcpy(&h, b.data() + 22, 4);
  std::memcpy(&bpp, b.data() + 28, 2);
  ASSERT_GT(h, 0);
  const size_t stride = ((static_cast<size_t>(w) * bpp + 31) / 32) * 4;
  for (int32_t r = 0; r < h; ++r)
    std::memcpy(&b[off + static_cast<size_t>(r) * stride], src.data() + off + static_cast<size_t>(h - 1 - r) * stride,
                stride);
  const int32_t neg = -h;
  std::memcpy(&b[22], &neg, 4);
  test::TempDir tmp;
  test::write_bytes(tmp.file("topdown.bmp"), b);
  const Image up = load_image(test::data_path("images/rgb_45x31.bmp"));
  const Image down = load_image(tmp.file("topdown.bmp"));
  EXPECT_EQ(down.width, up.width);
  EXPECT_EQ(down.height, up.height);
  EXPECT_TRUE(down.rgb == up.rgb);
}

}  // namespace
}  // namespace xc2::vision
