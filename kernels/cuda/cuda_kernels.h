// Host launchers of the CUDA kernels (kernels/cuda/*.cu). Raw device pointers, sizes and strides; no
// device code and no Tensor here. Every launcher enqueues on `stream`, allocates nothing (scratch is
// passed in) and throws xc2::Error{Cuda} when the launch fails.
//
// Element types: activations and weights of one call share `dtype` (F32, F16 or BF16); every kernel
// computes in f32 and rounds once when it stores (RMSNorm rounds the normalised value before the
// weight multiply, as upstream does: model-spec §6.1). Shapes are row-major, as everywhere in xc2.
//
// Device-resident positions: ops used by a captured decode step take `pos_dev` (an int32 in device
// memory); when it is non-null it replaces the host position, so a CUDA graph replays with new values.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "common/attention_args.h"
#include "xc2/dtype.h"

namespace xc2::kernels::cuda {

using kernels::AttentionArgs;

// ---- convert.cu ------------------------------------------------------------------------------------
// dst[i] = src[i] converted (round to nearest even). src and dst may not overlap unless equal dtypes.
void convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n, cudaStream_t stream);

// ---- norm.cu ---------------------------------------------------------------------------------------
// RMSNorm: y[r, :] = T(T(x[r, :] * rsqrt(mean(x[r, :]^2) + eps)) * w[:])
// x, y: [n_rows, dim] (y may alias x); w: [dim]. One row per 256-thread block.
void rms_norm(const void* x, const void* w, void* y, int64_t n_rows, int64_t dim, float eps, DType dtype,
              cudaStream_t stream);
// LayerNorm: y = (x - mean) * rsqrt(var + eps) * w + b, biased variance, f32 statistics.
// x, y: [n_rows, dim] (y may alias x); w, b: [dim].
void layer_norm(const void* x, const void* w, const void* b, void* y, int64_t n_rows, int64_t dim, float eps,
                DType dtype, cudaStream_t stream);

// ---- pointwise.cu ----------------------------------------------------------------------------------
void add(const void* a, const void* b, void* y, int64_t n, DType dtype, cudaStream_t stream);  // y = a + b
void scale(void* x, float s, int64_t n, DType dtype, cudaStream_t stream);                      // x *= s
// y = silu(gate) * up, silu(g) = g / (1 + exp(-g)); y may alias gate or up
void silu_mul(const void* gate, const void* up, void* y, int64_t n, DType dtype, cudaStream_t stream);
void gelu_erf(void* x, int64_t n, DType dtype, cudaStream_t stream);    // 0.5 x (1 + erf(x / sqrt 2))
void quick_gelu(void* x, int64_t n, DType dtype, cudaStream_t stream);  // x * sigmoid(1.702 x)
// y[r, c] += bias[c]; y: [m, n]; bias: [n]
void add_bias_rows(void* y, const void* bias, int64_t m, int64_t n, DType dtype, cudaStream_t stream);

// ---- embedding.cu ----------------------------------------------------------------------------------
// y[t, :] = table[ids[t], :].  table: [vocab, dim]; ids: [n_ids] int32 on the device; y: [n_ids, dim].
void embedding(const void* table, const int32_t* ids, int64_t n_ids, int64_t dim, void* y, DType dtype,
               cudaStream_t stream);
// Conv2d patch extraction (kernel = stride = patch): pixels [n_images, 3, size, size] ->
// cols [n_images * g * g, 3 * patch * patch], g = size / patch, each patch flattened (channel, ky, kx).
void im2col_patches(const void* pixels, int64_t n_images, int64_t size, int64_t patch, void* cols, DType dtype,
                    cudaStream_t stream);
// Packed wqkv rows (model-spec §4.2) -> q [n_tokens, n_heads, head_dim] and k, v rows
// [row0 + t, n_kv_heads, head_dim] with row0 = pos_dev ? *pos_dev : 0 (k, v point at a KV cache).
void split_qkv(const void* qkv, int64_t n_tokens, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, void* q,
               void* k, void* v, const int32_t* pos_dev, DType dtype, cudaStream_t stream);

// ---- rope.cu ---------------------------------------------------------------------------------------
// In-place rotate_half RoPE on x: token t has position pos = (pos_dev ? *pos_dev : pos0) + t, and head j of
// it is at x + row * token_stride + j * head_dim with row = rows_follow_pos ? pos : t.
//   x'[i] = x[i] cos[pos, i] - x[i + h] sin[pos, i],  x'[i + h] = x[i + h] cos[pos, i] + x[i] sin[pos, i]
// cos, sin: [n_table_positions, head_dim / 2] f32 (backends/backend.h rope_tables()).
// `rows_follow_pos`: x is a whole KV cache, rows indexed by position.
void rope(void* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t token_stride, const float* cos,
          const float* sin, int64_t pos0, const int32_t* pos_dev, bool rows_follow_pos, DType dtype,
          cudaStream_t stream);

