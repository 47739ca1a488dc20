// Image decoding, Pillow-exact resize and CLIP preprocessing. Oracle: tests/data/golden/images/
// (manifest.json, <stem>.rgb = PIL .convert('RGB'), <stem>_<W>x<H>.rgb = Pillow BICUBIC resize,
// preprocess.safetensors = torchvision ToTensor + Normalize), written by tools/reference/make_golden.py.
// Decode must equal Pillow byte for byte for every format, JPEG included (xc2 decodes JPEG with
// libjpeg-turbo, the library Pillow links, with Pillow's settings; the manifest's "loose" flag for the
// JPEG dates from an stb_image decoder and is no longer honoured). Resize and preprocessing are exact. A few small GIF/PNG cases below embed bytes and expectations checked
// once against Pillow 9.4.
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/test_util.h"
#include "vision/image.h"
#include "xc2/error.h"

namespace xc2::vision {
namespace {

using nlohmann::json;

std::string golden_path(const std::string& name) { return test::data_path("golden/images/" + name); }

const json& manifest() {
  static const json m = [] {
    const std::string text = test::read_file(golden_path("manifest.json"));
    return text.empty() ? json::object() : json::parse(text);
  }();
  return m;
}

Image golden_image(const std::string& rgb_file, int w, int h) {
  Image im;
  im.width = w;
  im.height = h;
  const std::string b = test::read_file(golden_path(rgb_file));
  EXPECT_EQ(b.size(), static_cast<size_t>(w) * h * 3) << rgb_file;
  im.rgb.assign(b.begin(), b.end());
  return im;
}

struct DiffStats {
  size_t n_diff = 0;
  int max_abs = 0;
  double mean_abs = 0;
  std::string first;
};

DiffStats diff(const std::vector<uint8_t>& got, const std::vector<uint8_t>& want, int width) {
  DiffStats s;
  double sum = 0;
  for (size_t i = 0; i < got.size() && i < want.size(); ++i) {
    const int d = std::abs(int{got[i]} - int{want[i]});
    sum += d;
    if (d == 0) continue;
    if (s.n_diff++ < 3) {
      const size_t px = i / 3;
      s.first += " (x " + std::to_string(px % width) + ", y " + std::to_string(px / width) + ", c " +
                 std::to_string(i % 3) + ": got " + std::to_string(got[i]) + " want " + std::to_string(want[i]) + ")";
    }
    if (d > s.max_abs) s.max_abs = d;
  }
  s.mean_abs = got.empty() ? 0 : sum / got.size();
  return s;
}

using test::catch_error;

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// ------------------------------------------------------------------------------------------------
// Golden images

TEST(ImageGolden, ManifestIsPresent) {
  ASSERT_TRUE(manifest().contains("images")) << "missing " << golden_path("manifest.json");
  EXPECT_GE(manifest()["images"].size(), 10u);
}

TEST(ImageGolden, DecodeMatchesPillow) {
  int exact = 0, jpeg = 0;
  for (const json& e : manifest().value("images", json::array())) {
    if (!e.value("decodable", false)) continue;
    const std::string file = e.at("file");
    SCOPED_TRACE(file);
    const Image got = load_image(test::data_path(file));
    const int w = e.at("width"), h = e.at("height");
    ASSERT_EQ(got.width, w);
    ASSERT_EQ(got.height, h);
    const Image want = golden_image(e.at("rgb"), w, h);
    ASSERT_EQ(got.rgb.size(), want.rgb.size());
    const DiffStats d = diff(got.rgb, want.rgb, w);
    EXPECT_EQ(d.n_diff, 0u) << "mode " << e.value("mode", "?") << ":" << d.first;
    ++exact;
    if (e.value("loose", false)) ++jpeg;
  }
  EXPECT_GE(exact, 9);  // PNG RGB/RGBA/L/P, BMP, GIF, lossless and lossy WebP, JPEG
  EXPECT_GE(jpeg, 1);
}

TEST(ImageGolden, ResizeMatchesPillowByteForByte) {
  int n_sizes = 0;
  size_t n_bytes = 0;
  for (const json& e : manifest().value("images", json::array())) {
    if (!e.value("decodable", false)) continue;
    const Image src = golden_image(e.at("rgb"), e.at("width"), e.at("height"));
    for (const json& r : e.at("resized")) {
      const int w = r.at("width"), h = r.at("height");
      SCOPED_TRACE(e.at("file").get<std::string>() + " -> " + std::to_string(w) + "x" + std::to_string(h));
      const Image want = golden_image(r.at("rgb"), w, h);
      const Image got = resize_bicubic(src, w, h);
      ASSERT_EQ(got.width, w);
      ASSERT_EQ(got.height, h);
      const DiffStats d = diff(got.rgb, want.rgb, w);
      EXPECT_EQ(d.n_diff, 0u) << d.first;
      ++n_sizes;
      n_bytes += want.rgb.size();
    }
  }
  EXPECT_GE(n_sizes, 30);
  RecordProperty("resized_bytes_compared", std::to_string(n_bytes));
}

TEST(ImageGolden, DecodeThenResizeMatchesPillowForLosslessFormats) {
  for (const json& e : manifest().value("images", json::array())) {
    if (!e.value("decodable", false) || e.value("loose", false)) continue;
    const Image src = load_image(test::data_path(e.at("file")));
    for (const json& r : e.at("resized")) {
      const int w = r.at("width"), h = r.at("height");
      const Image got = resize_bicubic(src, w, h);
      EXPECT_EQ(got.rgb, golden_image(r.at("rgb"), w, h).rgb) << e.at("file") << " -> " << w << "x" << h;
    }
  }
}

// Minimal safetensors reader for the F32 tensors of preprocess.safetensors.
std::vector<float> read_f32_tensor(const std::string& file, const std::string& name, std::vector<int64_t>* shape) {
  const std::string b = test::read_file(file);
  EXPECT_GE(b.size(), 8u);
  if (b.size() < 8) return {};
  uint64_t n = 0;
  std::memcpy(&n, b.data(), 8);
  const json header = json::parse(b.substr(8, n));
  const json& t = header.at(name);
  EXPECT_EQ(t.at("dtype"), "F32");
  *shape = t.at("shape").get<std::vector<int64_t>>();
  const size_t begin = t.at("data_offsets")[0], end = t.at("data_offsets")[1];
  std::vector<float> v((end - begin) / 4);
  std::memcpy(v.data(), b.data() + 8 + n + begin, end - begin);
  return v;
}

TEST(ImageGolden, PreprocessMatchesTorchvisionBitForBit) {
  const json& pre = manifest().value("preprocess", json::object());
  ASSERT_TRUE(pre.contains("tensors"));
  int checked = 0;
  for (const auto& [key, info] : pre.at("tensors").items()) {
    const std::string stem = info.at("image");
    const int size = info.at("size");
    std::string file;
    for (const json& e : manifest()["images"]) {
      if (e.at("stem") == stem) file = e.at("file");
    }
    ASSERT_FALSE(file.empty()) << stem;
    std::vector<int64_t> shape;
    const std::vector<float> want = read_f32_tensor(golden_path(pre.at("file")), key, &shape);
    ASSERT_EQ(shape, (std::vector<int64_t>{3, size, size}));
    const std::vector<float> got = preprocess_clip(load_image(test::data_path(file)), size);
    ASSERT_EQ(got.size(), want.size());
    size_t n_diff = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      uint32_t a, b;
      std::memcpy(&a, &got[i], 4);
      std::memcpy(&b, &want[i], 4);
      n_diff += a != b;
    }
    EXPECT_EQ(n_diff, 0u) << key;
    ++checked;
  }
  EXPECT_GE(checked, 2);
}

// ------------------------------------------------------------------------------------------------
// Preprocessing arithmetic

TEST(Preprocess, ConstantsAndOpOrderMatchTorchvision) {
  EXPECT_EQ(kClipMean[0], 0.48145466f);
  EXPECT_EQ(kClipMean[1], 0.4578275f);
  EXPECT_EQ(kClipMean[2], 0.40821073f);
  EXPECT_EQ(kClipStd[0], 0.26862954f);
  EXPECT_EQ(kClipStd[1], 0.26130258f);
  EXPECT_EQ(kClipStd[2], 0.27577711f);
  // A 1x1 image stays 1x1 at size 1 (no resize); values against torchvision 0.14 (ToTensor + Normalize),
  // as float32 bit patterns: x / 255 and (x - mean) / std are divisions, not reciprocal multiplies.
  struct Case {
    uint8_t v;
    uint32_t bits[3];
  };
  const Case cases[] = {
      {0, {0xbfe568dcu, 0xbfe044b8u, 0xbfbd77d8u}},
      {1, {0xbfe38a7fu, 0xbfde58f1u, 0xbfbba5e1u}},
      {128, {0x3d9c5620u, 0x3e2cf36bu, 0x3eae0dc4u}},
      {255, {0x3ff71541u, 0x4004cae5u, 0x40095660u}},
  };
  for (const Case& c : cases) {
    Image im;
    im.width = im.height = 1;
    im.rgb = {c.v, c.v, c.v};
    const std::vector<float> out = preprocess_clip(im, 1);
    ASSERT_EQ(out.size(), 3u);
    for (int ch = 0; ch < 3; ++ch) {
      uint32_t bits;
      std::memcpy(&bits, &out[ch], 4);
      EXPECT_EQ(bits, c.bits[ch]) << "value " << int{c.v} << " channel " << ch << " got " << out[ch];
    }
  }
}

TEST(Preprocess, LayoutIsChw) {
  Image im;
  im.width = 2;
  im.height = 1;
  im.rgb = {0, 128, 255, 255, 128, 0};
  const std::vector<float> out = preprocess_clip(im, 2);  // 2x1 -> 2x2: only the vertical axis changes
  ASSERT_EQ(out.size(), 12u);
  // Channel 0 plane: pixel (0,y) has R = 0, pixel (1,y) has R = 255.
  EXPECT_LT(out[0], 0.f);
  EXPECT_GT(out[1], 0.f);
  EXPECT_EQ(out[0], out[2]);
  EXPECT_EQ(out[1], out[3]);
  EXPECT_THROW(preprocess_clip(im, 0), Error);
}

// ------------------------------------------------------------------------------------------------
// Resize properties (beyond the goldens)

Image pattern(int w, int h) {
  Image im;
  im.width = w;
  im.height = h;
  im.rgb.resize(static_cast<size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      uint8_t* p = &im.rgb[(static_cast<size_t>(y) * w + x) * 3];
      p[0] = static_cast<uint8_t>(x * 37 + y * 11);
      p[1] = static_cast<uint8_t>((x ^ y) * 29);
      p[2] = static_cast<uint8_t>(((x / 3 + y / 2) % 2) * 255);
    }
  }
  return im;
}

