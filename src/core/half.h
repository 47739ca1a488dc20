// Host conversions between f32 and the 16-bit float formats, with round-to-nearest-even.
//   bf16: the top 16 bits of an IEEE f32.   f16: IEEE 754 binary16.
#pragma once

#include <cstdint>
#include <cstring>

#include "xc2/dtype.h"

namespace xc2 {

inline float bits_to_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint32_t f32_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

inline float bf16_to_f32(uint16_t h) { return bits_to_f32(static_cast<uint32_t>(h) << 16); }

inline uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    if (mant == 0) return bits_to_f32(sign);
    // subnormal: value = mant * 2^-24
    float v = static_cast<float>(mant) * 5.9604644775390625e-08f;
    return sign ? -v : v;
  }
  if (exp == 31) return bits_to_f32(sign | 0x7f800000u | (mant << 13));
  return bits_to_f32(sign | ((exp + 112u) << 23) | (mant << 13));
}

inline uint16_t f32_to_f16(float f) {
  const uint32_t u = f32_to_bits(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow -> inf
  if (abs < 0x38800000u) {
    // subnormal or zero in f16: round(abs_value * 2^24) with ties to even
    const float v = bits_to_f32(abs) * 16777216.0f;  // exact scaling by 2^24
    // nearbyint with ties-to-even through the f32 magic-number trick (v < 2^10)
    const float r = (v + 8388608.0f) - 8388608.0f;
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(r));
  }
  uint32_t m = abs + 0x0fffu + ((abs >> 13) & 1u);  // round to nearest even at bit 13
  return static_cast<uint16_t>(sign | ((m - 0x38000000u) >> 13));
}

// Element idx of a float array in dtype dt (F32, F16, BF16; unaligned reads allowed), as f32. I32: 0.
inline float float_at(const void* base, DType dt, int64_t idx) {
  const char* p = static_cast<const char*>(base);
  uint16_t h;
  float f;
  switch (dt) {
    case DType::F16: std::memcpy(&h, p + 2 * idx, 2); return f16_to_f32(h);
    case DType::BF16: std::memcpy(&h, p + 2 * idx, 2); return bf16_to_f32(h);
    case DType::F32: std::memcpy(&f, p + 4 * idx, 4); return f;
    case DType::I32: break;
  }
  return 0.0f;
}

}  // namespace xc2
