// Image loading and CLIP preprocessing (model-spec §8.5):
//   decode (stb_image: PNG, JPEG, BMP, GIF first frame; libwebp: WebP) -> RGB8, like PIL .convert('RGB')
//   resize to S x S exactly as Pillow's BICUBIC (a = -0.5, antialiased support, 22-bit fixed point,
//   horizontal pass first, uint8 intermediate), then /255 and (x - mean) / std per channel.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace xc2::vision {

struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;  // [height, width, 3], row-major
};

// Error{NotFound} for a missing file; Error{Unsupported} for a format xc2 cannot decode; Error{Io}
// for a truncated or corrupt file. Messages name the file.
Image load_image(const std::string& path);
Image decode_image(const uint8_t* data, size_t size, const std::string& name_for_errors);

// Pillow-exact Image.resize((out_w, out_h), Image.BICUBIC) for 8-bit RGB.
Image resize_bicubic(const Image& src, int out_w, int out_h);

extern const float kClipMean[3];
extern const float kClipStd[3];

// Resize to size x size, then ToTensor + Normalize: returns [3, size, size] float32 (CHW).
std::vector<float> preprocess_clip(const Image& image, int size);

}  // namespace xc2::vision