TEST(Resize, SameSizeIsACopy) {
  const Image im = pattern(13, 7);
  const Image r = resize_bicubic(im, 13, 7);
  EXPECT_EQ(r.width, 13);
  EXPECT_EQ(r.height, 7);
  EXPECT_EQ(r.rgb, im.rgb);
}

TEST(Resize, ConstantImagesStayConstant) {
  // The fixed-point weights of every output pixel sum to 1 within rounding, so a flat image stays flat.
  for (const int v : {0, 1, 128, 254, 255}) {
    for (const auto& [w, h, ow, oh] : std::vector<std::array<int, 4>>{
             {1, 1, 490, 490}, {1, 1, 1, 1}, {640, 480, 224, 224}, {3, 1000, 224, 224}, {7, 5, 2, 9}}) {
      Image im;
      im.width = w;
      im.height = h;
      im.rgb.assign(static_cast<size_t>(w) * h * 3, static_cast<uint8_t>(v));
      const Image r = resize_bicubic(im, ow, oh);
      ASSERT_EQ(r.rgb.size(), static_cast<size_t>(ow) * oh * 3);
      for (const uint8_t b : r.rgb) ASSERT_EQ(int{b}, v) << w << "x" << h << " -> " << ow << "x" << oh;
    }
  }
}

