// Image decoding, Pillow-exact bicubic resize and CLIP normalisation (model-spec §8.5).
//
// Decoding: the format is picked from the magic bytes (never the file name):
//   PNG, BMP, GIF        -> stb_image (Debian's libstb; this is the only file that includes it)
//   JPEG                 -> libjpeg-turbo (the library Pillow links), default ISLOW IDCT and fancy
//                           upsampling like Pillow, so decoded pixels are Pillow's bit for bit
//   WebP (RIFF....WEBP)  -> libwebp WebPDecodeRGBInto (the same library Pillow's _webp module uses)
// and the result is converted to RGB8 like PIL's `.convert('RGB')`: grey -> replicated, grey+alpha ->
// grey replicated, RGBA -> alpha dropped (no compositing), palette -> expanded.
//   - 16-bit PNGs keep the high byte of each sample (stb_image's 16 -> 8 rule). Pillow 9.4 does the
//     same for 16-bit RGB, RGBA and grey+alpha; for 16-bit *greyscale* Pillow opens mode "I" and its
//     I -> RGB conversion clamps the 16-bit value to 255 (a mostly white image), which xc2 does not copy.
//   - GIF: the first frame. Pillow renders the first frame's transparent pixels with their palette
//     colour while stb_image leaves them black, so the transparency flag of the first frame's Graphic
//     Control Extension is cleared (in a copy) before stb decodes it. Pixels outside a first frame that
//     does not cover the logical screen are filled like Pillow 9.4 does: palette[transparent index] if
//     the frame declares one, else palette[0].
//   - JPEG: greyscale is expanded to RGB by libjpeg (replication, as convert('RGB')); CMYK/YCCK is
//     decoded to CMYK, inverted when the file has an Adobe marker (Pillow's "CMYK;I" raw mode), then
//     converted with Pillow's cmyk2rgb. A file that ends early (libjpeg's "premature end" warning) is
//     an error, as in Pillow without LOAD_TRUNCATED_IMAGES; 12-bit JPEGs are Unsupported.
//   - No EXIF orientation is applied (neither does PIL.Image.open), no gamma or ICC handling.
//   - Animated WebP is rejected (Unsupported); the frame would need libwebpdemux compositing. So are
//     RLE-compressed BMPs, 12-bit JPEGs and other variants stb_image does not decode (Pillow reads them).
//   - Truncated files are errors (Io). stb_image reads zeros past the end of some formats, so before
//     decoding: a PNG must reach a complete IEND chunk (stricter than Pillow, which accepts a PNG cut
//     after its last IDAT), an uncompressed BMP must hold every pixel byte (Pillow's rule: the last row's
//     padding may be missing), a GIF's first frame must hold its data sub-blocks and their terminator
//     (Pillow accepts a missing terminator byte). libwebp and stb's JPEG decoder detect truncation.
//
// Resize: Pillow 9.4 `ImagingResample` with the BICUBIC filter for 8-bit images (libImaging/Resample.c):
//   per axis, scale = in/out, filterscale = max(scale, 1), support = 2 * filterscale;
//   output o: center = (o + 0.5) * scale, xmin = max(0, (int)(center - support + 0.5)),
//   xmax = min(in, (int)(center + support + 0.5)); w_x = k((x - center + 0.5) * (1 / filterscale)),
//   k = Keys cubic with a = -0.5, weights divided by their sum (double), then rounded to 22-bit fixed
//   point (round half away from zero); acc = 2^21 + sum(pixel * coeff) (int32), out = clamp(acc >> 22).
//   Horizontal pass first over the source rows the vertical pass needs, uint8 intermediate, then the
//   vertical pass; an axis whose size does not change is skipped.
//
// Preprocessing (torchvision ToTensor + Normalize): x = float(u8) / 255.0f; y = (x - mean) / std, all
// float32 divisions (not multiplications by reciprocals), CHW output.
#include "vision/image.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include <csetjmp>
#include <cstdio>

#include <jpeglib.h>
#include <jerror.h>
#include <stb_image.h>
#include <webp/decode.h>

#include "core/check.h"
#include "core/mmap_file.h"

