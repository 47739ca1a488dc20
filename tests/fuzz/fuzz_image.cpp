// The image decoders through xc2's loader (PNG, JPEG, WebP, BMP, GIF: vision::decode_image), then the CLIP
// preprocessing of what decodes (small target size: the resize is exercised, not the time).
#include "fuzz_util.h"
#include "vision/image.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  xc2::fuzz::expect_only_xc2_errors([&] {
    const xc2::vision::Image im = xc2::vision::decode_image(data, size, "fuzz image");
    xc2::vision::preprocess_clip(im, 28);
  });
  return 0;
}
