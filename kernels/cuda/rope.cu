// Rotary embedding (rotate_half, model-spec §6.2) in place, from f32 cos/sin tables built on the host
// exactly as rope_tables() builds them (f32 inv_freq and angles), so the CUDA and CPU backends rotate
// with the same numbers:
//   x'[i] = x[i] cos[pos, i] - x[i + h] sin[pos, i],  x'[i + h] = x[i + h] cos[pos, i] + x[i] sin[pos, i]
// Geometry: one block per token, threads over (head, i < head_dim / 2).
#include "cuda/common.cuh"
#include "cuda/cuda_kernels.h"

namespace xc2::kernels::cuda {
namespace {

template <typename T>
__global__ void rope_kernel(T* x, int64_t n_heads, int64_t head_dim, int64_t token_stride,
                            const float* __restrict__ cos, const float* __restrict__ sin, int64_t pos0,
                            const int32_t* __restrict__ pos_dev, bool rows_follow_pos) {
  const int64_t t = blockIdx.x, half = head_dim / 2;
  const int64_t base = pos_dev ? *pos_dev : pos0;
  const int64_t pos = base + t;
  T* xt = x + (rows_follow_pos ? pos : t) * token_stride;
  const float* c = cos + pos * half;
  const float* s = sin + pos * half;
  for (int64_t e = threadIdx.x; e < n_heads * half; e += blockDim.x) {
    const int64_t j = e / half, i = e % half;
    T* xh = xt + j * head_dim;
    const float x1 = to_f(xh[i]), x2 = to_f(xh[i + half]);
    xh[i] = from_f<T>(x1 * c[i] - x2 * s[i]);
    xh[i + half] = from_f<T>(x2 * c[i] + x1 * s[i]);
  }
}

}  // namespace

void rope(void* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t token_stride, const float* cos,
          const float* sin, int64_t pos0, const int32_t* pos_dev, bool rows_follow_pos, DType dtype,
          cudaStream_t stream) {
  if (n_tokens <= 0) return;
  const int threads = static_cast<int>(std::min<int64_t>(256, std::max<int64_t>(32, n_heads * head_dim / 2)));
  XC2_CUDA_DISPATCH(dtype, T, {
    launch_kernel(rope_kernel<T>, static_cast<unsigned>(n_tokens), threads, 0, stream, static_cast<T*>(x), n_heads,
                  head_dim, token_stride, cos, sin, pos0, pos_dev, rows_follow_pos);
  });
  launch_check("rope");
}

}  // namespace xc2::kernels::cuda