namespace xc2::vision {

const float kClipMean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
const float kClipStd[3] = {0.26862954f, 0.26130258f, 0.27577711f};

namespace {

constexpr int kMaxSide = 16384;
constexpr int64_t kMaxPixels = 100'000'000;
constexpr int64_t kMaxFileBytes = int64_t{1} << 30;  // 1 GiB: far above any image within kMaxPixels

enum class Format { Png, Jpeg, Bmp, Gif, WebP, Unknown };

const char* format_name(Format f) {
  switch (f) {
    case Format::Png: return "PNG";
    case Format::Jpeg: return "JPEG";
    case Format::Bmp: return "BMP";
    case Format::Gif: return "GIF";
    case Format::WebP: return "WebP";
    case Format::Unknown: break;
  }
  return "unknown";
}

Format sniff(const uint8_t* d, size_t n) {
  static const uint8_t kPng[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
  if (n >= 8 && std::memcmp(d, kPng, 8) == 0) return Format::Png;
  if (n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF) return Format::Jpeg;
  if (n >= 6 && (std::memcmp(d, "GIF87a", 6) == 0 || std::memcmp(d, "GIF89a", 6) == 0)) return Format::Gif;
  if (n >= 2 && d[0] == 'B' && d[1] == 'M') return Format::Bmp;
  if (n >= 12 && std::memcmp(d, "RIFF", 4) == 0 && std::memcmp(d + 8, "WEBP", 4) == 0) return Format::WebP;
  return Format::Unknown;
}

[[noreturn]] void throw_unsupported_format(const std::string& name) {
  XC2_THROW(Unsupported, "'", name, "': unsupported image format (xc2 reads PNG, JPEG, BMP, GIF and WebP)");
}

void check_dimensions(const std::string& name, int w, int h) {
  XC2_CHECK(w > 0 && h > 0, Io, "'", name, "': invalid image size ", w, "x", h);
  XC2_CHECK(w <= kMaxSide && h <= kMaxSide && int64_t{w} * h <= kMaxPixels, Unsupported, "'", name,
            "': image is too large (", w, "x", h, "; xc2 accepts at most ", kMaxSide,
            " pixels per side and 100 megapixels)");
}

std::string stb_reason() {
  const char* r = stbi_failure_reason();
  return r != nullptr ? r : "unknown error";
}

// stb_image failures that mean "valid file, feature not supported" rather than corruption.
[[noreturn]] void throw_stb_failure(const std::string& name, Format fmt) {
  static const char* const kUnsupported[][2] = {
      {"BMP RLE", "RLE-compressed BMP is not supported"},
      {"BMP JPEG/PNG", "BMP with JPEG/PNG compression is not supported"},
      {"unknown BMP", "this BMP variant is not supported"},
      {"only 8-bit", "only 8-bit JPEG is supported"},
      {"no header height", "JPEG with a delayed height (DNL) is not supported"},
      {"1/2/4/8/16-bit only", "PNG bit depth not supported"},
      {"bad bits_per_channel", "PNG bit depth not supported"},
  };
  const std::string reason = stb_reason();
  for (const auto& u : kUnsupported) {
    if (reason == u[0]) XC2_THROW(Unsupported, "'", name, "': ", u[1]);
  }
  XC2_THROW(Io, "'", name, "': corrupt or truncated ", format_name(fmt), " (stb_image: ", reason, ")");
}

// --- GIF first-frame helpers -----------------------------------------------------------------------

struct GifFirstFrame {
  bool ok = false;           // the block structure up to the first image descriptor parsed
  int screen_w = 0, screen_h = 0;
  int left = 0, top = 0, w = 0, h = 0;  // first frame rectangle
  int transparent = -1;      // transparent index declared by the frame's GCE, or -1
  bool truncated = false;    // the data ends before the end of the first frame's data
  size_t gce_flags_at = 0;   // offset of the GCE packed byte (0: none)
  std::vector<uint8_t> palette;  // RGB triplets of the palette the frame uses (local, else global)
};

uint16_t le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }

// Walks the GIF blocks up to the end of the first frame's data. Never reads out of bounds; ok = false
// when the structure is not understood (stb then reports the real error), truncated = true when the
// data ends before the first frame's data is complete.
GifFirstFrame parse_gif_first_frame(const uint8_t* d, size_t n) {
  GifFirstFrame g;
  auto ran_out = [&g]() -> GifFirstFrame& {
    g.ok = false;
    g.truncated = true;
    return g;
  };
  if (n < 13) return ran_out();
  g.screen_w = le16(d + 6);
  g.screen_h = le16(d + 8);
  const uint8_t flags = d[10];
  size_t pos = 13;
  std::vector<uint8_t> global;
  if (flags & 0x80) {
    const size_t len = 3u << ((flags & 7) + 1);
    if (n < pos + len) return ran_out();
    global.assign(d + pos, d + pos + len);
    pos += len;
  }
  while (true) {
    if (pos >= n) return ran_out();
    const uint8_t tag = d[pos];
    if (tag == 0x21) {  // extension: label, then sub-blocks
      if (pos + 2 > n) return ran_out();
      const uint8_t label = d[pos + 1];
      size_t p = pos + 2;
      if (label == 0xF9 && p + 5 <= n && d[p] == 4) {
        g.gce_flags_at = p + 1;
        g.transparent = (d[p + 1] & 1) ? d[p + 4] : -1;
      }
      while (true) {
        if (p >= n) return ran_out();
        const size_t len = d[p];
        p += 1 + len;
        if (len == 0) break;
      }
      pos = p;
    } else if (tag == 0x2C) {  // image descriptor
      if (pos + 10 > n) return ran_out();
      g.left = le16(d + pos + 1);
      g.top = le16(d + pos + 3);
      g.w = le16(d + pos + 5);
      g.h = le16(d + pos + 7);
      const uint8_t iflags = d[pos + 9];
      size_t p = pos + 10;
      if (iflags & 0x80) {
        const size_t len = 3u << ((iflags & 7) + 1);
        if (n < p + len) return ran_out();
        g.palette.assign(d + p, d + p + len);
        p += len;
      } else {
        g.palette = global;
      }
      // Image data: LZW minimum code size, then sub-blocks up to a zero-length terminator.
      p += 1;
      while (true) {
        if (p >= n) return ran_out();
        const size_t len = d[p];
        if (len == 0) break;
        p += 1 + len;
      }
      g.ok = true;
      return g;
    } else {
      return g;  // trailer or garbage before the first frame
    }
  }
}

uint32_t be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}
uint32_t le32(const uint8_t* p) {
  return uint32_t{p[0]} | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24);
}

