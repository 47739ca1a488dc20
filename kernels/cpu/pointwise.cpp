// Element-wise kernels: dtype widening, add, scale, SiLU*mul, exact GELU, quick_gelu; embedding rows, the wqkv
// split and RoPE.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/half.h"
#include "cpu/cpu_kernels.h"
#include "cpu/vec16.h"

namespace xc2::kernels::cpu {
namespace {

constexpr int64_t kGrain = 1 << 14;  // elements per task at least, so small tensors stay on one thread

XC2_MULTIVERSION
void bf16_to_f32_loop(const uint16_t* s, float* d, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t u = static_cast<uint32_t>(s[i]) << 16;
    std::memcpy(d + i, &u, 4);
  }
}

XC2_MULTIVERSION
void add_loop(const float* a, const float* b, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}

XC2_MULTIVERSION
void scale_loop(float* x, float s, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

// The first c (1..16) floats at p, the other lanes 0; and their store. The element-wise loops below take their
// tails through these, so an element's value does not depend on where a thread's chunk ends.
// (Results through a reference: a V16 returned by value from a function built for the baseline target is an
// ABI error under -Werror=psabi.)
inline void load16_upto(V16& v, const float* p, int64_t c) {
  if (c == 16) {
    std::memcpy(&v, p, sizeof(v));
  } else {
    v = V16{};
    std::memcpy(&v, p, static_cast<size_t>(c) * sizeof(float));
  }
}
inline void store16_upto(float* p, const V16& v, int64_t c) {
  if (c == 16) std::memcpy(p, &v, sizeof(v));
  else std::memcpy(p, &v, static_cast<size_t>(c) * sizeof(float));
}

// g / (1 + exp(-g)) * u, 16 lanes at a time, exp by exp16 (cpu/vec16.h; libm's expf per element was 2.8% of
// a quantized image prefill). exp(-g) is clamped at exp(88) (-g > 88: the result is g * 6e-39 instead of -0).
XC2_MULTIVERSION
void silu_mul_loop(const float* g, const float* u, float* y, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const int64_t c = std::min<int64_t>(16, n - i);
    V16 gv, uv;
    load16_upto(gv, g + i, c);
    load16_upto(uv, u + i, c);
    V16 x = -gv;
    x = x > 88.0f ? V16{} + 88.0f : x;
    store16_upto(y + i, gv / (1.0f + exp16(x)) * uv, c);
  }
}

void gelu_erf_loop(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * 0.70710678118654752f));
}

// x / (1 + exp(-1.702 x)) (the ViT's activation), 16 lanes at a time like silu_mul_loop.
XC2_MULTIVERSION
void quick_gelu_loop(float* x, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const int64_t c = std::min<int64_t>(16, n - i);
    V16 v;
    load16_upto(v, x + i, c);
    V16 t = v * -1.702f;
    t = t > 88.0f ? V16{} + 88.0f : t;
    store16_upto(x + i, v / (1.0f + exp16(t)), c);
  }
}

}  // namespace

void to_f32(const void* src, DType src_dtype, float* dst, int64_t n) {
  switch (src_dtype) {
    case DType::F32:
      std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      return;
    case DType::BF16:
      bf16_to_f32_loop(static_cast<const uint16_t*>(src), dst, n);
      return;
    case DType::F16: {
      const uint16_t* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(s[i]);
      return;
    }
    case DType::I32: break;  // no int32 activations
  }
}

void add(const float* a, const float* b, float* y, int64_t n, ThreadPool& pool) {
  pool.parallel_for(n, [&](int64_t i0, int64_t i1) { add_loop(a + i0, b + i0, y + i0, i1 - i0); }, kGrain);
}

void scale(float* x, float s, int64_t n, ThreadPool& pool) {
  pool.parallel_for(n, [&](int64_t i0, int64_t i1) { scale_loop(x + i0, s, i1 - i0); }, kGrain);
}

void silu_mul(const float* gate, const float* up, float* y, int64_t n, ThreadPool& pool) {
  pool.parallel_for(n, [&](int64_t i0, int64_t i1) { silu_mul_loop(gate + i0, up + i0, y + i0, i1 - i0); }, kGrain);
}

void gelu_erf(float* x, int64_t n, ThreadPool& pool) {
  pool.parallel_for(n, [&](int64_t i0, int64_t i1) { gelu_erf_loop(x + i0, i1 - i0); }, kGrain);
}

void quick_gelu(float* x, int64_t n, ThreadPool& pool) {
  pool.parallel_for(n, [&](int64_t i0, int64_t i1) { quick_gelu_loop(x + i0, i1 - i0); }, kGrain);
}

void embedding(const void* table, const int32_t* ids, int64_t n_ids, int64_t dim, float* y, DType table_dtype,
               ThreadPool& pool) {
  const size_t row_bytes = static_cast<size_t>(dim) * dtype_size(table_dtype);
  pool.parallel_for(
      n_ids,
      [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
          const char* row = static_cast<const char*>(table) + static_cast<size_t>(ids[t]) * row_bytes;
          to_f32(row, table_dtype, y + t * dim, dim);
        }
      },
      1);
}

void split_qkv(const float* qkv, int64_t n_tokens, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float* q,
               float* k, float* v, ThreadPool& pool) {
  const int64_t group = n_heads / n_kv_heads;
  const int64_t row = (n_heads + 2 * n_kv_heads) * head_dim;
  const size_t hb = static_cast<size_t>(head_dim) * sizeof(float);
  pool.parallel_for(n_tokens, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const float* r = qkv + t * row;
      for (int64_t g = 0; g < n_kv_heads; ++g) {
        const float* grp = r + g * (group + 2) * head_dim;
        std::memcpy(q + (t * n_heads + g * group) * head_dim, grp, hb * static_cast<size_t>(group));
        std::memcpy(k + (t * n_kv_heads + g) * head_dim, grp + group * head_dim, hb);
        std::memcpy(v + (t * n_kv_heads + g) * head_dim, grp + (group + 1) * head_dim, hb);
      }
    }
  });
}

void rope(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t token_stride, const float* cos,
          const float* sin, ThreadPool& pool) {
  const int64_t half = head_dim / 2;
  pool.parallel_for(
      n_tokens,
      [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
          const float* c = cos + t * half;
          const float* s = sin + t * half;
          for (int64_t j = 0; j < n_heads; ++j) {
            float* v = x + t * token_stride + j * head_dim;
            for (int64_t i = 0; i < half; ++i) {
              const float a = v[i], b = v[i + half];
              v[i] = a * c[i] - b * s[i];
              v[i + half] = b * c[i] + a * s[i];
            }
          }
        }
      },
      1);
}

void im2col_patches(const float* pixels, int64_t n_images, int64_t size, int64_t patch, float* cols,
                    ThreadPool& pool) {
  const int64_t g = size / patch;
  const int64_t row_len = 3 * patch * patch;
  pool.parallel_for(n_images * g * g, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t img = r / (g * g), py = (r / g) % g, px = r % g;
      float* out = cols + r * row_len;
      for (int64_t c = 0; c < 3; ++c)
        for (int64_t ky = 0; ky < patch; ++ky) {
          const float* src = pixels + ((img * 3 + c) * size + py * patch + ky) * size + px * patch;
          std::memcpy(out + (c * patch + ky) * patch, src, static_cast<size_t>(patch) * 4);
        }
    }
  });
}

}  // namespace xc2::kernels::cpu
