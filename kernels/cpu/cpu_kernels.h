// CPU kernels other than the GEMM (kernels/cpu/gemm.h). Raw pointers, sizes and strides only; they
// allocate nothing but small per-call scratch, never throw from worker threads, and compute in f32.
// Weight-like operands (norm weights, biases, embedding tables) may be f32, f16 or bf16 and are
// widened on the fly. Loops are written for auto-vectorisation and compiled for AVX-512, AVX2 and
// baseline x86-64 with runtime selection (XC2_MULTIVERSION).
#pragma once

#include <cstdint>

#include "common/attention_args.h"
#include "core/thread_pool.h"
#include "xc2/dtype.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(XC2_NO_MULTIVERSION)
#define XC2_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define XC2_MULTIVERSION
#endif

namespace xc2::kernels::cpu {

// dst[i] = src[i] widened to f32.
void to_f32(const void* src, DType src_dtype, float* dst, int64_t n);

// RMSNorm (InternLM2): y[r, :] = x[r, :] * rsqrt(mean(x[r, :]^2) + eps) * w[:]
// x, y: [n_rows, dim] f32 (y may alias x); w: [dim] in w_dtype.
void rms_norm(const float* x, const void* w, float* y, int64_t n_rows, int64_t dim, float eps, DType w_dtype,
              ThreadPool& pool);

// LayerNorm (CLIP): y = (x - mean) / sqrt(var + eps) * w + b, biased variance.
// x, y: [n_rows, dim] f32 (y may alias x); w, b: [dim] in w_dtype.
void layer_norm(const float* x, const void* w, const void* b, float* y, int64_t n_rows, int64_t dim, float eps,
                DType w_dtype, ThreadPool& pool);

// y[i] = a[i] + b[i]   (y may alias a or b)
void add(const float* a, const float* b, float* y, int64_t n, ThreadPool& pool);
// x[i] *= s
void scale(float* x, float s, int64_t n, ThreadPool& pool);
// y[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + exp(-g))   (y may alias gate or up)
void silu_mul(const float* gate, const float* up, float* y, int64_t n, ThreadPool& pool);
// x[i] = 0.5 x (1 + erf(x / sqrt(2)))   (exact GELU, the projector's nn.GELU())
void gelu_erf(float* x, int64_t n, ThreadPool& pool);
// x[i] = x * sigmoid(1.702 x)           (CLIP quick_gelu)
void quick_gelu(float* x, int64_t n, ThreadPool& pool);

// y[t, :] = table[ids[t], :] widened to f32. table: [vocab, dim] in table_dtype; ids must be in range.
void embedding(const void* table, const int32_t* ids, int64_t n_ids, int64_t dim, float* y, DType table_dtype,
               ThreadPool& pool);

// Packed wqkv rows (model-spec §4.2: per KV head, G = n_heads / n_kv_heads query heads, then its K and V head)
// -> q [n_tokens, n_heads, head_dim], k and v [n_tokens, n_kv_heads, head_dim] (KV-cache rows).
void split_qkv(const float* qkv, int64_t n_tokens, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float* q,
               float* k, float* v, ThreadPool& pool);

// Rotary embedding, NeoX "rotate_half" layout, in place on n_heads vectors of head_dim per token:
//   x'[i] = x[i] cos[t, i] - x[i + h] sin[t, i],  x'[i + h] = x[i + h] cos[t, i] + x[i] sin[t, i],  h = head_dim/2
// x: token t, head j starts at x + t * token_stride + j * head_dim; cos, sin: [n_tokens, head_dim / 2].
void rope(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t token_stride, const float* cos,
          const float* sin, ThreadPool& pool);

// Multi-head attention with grouped KV heads (query head j uses KV head j / (n_heads / n_kv_heads)), in f32:
// kernels/common/attention_args.h (scores and softmax in f32, out = softmax . v, heads concatenated).
void attention(const kernels::AttentionArgs& args, ThreadPool& pool);
// Calls with at most this many queries (decode) compute each head directly, all heads in one pass over
// the pool; longer ones use the per-head GEMM path. The two round differently (summation order).
constexpr int64_t kAttentionRowsMaxQueries = 4;

// Patch extraction for a Conv2d with kernel = stride = p and no padding (the CLIP patch embedding):
// pixels: [n_images, 3, S, S] f32 -> cols: [n_images * g * g, 3 * p * p], g = S / p, patches in
// row-major order, each patch flattened as (channel, ky, kx) to match the conv weight [D, 3, p, p].
void im2col_patches(const float* pixels, int64_t n_images, int64_t size, int64_t patch, float* cols,
                    ThreadPool& pool);

}  // namespace xc2::kernels::cpu