// stb_image decodes many truncated files without complaint (it reads zeros past the end), so files
// cut short are caught here first: a PNG must reach a complete IEND chunk; a BMP without RLE must hold
// every pixel byte (the last row's padding may be missing, as Pillow allows); a GIF's first frame must
// hold all its data sub-blocks and their terminator. Returns "" when complete, else the reason.
std::string truncation_reason(const uint8_t* d, size_t n, Format fmt) {
  if (fmt == Format::Png) {
    size_t pos = 8;
    while (true) {
      if (n < pos + 8) return "file ends before the IEND chunk";
      const uint64_t len = be32(d + pos);
      if (n < pos + 12 + len) return "file ends inside a chunk";
      if (std::memcmp(d + pos + 4, "IEND", 4) == 0) return "";
      pos += 12 + len;
    }
  }
  if (fmt == Format::Bmp) {
    if (n < 18) return "file ends inside the header";
    const uint32_t offset = le32(d + 10);
    const uint32_t header_size = le32(d + 14);
    if (n < 14 + static_cast<uint64_t>(header_size)) return "file ends inside the header";
    if (header_size < 40) return "";  // OS/2 headers: left to stb_image
    const int64_t w = static_cast<int32_t>(le32(d + 18));
    const int64_t h = static_cast<int32_t>(le32(d + 22));
    const uint32_t bpp = d[28] | (d[29] << 8);
    const uint32_t compression = le32(d + 30);
    if ((compression != 0 && compression != 3) || w <= 0 || h == 0 || bpp == 0 || w > kMaxSide) return "";
    const uint64_t row_bytes = (static_cast<uint64_t>(w) * bpp + 7) / 8;
    const uint64_t stride = (row_bytes + 3) & ~uint64_t{3};
    const uint64_t rows = static_cast<uint64_t>(h < 0 ? -h : h);
    if (rows > static_cast<uint64_t>(kMaxSide)) return "";
    if (n < offset + stride * (rows - 1) + row_bytes) return "file ends inside the pixel data";
    return "";
  }
  if (fmt == Format::Gif) {
    if (parse_gif_first_frame(d, n).truncated) return "file ends before the end of the first frame";
    return "";  // a structure the parser does not understand is left to stb_image's error
  }
  return "";
}

