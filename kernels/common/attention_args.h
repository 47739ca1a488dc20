// The arguments of the attention kernels, one struct for every device (kernels/cpu, kernels/cuda); the
// backends fill it in one place (src/backends/kernel_args.h).
//   out[i, h, :] = softmax_j(scale * q[i, h, :] . k[j, h / G, :]) v[j, h / G, :],  G = n_heads / n_kv_heads,
// over keys j < n_kv, and with `causal` j <= q_pos0 + i. Softmax statistics in f32.
#pragma once

#include <cstdint>

#include "xc2/dtype.h"

namespace xc2::kernels {

struct AttentionArgs {
  const void* q = nullptr;  // q: [n_q, n_heads, head_dim], row stride q_stride (elements)
  int64_t q_stride = 0;
  const void* k = nullptr;  // k, v: [>= n_kv, n_kv_heads, head_dim], row stride kv_stride
  const void* v = nullptr;
  int64_t kv_stride = 0;
  void* out = nullptr;  // out: [n_q, n_heads * head_dim], row stride out_stride
  int64_t out_stride = 0;
  int64_t n_q = 0, n_kv = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0;
  int64_t q_pos0 = 0;
  // Non-null: q_pos0 = *pos_dev and n_kv = *pos_dev + n_q, read when the kernel runs (device memory on a GPU,
  // host memory on the CPU); n_kv above is then an upper bound (the cache capacity).
  const int32_t* pos_dev = nullptr;
  bool causal = true;
  float scale = 1.0f;
  DType dtype = DType::F32;  // of q, k, v and out (the CPU kernels take F32)
};

}  // namespace xc2::kernels
