// 16-lane f32 helpers for the CPU kernels (internal): GCC/Clang vector extensions, one zmm register where the
// target has AVX-512 (the functions using them are built per target with XC2_MULTIVERSION), split into narrower
// registers on older targets.
#pragma once

#include <cstdint>
#include <cstring>

// -Wpsabi, for the rest of every file that includes this: these are inlined helpers whose calling convention never
// matters, and GCC reports some of them only when it emits the translation unit (a push / pop would not cover it).
#pragma GCC diagnostic ignored "-Wpsabi"

namespace xc2::kernels::cpu {

typedef float V16 __attribute__((vector_size(64)));
typedef int32_t I16 __attribute__((vector_size(64)));

inline V16 load16(const float* p) {
  V16 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// exp(x) of 16 lanes for x <= 88 (the caller clamps above: exp(88.73) overflows f32; -inf gives 0): x = n ln2 + r
// with |r| <= ln2 / 2 (ln2 in two parts, Cody-Waite), exp(r) by its Taylor polynomial of degree 7 (truncation
// below 6e-9 relative), times 2^n through the exponent bits. At most 0.93 ulp from the correctly rounded value
// with FMA (1.21 without) over 32M arguments in [-87, 0]; 0 where exp(x) < 2^-126. Replaces libm's expf per
// element in softmax (attention) and SiLU: 5-6% of an image prefill went to the softmax's calls alone.
inline V16 exp16(V16 x) {
  const I16 under = x < -87.0f;  // exp(-87) = 1.6e-38, just above 2^-126
  x = under ? V16{} - 87.0f : x;
  const V16 magic = V16{} + 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer (nearest even)
  const V16 t = x * 1.44269504088896341f + magic;
  const V16 n = t - magic;
  V16 r = x - n * 0.693145751953125f;  // ln2 high part (exact product for |n| < 2^11)
  r = r - n * 1.42860682030941723212e-6f;
  V16 p = V16{} + (1.0f / 5040.0f);
  p = p * r + (1.0f / 720.0f);
  p = p * r + (1.0f / 120.0f);
  p = p * r + (1.0f / 24.0f);
  p = p * r + (1.0f / 6.0f);
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const I16 bits = (__builtin_convertvector(n, I16) + 127) << 23;
  V16 two_n;
  std::memcpy(&two_n, &bits, sizeof(two_n));
  const V16 e = p * two_n;
  return under ? V16{} : e;
}

}  // namespace xc2::kernels::cpu