// --- decoders -------------------------------------------------------------------------------------

Image decode_with_stb(const uint8_t* data, size_t size, const std::string& name, Format fmt) {
  XC2_CHECK(size <= static_cast<size_t>(INT_MAX), Unsupported, "'", name, "': file is too large");
  const int len = static_cast<int>(size);

  const uint8_t* src = data;
  std::vector<uint8_t> patched;
  GifFirstFrame gif;
  if (fmt == Format::Gif) {
    gif = parse_gif_first_frame(data, size);
    if (gif.ok && gif.gce_flags_at != 0 && gif.transparent >= 0) {
      patched.assign(data, data + size);
      patched[gif.gce_flags_at] &= static_cast<uint8_t>(~1u);
      src = patched.data();
    }
  }

  // stb_image decodes uncompressed and bitfield BMPs only; say so instead of "unknown image type".
  if (fmt == Format::Bmp && size >= 34 && le32(data + 14) >= 40) {
    const uint32_t compression = le32(data + 30);
    XC2_CHECK(compression != 1 && compression != 2, Unsupported, "'", name, "': RLE-compressed BMP is not supported");
    XC2_CHECK(compression == 0 || compression == 3, Unsupported, "'", name, "': BMP compression type ", compression,
              " is not supported");
  }

  int w = 0, h = 0, comp = 0;
  // A PNG's size is in its IHDR: over the limit it is "too large" (stb_image would call it corrupt).
  if (fmt == Format::Png && size >= 24 && std::memcmp(data + 12, "IHDR", 4) == 0) {
    const uint32_t pw = be32(data + 16), ph = be32(data + 20);
    if (pw > static_cast<uint32_t>(kMaxSide) || ph > static_cast<uint32_t>(kMaxSide))
      check_dimensions(name, static_cast<int>(std::min<uint32_t>(pw, INT_MAX)),
                       static_cast<int>(std::min<uint32_t>(ph, INT_MAX)));
  }
  if (!stbi_info_from_memory(src, len, &w, &h, &comp)) throw_stb_failure(name, fmt);
  if (fmt == Format::Bmp && h < 0 && h > INT_MIN) h = -h;  // a top-down BMP (stb_image decodes it upright)
  check_dimensions(name, w, h);
  const std::string truncated = truncation_reason(data, size, fmt);
  if (!truncated.empty()) XC2_THROW(Io, "'", name, "': truncated ", format_name(fmt), " (", truncated, ")");

  int w2 = 0, h2 = 0, comp2 = 0;
  stbi_uc* px = stbi_load_from_memory(src, len, &w2, &h2, &comp2, 3);
  if (px == nullptr) throw_stb_failure(name, fmt);
  Image img;
  img.width = w2;
  img.height = h2;
  if (w2 != w || h2 != h) {
    stbi_image_free(px);
    XC2_THROW(Io, "'", name, "': inconsistent image size");
  }
  const size_t bytes = static_cast<size_t>(w2) * static_cast<size_t>(h2) * 3;
  img.rgb.assign(px, px + bytes);
  stbi_image_free(px);

  // Pillow fills the part of the logical screen outside the first frame with palette[transparent]
  // (or palette[0]); stb_image leaves it black or uses the background colour.
  if (fmt == Format::Gif && gif.ok && gif.screen_w == w && gif.screen_h == h) {
    const bool covers = gif.left == 0 && gif.top == 0 && gif.w >= w && gif.h >= h;
    const size_t idx = gif.transparent >= 0 ? static_cast<size_t>(gif.transparent) : 0;
    if (!covers && gif.palette.size() >= 3 * (idx + 1)) {
      const uint8_t* c = &gif.palette[3 * idx];
      for (int y = 0; y < h; ++y) {
        for (int x = 0; x < w; ++x) {
          const bool inside = x >= gif.left && x < gif.left + gif.w && y >= gif.top && y < gif.top + gif.h;
          if (inside) continue;
          uint8_t* p = &img.rgb[(static_cast<size_t>(y) * w + x) * 3];
          p[0] = c[0];
          p[1] = c[1];
          p[2] = c[2];
        }
      }
    }
  }
  return img;
}