// ---- attention.cu ----------------------------------------------------------------------------------
// Attention as kernels/common/attention_args.h says (the arguments every device's kernels take).
// Kernels: a tensor-core (WMMA) flash-style prefill for f16/bf16, head_dim 64 and 128, n_q >= 16; a
// split-KV kernel for everything else (decode; f32), head_dim 64 or 128, which reads each KV head once per
// block for its G query heads and merges the splits in a second kernel.
// How a launch uses the GPU (CUDA only):
struct AttentionLaunch {
  int n_splits = 0;                // split-KV kernel: 0 = choose (attention_splits)
  void* workspace = nullptr;       // attention_workspace_bytes(): split partials
  int num_sms = 132;
  bool allow_tensor_cores = true;  // false: always the split-KV kernel (tests use it as a second path)
};
bool attention_supported(int64_t head_dim);
int attention_splits(const AttentionArgs& a, const AttentionLaunch& l);              // the n_splits a launch uses
size_t attention_workspace_bytes(const AttentionArgs& a, const AttentionLaunch& l);  // for that many splits
void attention(const AttentionArgs& a, const AttentionLaunch& l, cudaStream_t stream);

// ---- gemv.cu ---------------------------------------------------------------------------------------
// Skinny linear for decode: y[m, n] (+)= x[m, k] . w[n, k]^T (+ bias[n]), m <= kGemvMaxRows, f32 accumulate.
// One warp per output column n (all m rows at once), 16-byte weight loads. Requires k % (16 / elt) == 0
// and 16-byte aligned x, w; gemv_fits() says whether a call qualifies.
constexpr int kGemvMaxRows = 8;
bool gemv_fits(const void* x, const void* w, int64_t m, int64_t k, DType dtype);
void gemv(const void* x, const void* w, const void* bias, void* y, int64_t m, int64_t n, int64_t k, bool accumulate,
          DType dtype, cudaStream_t stream);

// y[m, n] (+)= x[m, k] . w[n, k]^T (+ bias[n]) for any shape and alignment (tiled, f32 accumulation; slow):
// what the linear layers fall back to when cuBLASLt has no algorithm, and XC2_CUDA_GEMM=simple forces.
void linear_simple(const void* x, const void* w, const void* bias, void* y, int64_t m, int64_t n, int64_t k,
                   bool accumulate, DType dtype, cudaStream_t stream);

// ---- qgemv.cu -------------------------------------------------------------------------------------
// GPTQ-quantized linears (W4A16, W8A16) over the layout of kernels/common/gptq_gpu.h, uploaded by the backend:
// w[c, j] = scale[c, g(j)] * (q[c, j] - zero[c, g(j)]) with j in the layout's (group-sorted) column order.
struct GptqDeviceWeight {
  const uint32_t* q = nullptr;          // [n][kw]
  const float* sz = nullptr;            // [n][groups][2]: scale, zero (8-byte aligned: read as float2)
  const int32_t* col_group = nullptr;   // [k]
  const int32_t* vec_group = nullptr;   // [kw / 4] or null (then qgemv takes its generic path)
  const void* bias = nullptr;           // [n] in the activation dtype, or null
  int bits = 4;                         // 4 or 8
  int64_t n = 0, k = 0, kw = 0, groups = 1;
};
// Decode: y[m, n] (+)= x[m, k] . w^T (+ bias), 1 <= m <= kQGemvMaxRows, x in the layout's column order
// (gather_columns for act-order), f32 accumulation, each weight word read once (vector path).
constexpr int kQGemvMaxRows = 16;
// Whether qgemv() takes the vector path (16-byte loads): the layout has vec_group and x is 16-byte aligned.
bool qgemv_vector_path(const GptqDeviceWeight& w, const void* x);
void qgemv(const GptqDeviceWeight& w, const void* x, void* y, int64_t m, bool accumulate, DType dtype,
           cudaStream_t stream);
// Prefill: out[n, k] = w dequantized (layout column order), rounded once to dtype.
void gptq_dequantize(const GptqDeviceWeight& w, void* out, DType dtype, cudaStream_t stream);
// xp[r, j] = x[r, perm[j]]; x, xp: [m, k] (must not overlap); perm: [k] int32 on the device.
void gather_columns(const void* x, const int32_t* perm, void* xp, int64_t m, int64_t k, DType dtype,
                    cudaStream_t stream);

// ---- sampling.cu -----------------------------------------------------------------------------------
// work[i] = f32(logits[i]) with the repetition penalty on seen ids (l < 0 ? l * penalty : l / penalty), then
// divided by `temperature` when temperature != 1 (exactly the host Sampler's f32 arithmetic).
// logits: [vocab] in dtype; seen: [vocab] int32 flags (null: no penalty); work: [vocab] f32.
void prepare_logits(const void* logits, DType dtype, int64_t vocab, const int32_t* seen, float penalty,
                    float temperature, float* work, cudaStream_t stream);
// out_id[0] = argmax(work) (lowest index on ties; NaN never wins). One block.
void argmax(const float* work, int64_t vocab, int32_t* out_id, cudaStream_t stream);
// The candidates of top-k: every i with work[i] >= the k-th largest value (ties kept), in no particular
// order: out_count[0] = their number (may exceed cap; then only cap are stored), out_ids/out_vals: [cap].
// One block (radix select on the f32 bit pattern, then a gather).
void topk_candidates(const float* work, int64_t vocab, int k, int cap, int32_t* out_count, int32_t* out_ids,
                     float* out_vals, cudaStream_t stream);
// seen[*id] = 1.
void mark_seen(int32_t* seen, const int32_t* id, cudaStream_t stream);
// x[0] += delta (the decode position after a captured step).
void add_scalar(int32_t* x, int32_t delta, cudaStream_t stream);

}  // namespace xc2::kernels::cuda