TEST(Resize, OneAxisOnly) {
  // Only one pass runs when one size is unchanged: rows stay independent under a horizontal-only resize.
  const Image im = pattern(40, 3);
  const Image r = resize_bicubic(im, 17, 3);
  for (int y = 0; y < 3; ++y) {
    Image row;
    row.width = 40;
    row.height = 1;
    row.rgb.assign(im.rgb.begin() + y * 40 * 3, im.rgb.begin() + (y + 1) * 40 * 3);
    const Image rr = resize_bicubic(row, 17, 1);
    EXPECT_TRUE(std::equal(rr.rgb.begin(), rr.rgb.end(), r.rgb.begin() + y * 17 * 3)) << y;
  }
}

TEST(Resize, RejectsBadArguments) {
  const Image im = pattern(4, 4);
  EXPECT_EQ(catch_error([&] { resize_bicubic(im, 0, 4); }).code(), ErrorCode::InvalidArgument);
  EXPECT_EQ(catch_error([&] { resize_bicubic(im, 4, -1); }).code(), ErrorCode::InvalidArgument);
  EXPECT_EQ(catch_error([&] { resize_bicubic(Image{}, 4, 4); }).code(), ErrorCode::InvalidArgument);
  Image bad = im;
  bad.rgb.pop_back();
  EXPECT_EQ(catch_error([&] { resize_bicubic(bad, 4, 4); }).code(), ErrorCode::InvalidArgument);
}