const char* webp_status(VP8StatusCode s) {
  switch (s) {
    case VP8_STATUS_OK: return "ok";
    case VP8_STATUS_OUT_OF_MEMORY: return "out of memory";
    case VP8_STATUS_INVALID_PARAM: return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR: return "bitstream error";
    case VP8_STATUS_UNSUPPORTED_FEATURE: return "unsupported feature";
    case VP8_STATUS_SUSPENDED: return "suspended";
    case VP8_STATUS_USER_ABORT: return "aborted";
    case VP8_STATUS_NOT_ENOUGH_DATA: return "not enough data";
  }
  return "unknown error";
}

// ---- JPEG through libjpeg-turbo ----------------------------------------------------------------------
// libjpeg reports fatal errors through error_exit, which must not return: it longjmps back to
// decode_jpeg_raw, a function that holds no C++ objects with destructors between setjmp and the
// jpeg calls; the caller turns the message into an xc2::Error.

struct JpegError {
  jpeg_error_mgr mgr;
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
  bool premature_end;
};

extern "C" void xc2_jpeg_error_exit(j_common_ptr cinfo) {
  JpegError* e = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, e->message);
  longjmp(e->jump, 1);
}

extern "C" void xc2_jpeg_emit_message(j_common_ptr cinfo, int level) {
  JpegError* e = reinterpret_cast<JpegError*>(cinfo->err);
  if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) e->premature_end = true;
}

enum class JpegStatus { Ok, Error, TooLarge, Truncated };

// Decodes into `out` (resized by the caller-provided callback once the size is known). C-style on
// purpose: no object with a destructor lives across the setjmp.
JpegStatus decode_jpeg_raw(const uint8_t* data, size_t size, JpegError* err, uint8_t* (*alloc)(void*, int, int, int),
                           void* alloc_ctx, int* width, int* height, bool* cmyk, bool* adobe) {
  jpeg_decompress_struct cinfo;
  cinfo.err = jpeg_std_error(&err->mgr);
  err->mgr.error_exit = xc2_jpeg_error_exit;
  err->mgr.emit_message = xc2_jpeg_emit_message;
  err->premature_end = false;
  err->message[0] = 0;
  if (setjmp(err->jump)) {
    jpeg_destroy_decompress(&cinfo);
    return JpegStatus::Error;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&cinfo, TRUE);
  *cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
  *adobe = cinfo.saw_Adobe_marker != 0;
  cinfo.out_color_space = *cmyk ? JCS_CMYK : JCS_RGB;
  *width = static_cast<int>(cinfo.image_width);
  *height = static_cast<int>(cinfo.image_height);
  const int comps = *cmyk ? 4 : 3;
  uint8_t* buf = alloc(alloc_ctx, *width, *height, comps);
  if (buf == nullptr) {
    jpeg_destroy_decompress(&cinfo);
    return JpegStatus::TooLarge;
  }
  jpeg_start_decompress(&cinfo);
  const size_t stride = static_cast<size_t>(*width) * static_cast<size_t>(comps);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = buf + static_cast<size_t>(cinfo.output_scanline) * stride;
    jpeg_read_scanlines(&cinfo, &row, 1);
    if (err->premature_end) break;
  }
  if (!err->premature_end) jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return err->premature_end ? JpegStatus::Truncated : JpegStatus::Ok;
}

struct JpegAlloc {
  std::vector<uint8_t>* buf;
  std::string name;
  bool too_large = false;
};

uint8_t* jpeg_alloc(void* ctx, int w, int h, int comps) {
  JpegAlloc* a = static_cast<JpegAlloc*>(ctx);
  if (w <= 0 || h <= 0 || w > kMaxSide || h > kMaxSide || static_cast<int64_t>(w) * h > kMaxPixels) {
    a->too_large = true;
    return nullptr;
  }
  a->buf->resize(static_cast<size_t>(w) * static_cast<size_t>(h) * static_cast<size_t>(comps));
  return a->buf->data();
}

// Pillow's MULDIV255 and cmyk2rgb (libImaging/Convert.c).
inline int muldiv255(int a, int b) {
  const int tmp = a * b + 128;
  return ((tmp >> 8) + tmp) >> 8;
}

Image decode_jpeg(const uint8_t* data, size_t size, const std::string& name) {
  std::vector<uint8_t> raw;
  JpegAlloc alloc{&raw, name};
  JpegError err;
  int w = 0, h = 0;
  bool cmyk = false, adobe = false;
  const JpegStatus st = decode_jpeg_raw(data, size, &err, jpeg_alloc, &alloc, &w, &h, &cmyk, &adobe);
  if (st == JpegStatus::TooLarge || alloc.too_large) check_dimensions(name, w, h);
  if (st == JpegStatus::Truncated) XC2_THROW(Io, "'", name, "': truncated JPEG (premature end of data)");
  if (st == JpegStatus::Error) {
    const std::string msg = err.message;
    if (msg.find("precision") != std::string::npos || msg.find("Unsupported") != std::string::npos ||
        msg.find("not supported") != std::string::npos || msg.find("unsupported") != std::string::npos)
      XC2_THROW(Unsupported, "'", name, "': unsupported JPEG (", msg, ")");
    XC2_THROW(Io, "'", name, "': corrupt JPEG (", msg, ")");
  }
  Image img;
  img.width = w;
  img.height = h;
  if (!cmyk) {
    img.rgb = std::move(raw);
    return img;
  }
  img.rgb.resize(static_cast<size_t>(w) * static_cast<size_t>(h) * 3);
  for (size_t i = 0, n = static_cast<size_t>(w) * static_cast<size_t>(h); i < n; ++i) {
    int c[4];
    for (int k = 0; k < 4; ++k) c[k] = adobe ? 255 - raw[i * 4 + static_cast<size_t>(k)] : raw[i * 4 + static_cast<size_t>(k)];
    const int nk = 255 - c[3];
    for (int k = 0; k < 3; ++k) {
      const int v = nk - muldiv255(c[k], nk);
      img.rgb[i * 3 + static_cast<size_t>(k)] = static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
    }
  }
  return img;
}

Image decode_webp(const uint8_t* data, size_t size, const std::string& name) {
  WebPBitstreamFeatures features;
  const VP8StatusCode st = WebPGetFeatures(data, size, &features);
  if (st != VP8_STATUS_OK) {
    XC2_THROW(Io, "'", name, "': corrupt or truncated WebP (libwebp: ", webp_status(st), ")");
  }
  XC2_CHECK(!features.has_animation, Unsupported, "'", name, "': animated WebP is not supported");
  check_dimensions(name, features.width, features.height);
  Image img;
  img.width = features.width;
  img.height = features.height;
  img.rgb.resize(static_cast<size_t>(img.width) * img.height * 3);
  const uint8_t* out = WebPDecodeRGBInto(data, size, img.rgb.data(), img.rgb.size(), img.width * 3);
  XC2_CHECK(out != nullptr, Io, "'", name, "': corrupt or truncated WebP (libwebp could not decode it)");
  return img;
}

// --- resize ---------------------------------------------------------------------------------------

constexpr int kPrecisionBits = 32 - 8 - 2;  // 22