// ------------------------------------------------------------------------------------------------
// Format details against Pillow 9.4 (bytes and expectations embedded)

// 8x8 logical screen, palette {(10,20,30), (200,100,50), (7,8,9), (250,240,230)}, background index 3;
// one 6x5 frame at (1,2) with index (x + 2y) % 4 and a Graphic Control Extension declaring index 2
// transparent.
std::vector<uint8_t> partial_gif(bool transparent) {
  std::vector<uint8_t> g = {'G', 'I', 'F', '8', '9', 'a', 8, 0, 8, 0, 0x87, 3, 0};
  const uint8_t pal[12] = {10, 20, 30, 200, 100, 50, 7, 8, 9, 250, 240, 230};
  g.insert(g.end(), pal, pal + 12);
  g.resize(13 + 768, 0);
  const uint8_t tail[] = {0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x02, 0x00, 0x2c, 0x01, 0x00, 0x02, 0x00, 0x06,
                          0x00, 0x05, 0x00, 0x00, 0x08, 0x12, 0x00, 0x01, 0x04, 0x10, 0x30, 0x40, 0x20, 0x41,
                          0x83, 0x05, 0x07, 0x26, 0x3c, 0xa8, 0x10, 0xa1, 0xc0, 0x80, 0x00, 0x3b};
  g.insert(g.end(), tail, tail + sizeof(tail));
  if (!transparent) g[13 + 768 + 3] = 0x00;
  return g;
}

TEST(ImageFormats, GifFirstFrameLikePillow) {
  // Pillow renders transparent pixels of the first frame with their palette colour and fills the rest of
  // the screen with palette[transparent index] (or palette[0] without one); stb_image alone would give
  // black and the background colour.
  const uint8_t pal[4][3] = {{10, 20, 30}, {200, 100, 50}, {7, 8, 9}, {250, 240, 230}};
  for (const bool transparent : {true, false}) {
    const std::vector<uint8_t> gif = partial_gif(transparent);
    const Image im = decode_image(gif.data(), gif.size(), "partial.gif");
    ASSERT_EQ(im.width, 8);
    ASSERT_EQ(im.height, 8);
    for (int y = 0; y < 8; ++y) {
      for (int x = 0; x < 8; ++x) {
        const bool inside = x >= 1 && x < 7 && y >= 2 && y < 7;
        const int idx = inside ? ((x - 1) + 2 * (y - 2)) % 4 : (transparent ? 2 : 0);
        const uint8_t* p = &im.rgb[(y * 8 + x) * 3];
        EXPECT_EQ(std::vector<uint8_t>(p, p + 3), std::vector<uint8_t>(pal[idx], pal[idx] + 3))
            << "transparent " << transparent << " x " << x << " y " << y;
      }
    }
  }
}

// 3x2 PNGs, 16 bits per sample: RGB, and greyscale with samples {0, 255, 256; 0x80ff, 0xff00, 0xffff}.
const uint8_t kPng16Rgb[] = {
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00,
    0x00, 0x03, 0x00, 0x00, 0x00, 0x02, 0x10, 0x02, 0x00, 0x00, 0x00, 0x42, 0x86, 0x2d, 0x0e, 0x00, 0x00, 0x00,
    0x23, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x15, 0xc8, 0x01, 0x0a, 0x00, 0x20, 0x0c, 0xc3, 0xc0, 0xdb, 0xcb,
    0xf5, 0xe5, 0xd6, 0x0e, 0x02, 0x21, 0xc1, 0x4d, 0x62, 0x31, 0xd5, 0x4b, 0x07, 0xa7, 0x69, 0x77, 0x06, 0x1f,
    0x67, 0x68, 0x11, 0x71, 0xfe, 0x15, 0xf3, 0x0b, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42,
    0x60, 0x82};