double bicubic_filter(double x) {
  // Pillow's bicubic_filter with a = -0.5, written exactly as in Resample.c (same operation order).
  const double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// Fixed-point coefficients of one axis: output o reads source [xmin[o], xmin[o] + count[o]) with
// weights k[o * ksize + i].
struct AxisCoeffs {
  int ksize = 0;
  std::vector<int> xmin, count;
  std::vector<int32_t> k;
};

AxisCoeffs precompute_coeffs(int in_size, int out_size) {
  const double scale = static_cast<double>(static_cast<float>(in_size)) / out_size;
  double filterscale = scale;
  if (filterscale < 1.0) filterscale = 1.0;
  const double support = 2.0 * filterscale;
  AxisCoeffs c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.xmin.resize(out_size);
  c.count.resize(out_size);
  c.k.assign(static_cast<size_t>(out_size) * c.ksize, 0);
  std::vector<double> w(c.ksize);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = 0.0 + (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      const double v = bicubic_filter((x + xmin - center + 0.5) * ss);
      w[x] = v;
      ww += v;
    }
    for (int x = 0; x < xmax; ++x) {
      if (ww != 0.0) w[x] /= ww;
    }
    int32_t* k = &c.k[static_cast<size_t>(xx) * c.ksize];
    for (int x = 0; x < xmax; ++x) {
      const double v = w[x] * (1 << kPrecisionBits);
      k[x] = static_cast<int32_t>(w[x] < 0 ? -0.5 + v : 0.5 + v);
    }
    c.xmin[xx] = xmin;
    c.count[xx] = xmax;
  }
  return c;
}

inline uint8_t clip8(int32_t acc) {
  const int32_t v = acc >> kPrecisionBits;  // arithmetic shift, like Pillow's table lookup index
  return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

}  // namespace

Image decode_image(const uint8_t* data, size_t size, const std::string& name_for_errors) {
  const std::string& name = name_for_errors;
  XC2_CHECK(data != nullptr && size > 0, Io, "'", name, "': empty file");
  const Format fmt = sniff(data, size);
  switch (fmt) {
    case Format::Jpeg: return decode_jpeg(data, size, name);
    case Format::Png:
    case Format::Bmp:
    case Format::Gif: return decode_with_stb(data, size, name, fmt);
    case Format::WebP: return decode_webp(data, size, name);
    case Format::Unknown: break;
  }
  throw_unsupported_format(name);
}

Image load_image(const std::string& path) {
  // Only regular files, size-checked before a byte is read (a FIFO or /dev/zero is never read, a huge file never
  // loaded whole).
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR) XC2_THROW(NotFound, "'", path, "': no such image file");
    XC2_THROW(Io, "'", path, "': cannot open (", std::strerror(err), ")");
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) XC2_THROW(Io, "'", path, "': cannot read (", std::strerror(errno), ")");
  if (S_ISDIR(st.st_mode)) XC2_THROW(Io, "'", path, "': is a directory, expected an image file");
  XC2_CHECK(S_ISREG(st.st_mode), Unsupported, "'", path, "': not a regular file (",
            S_ISFIFO(st.st_mode) ? "a FIFO" : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "a device" : "a special file",
            "); xc2 reads image files only");
  XC2_CHECK(st.st_size <= kMaxFileBytes, Unsupported, "'", path, "': file is too large (", st.st_size,
            " bytes; xc2 reads image files of at most ", kMaxFileBytes >> 20, " MiB)");
  std::string bytes(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < bytes.size()) {
    const ssize_t r = ::pread(fd, &bytes[got], bytes.size() - got, static_cast<off_t>(got));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) XC2_THROW(Io, "'", path, "': read error (", std::strerror(errno), ")");
    if (r == 0) break;  // shrank while being read: decoded as it is (a truncated image is reported)
    got += static_cast<size_t>(r);
  }
  bytes.resize(got);
  return decode_image(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), path);
}

Image resize_bicubic(const Image& src, int out_w, int out_h) {
  XC2_CHECK(out_w > 0 && out_h > 0, InvalidArgument, "resize: invalid output size ", out_w, "x", out_h);
  XC2_CHECK(src.width > 0 && src.height > 0, InvalidArgument, "resize: empty input image");
  XC2_CHECK_EQ(src.rgb.size(), static_cast<size_t>(src.width) * src.height * 3, InvalidArgument,
               "resize: pixel buffer does not match the image size");
  XC2_CHECK(out_w <= kMaxSide && out_h <= kMaxSide, Unsupported, "resize: output size ", out_w, "x", out_h,
            " is too large");

  const bool need_h = out_w != src.width;
  const bool need_v = out_h != src.height;
  if (!need_h && !need_v) return src;

  const AxisCoeffs vert = precompute_coeffs(src.height, out_h);
  const int ybox_first = vert.xmin[0];
  const int ybox_last = vert.xmin[out_h - 1] + vert.count[out_h - 1];

  // Horizontal pass over the source rows [ybox_first, ybox_last) only (or every row if no vertical pass).
  const Image* cur = &src;
  int row_offset = 0;  // source row of cur's row 0
  Image tmp;
  if (need_h) {
    const AxisCoeffs hor = precompute_coeffs(src.width, out_w);
    const int y0 = need_v ? ybox_first : 0;
    const int y1 = need_v ? ybox_last : src.height;
    tmp.width = out_w;
    tmp.height = y1 - y0;
    tmp.rgb.resize(static_cast<size_t>(tmp.width) * tmp.height * 3);
    for (int yy = 0; yy < tmp.height; ++yy) {
      const uint8_t* in_row = &src.rgb[static_cast<size_t>(yy + y0) * src.width * 3];
      uint8_t* out_row = &tmp.rgb[static_cast<size_t>(yy) * out_w * 3];
      for (int xx = 0; xx < out_w; ++xx) {
        const int32_t* k = &hor.k[static_cast<size_t>(xx) * hor.ksize];
        const uint8_t* p = in_row + static_cast<size_t>(hor.xmin[xx]) * 3;
        int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
        for (int x = 0; x < hor.count[xx]; ++x) {
          s0 += p[3 * x + 0] * k[x];
          s1 += p[3 * x + 1] * k[x];
          s2 += p[3 * x + 2] * k[x];
        }
        out_row[3 * xx + 0] = clip8(s0);
        out_row[3 * xx + 1] = clip8(s1);
        out_row[3 * xx + 2] = clip8(s2);
      }
    }
    cur = &tmp;
    row_offset = y0;
  }
  if (!need_v) return tmp;

  Image out;
  out.width = cur->width;
  out.height = out_h;
  out.rgb.resize(static_cast<size_t>(out.width) * out_h * 3);
  // Row-wise accumulation (integer sums, so the order does not change the result).
  const size_t stride = static_cast<size_t>(cur->width) * 3;
  std::vector<int32_t> acc(stride);
  for (int yy = 0; yy < out_h; ++yy) {
    const int32_t* k = &vert.k[static_cast<size_t>(yy) * vert.ksize];
    const int ymin = vert.xmin[yy] - row_offset;
    std::fill(acc.begin(), acc.end(), 1 << (kPrecisionBits - 1));
    for (int y = 0; y < vert.count[yy]; ++y) {
      const uint8_t* in_row = &cur->rgb[static_cast<size_t>(ymin + y) * stride];
      const int32_t ky = k[y];
      for (size_t i = 0; i < stride; ++i) acc[i] += in_row[i] * ky;
    }
    uint8_t* out_row = &out.rgb[static_cast<size_t>(yy) * stride];
    for (size_t i = 0; i < stride; ++i) out_row[i] = clip8(acc[i]);
  }
  return out;
}

std::vector<float> preprocess_clip(const Image& image, int size) {
  XC2_CHECK(size > 0, InvalidArgument, "preprocess: invalid image size ", size);
  const Image r = resize_bicubic(image, size, size);
  const size_t plane = static_cast<size_t>(size) * size;
  std::vector<float> out(3 * plane);
  for (int c = 0; c < 3; ++c) {
    float* dst = &out[c * plane];
    const float mean = kClipMean[c];
    const float std = kClipStd[c];
    for (size_t i = 0; i < plane; ++i) {
      const float x = static_cast<float>(r.rgb[3 * i + c]) / 255.0f;
      dst[i] = (x - mean) / std;
    }
  }
  return out;
}

}  // namespace xc2::vision