const uint8_t kPng16Grey[] = {
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00,
    0x00, 0x03, 0x00, 0x00, 0x00, 0x02, 0x10, 0x00, 0x00, 0x00, 0x00, 0xe8, 0x8f, 0xe5, 0x85, 0x00, 0x00, 0x00,
    0x16, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x60, 0x60, 0x60, 0xf8, 0xcf, 0xc8, 0xc0, 0xd0, 0xf0, 0xff,
    0x3f, 0xc3, 0xff, 0xff, 0x00, 0x19, 0x01, 0x05, 0x7d, 0xad, 0xca, 0x5e, 0x0e, 0x00, 0x00, 0x00, 0x00, 0x49,
    0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82};

TEST(ImageFormats, SixteenBitPngKeepsTheHighByte) {
  // Pillow 9.4 gives exactly this for 16-bit RGB (and RGBA, grey+alpha).
  const Image rgb = decode_image(kPng16Rgb, sizeof(kPng16Rgb), "rgb16.png");
  EXPECT_EQ(rgb.rgb, (std::vector<uint8_t>{0, 128, 255, 0, 255, 255, 1, 255, 254, 128, 0, 127, 255, 0, 0, 255, 1, 0}));
  // 16-bit greyscale: high byte, replicated. (Pillow 9.4 opens it as mode "I" and clamps to 255 instead,
  // giving {0, 255, 255, 255, 255, 255}: a deliberate, documented difference.)
  const Image grey = decode_image(kPng16Grey, sizeof(kPng16Grey), "grey16.png");
  EXPECT_EQ(grey.rgb, (std::vector<uint8_t>{0, 0, 0, 0, 0, 0, 1, 1, 1, 128, 128, 128, 255, 255, 255, 255, 255, 255}));
}

// ------------------------------------------------------------------------------------------------
// Errors

TEST(ImageErrors, MissingFileIsNotFound) {
  const std::string path = test::data_path("images/no_such_image.png");
  const Error e = catch_error([&] { load_image(path); });
  EXPECT_EQ(e.code(), ErrorCode::NotFound);
  EXPECT_TRUE(contains(e.what(), path)) << e.what();
}

TEST(ImageErrors, DirectoryIsIo) {
  const Error e = catch_error([] { load_image(test::data_path("images")); });
  EXPECT_EQ(e.code(), ErrorCode::Io);
}

TEST(ImageErrors, CorruptPngIsIoWithStbReason) {
  const std::string path = test::data_path("images/corrupt.png");
  const Error e = catch_error([&] { load_image(path); });
  EXPECT_EQ(e.code(), ErrorCode::Io);
  EXPECT_TRUE(contains(e.what(), "'" + path + "'")) << e.what();
  EXPECT_TRUE(contains(e.what(), "PNG")) << e.what();
}

TEST(ImageErrors, NotAnImageIsUnsupported) {
  const std::string path = test::data_path("images/not_an_image.png");
  const Error e = catch_error([&] { load_image(path); });
  EXPECT_EQ(e.code(), ErrorCode::Unsupported);
  EXPECT_EQ(std::string(e.what()),
            "'" + path + "': unsupported image format (xc2 reads PNG, JPEG, BMP, GIF and WebP)");
}

TEST(ImageErrors, OtherFormatsAreUnsupported) {
  test::TempDir dir;
  const std::pair<const char*, std::string> files[] = {
      {"x.tiff", std::string("II*\0\x08\0\0\0", 8) + std::string(64, '\0')},
      {"x.tif", std::string("MM\0*\0\0\0\x08", 8) + std::string(64, '\0')},
      {"x.psd", "8BPS" + std::string(64, '\0')},
      {"x.ppm", "P6\n2 2\n255\n" + std::string(12, '\x7f')},
      {"x.hdr", "#?RADIANCE\n"},
      {"x.ico", std::string("\0\0\1\0\1\0", 6) + std::string(64, '\0')},
      {"riff.webp", "RIFF\x10\0\0\0WAVEfmt "},
  };
  for (const auto& [name, bytes] : files) {
    test::write_bytes(dir.file(name), bytes);
    const Error e = catch_error([&] { load_image(dir.file(name)); });
    EXPECT_EQ(e.code(), ErrorCode::Unsupported) << name;
    EXPECT_EQ(std::string(e.what()),
              "'" + dir.file(name) + "': unsupported image format (xc2 reads PNG, JPEG, BMP, GIF and WebP)");
  }
}

TEST(ImageErrors, UnsupportedVariantsAreUnsupported) {
  // RLE8 BMP, 4x2 (Pillow reads it; stb_image does not).
  std::string bmp = std::string("BM\x3e\x04\0\0\0\0\0\0\x36\x04\0\0", 14);
  const int32_t info[] = {40, 4, 2};
  for (const int32_t v : info) bmp += std::string(reinterpret_cast<const char*>(&v), 4);
  bmp += std::string("\x01\0\x08\0\x01\0\0\0\x08\0\0\0", 12);  // planes, bpp 8, BI_RLE8, data size
  bmp += std::string(16, '\0') + std::string(1024, '\0') + std::string("\x04\x01\0\0\x04\0\0\x01", 8);
  Error e = catch_error([&] { decode_image(reinterpret_cast<const uint8_t*>(bmp.data()), bmp.size(), "rle.bmp"); });
  EXPECT_EQ(e.code(), ErrorCode::Unsupported) << e.what();
  EXPECT_EQ(std::string(e.what()), "'rle.bmp': RLE-compressed BMP is not supported");
  // Animated WebP: a VP8X header with the animation flag.
  std::string webp = std::string("RIFF\x16\0\0\0WEBPVP8X\x0a\0\0\0\x02\0\0\0\x07\0\0\x07\0\0", 30);
  webp += std::string("ANIM\x06\0\0\0\0\0\0\0\0\0", 14);
  e = catch_error([&] { decode_image(reinterpret_cast<const uint8_t*>(webp.data()), webp.size(), "anim.webp"); });
  EXPECT_EQ(e.code(), ErrorCode::Unsupported) << e.what();
  EXPECT_EQ(std::string(e.what()), "'anim.webp': animated WebP is not supported");
}

TEST(ImageErrors, EmptyFileIsIo) {
  test::TempDir dir;
  test::write_bytes(dir.file("empty.png"), "");
  const Error e = catch_error([&] { load_image(dir.file("empty.png")); });
  EXPECT_EQ(e.code(), ErrorCode::Io);
  EXPECT_TRUE(contains(e.what(), dir.file("empty.png"))) << e.what();
}

std::string png_header(uint32_t w, uint32_t h) {
  std::string s("\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR", 16);
  for (const uint32_t v : {w, h}) {
    s += static_cast<char>(v >> 24);
    s += static_cast<char>(v >> 16);
    s += static_cast<char>(v >> 8);
    s += static_cast<char>(v);
  }
  s += std::string("\x08\x02\0\0\0", 5);  // 8-bit RGB
  s += std::string("\0\0\0\0", 4);        // CRC (stb_image does not check it)
  return s + std::string(64, '\0');
}

TEST(ImageErrors, AbsurdDimensionsAreUnsupported) {
  for (const auto& [w, h] : std::vector<std::pair<uint32_t, uint32_t>>{{20000, 10}, {10, 16385}, {12000, 12000}}) {
    const std::string png = png_header(w, h);
    const Error e = catch_error(
        [&] { decode_image(reinterpret_cast<const uint8_t*>(png.data()), png.size(), "huge.png"); });
    EXPECT_EQ(e.code(), ErrorCode::Unsupported) << w << "x" << h << ": " << e.what();
    EXPECT_TRUE(contains(e.what(), "'huge.png'")) << e.what();
    EXPECT_TRUE(contains(e.what(), "too large")) << e.what();
  }
  // WebP (VP8L) header of a 16384 x 16384 lossless image: within the side limit, over 100 megapixels.
  std::string webp = std::string("RIFF\x1a\0\0\0WEBPVP8L\x0d\0\0\0\x2f", 21);
  const uint32_t bits = (16383u) | (16383u << 14);
  for (int i = 0; i < 4; ++i) webp += static_cast<char>((bits >> (8 * i)) & 0xff);
  webp += std::string(8, '\0');
  const Error e =
      catch_error([&] { decode_image(reinterpret_cast<const uint8_t*>(webp.data()), webp.size(), "huge.webp"); });
  EXPECT_EQ(e.code(), ErrorCode::Unsupported) << e.what();
  EXPECT_TRUE(contains(e.what(), "too large")) << e.what();
}

// Every prefix of a small file must raise an Error (never crash, never decode garbage); these suites
// also run under ASan + UBSan.
void expect_every_truncation_fails(const std::string& file, size_t allowed_tail = 0) {
  const std::string b = test::read_file(test::data_path("images/" + file));
  ASSERT_GT(b.size(), 16u) << file;
  size_t decoded = 0;
  for (size_t n = 0; n < b.size(); ++n) {
    // An exact-size heap copy, so that ASan sees any read past the end.
    const std::vector<uint8_t> prefix(b.begin(), b.begin() + n);
    try {
      decode_image(prefix.data(), prefix.size(), file);
      if (n + allowed_tail < b.size()) ADD_FAILURE() << file << ": prefix of " << n << " bytes decoded";
      ++decoded;
    } catch (const Error& e) {
      EXPECT_TRUE(e.code() == ErrorCode::Io || e.code() == ErrorCode::Unsupported) << e.what();
      EXPECT_TRUE(contains(e.what(), file)) << e.what();
    }
  }
  EXPECT_LE(decoded, allowed_tail) << file;
  EXPECT_NO_THROW(decode_image(reinterpret_cast<const uint8_t*>(b.data()), b.size(), file));
}

TEST(ImageErrors, EveryTruncationOfPngFails) {
  expect_every_truncation_fails("rgb_64x48.png");
  expect_every_truncation_fails("palette_30x30.png");
  expect_every_truncation_fails("gray_33x20.png");
}

TEST(ImageErrors, EveryTruncationOfWebpFails) {
  expect_every_truncation_fails("lossless_32x24.webp");
  expect_every_truncation_fails("lossy_32x24.webp");
}

TEST(ImageErrors, TruncatedJpegBmpGifFail) {
  expect_every_truncation_fails("photo_48x40.jpg");
  // BMP: the last row's padding byte may be missing (Pillow accepts that too).
  expect_every_truncation_fails("rgb_45x31.bmp", 1);
  // GIF: a file cut after the first frame's data decodes (only the first frame is read), one cut
  // inside it fails.
  const std::string gif = test::read_file(test::data_path("images/anim_24x18.gif"));
  std::vector<bool> ok(gif.size() + 1, false);
  for (size_t n = 0; n <= gif.size(); ++n) {
    const std::vector<uint8_t> prefix(gif.begin(), gif.begin() + n);
    try {
      decode_image(prefix.data(), prefix.size(), "anim_24x18.gif");
      ok[n] = true;
    } catch (const Error& e) {
      EXPECT_TRUE(contains(e.what(), "anim_24x18.gif")) << e.what();
    }
  }
  size_t first_ok = 0;
  while (first_ok <= gif.size() && !ok[first_ok]) ++first_ok;
  EXPECT_EQ(first_ok, 380u);  // the first frame's data ends with its terminator at byte 379
  for (size_t n = first_ok; n <= gif.size(); ++n) EXPECT_TRUE(ok[n]) << n;
  const Image full = decode_image(reinterpret_cast<const uint8_t*>(gif.data()), gif.size(), "anim_24x18.gif");
  const Image cut = decode_image(reinterpret_cast<const uint8_t*>(gif.data()), first_ok, "anim_24x18.gif");
  EXPECT_EQ(full.rgb, cut.rgb);
}

TEST(ImageErrors, CorruptedBytesNeverCrash) {
  // Flip bytes all over small files: each decode either succeeds or throws an xc2::Error.
  for (const std::string file : {"rgb_64x48.png", "lossy_32x24.webp", "lossless_32x24.webp", "photo_48x40.jpg",
                                 "anim_24x18.gif", "rgb_45x31.bmp", "palette_30x30.png"}) {
    const std::string orig = test::read_file(test::data_path("images/" + file));
    uint32_t state = 12345;
    for (int iter = 0; iter < 150; ++iter) {
      std::string b = orig;
      for (int k = 0; k < 1 + iter % 4; ++k) {
        state = state * 1103515245u + 12345u;
        const size_t pos = 8 + (state >> 8) % (b.size() - 8);
        b[pos] = static_cast<char>(b[pos] ^ (1 + (state >> 24) % 255));
      }
      const std::vector<uint8_t> bytes(b.begin(), b.end());
      try {
        const Image im = decode_image(bytes.data(), bytes.size(), file);
        EXPECT_EQ(im.rgb.size(), static_cast<size_t>(im.width) * im.height * 3);
      } catch (const Error&) {
      }
    }
  }
}

}  // namespace
}  // namespace xc2::vision
