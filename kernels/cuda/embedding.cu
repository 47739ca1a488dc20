// Row gathers and re-layouts:
//   embedding:       y[t, :] = table[ids[t], :]                       (ids on the device)
//   im2col_patches:  pixels [N, 3, S, S] -> cols [N * g * g, 3 * p * p], (channel, ky, kx) per patch
//   split_qkv:       packed wqkv rows (model-spec §4.2) -> q, and k, v rows of a KV cache
// Geometry: embedding and split_qkv use one block per token row (256 threads striding over the row);
// im2col is a grid-stride loop over the output elements.
#include "cuda/common.cuh"
#include "cuda/cuda_kernels.h"

namespace xc2::kernels::cuda {
namespace {

template <typename T>
__global__ void embedding_kernel(const T* __restrict__ table, const int32_t* __restrict__ ids, int64_t dim,
                                 T* __restrict__ y) {
  const T* src = table + static_cast<int64_t>(ids[blockIdx.x]) * dim;
  T* dst = y + blockIdx.x * dim;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) dst[i] = src[i];
}

template <typename T>
__global__ void im2col_kernel(const T* __restrict__ pixels, int64_t n_images, int64_t size, int64_t patch,
                              T* __restrict__ cols) {
  const int64_t g = size / patch, pp = patch * patch, row_len = 3 * pp;
  const int64_t n = n_images * g * g * row_len;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = i / row_len, col = i % row_len;
    const int64_t img = row / (g * g), cell = row % (g * g), gy = cell / g, gx = cell % g;
    const int64_t c = col / pp, ky = (col % pp) / patch, kx = col % patch;
    cols[i] = pixels[((img * 3 + c) * size + gy * patch + ky) * size + gx * patch + kx];
  }
}

template <typename T>
__global__ void split_qkv_kernel(const T* __restrict__ qkv, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                                 T* __restrict__ q, T* __restrict__ k, T* __restrict__ v,
                                 const int32_t* __restrict__ pos_dev) {
  const int64_t t = blockIdx.x, group = n_heads / n_kv_heads, gw = (group + 2) * head_dim;
  const int64_t row = (n_heads + 2 * n_kv_heads) * head_dim;
  const int64_t kv_row = (pos_dev ? *pos_dev : 0) + t;
  const T* src = qkv + t * row;
  for (int64_t c = threadIdx.x; c < row; c += blockDim.x) {
    const int64_t g = c / gw, s = (c % gw) / head_dim, d = c % head_dim;
    if (s < group) q[(t * n_heads + g * group + s) * head_dim + d] = src[c];
    else if (s == group) k[(kv_row * n_kv_heads + g) * head_dim + d] = src[c];
    else v[(kv_row * n_kv_heads + g) * head_dim + d] = src[c];
  }
}

}  // namespace

void embedding(const void* table, const int32_t* ids, int64_t n_ids, int64_t dim, void* y, DType dtype,
               cudaStream_t stream) {
  if (n_ids <= 0) return;
  XC2_CUDA_DISPATCH(dtype, T, {
    launch_kernel(embedding_kernel<T>, static_cast<unsigned>(n_ids), 256, 0, stream, static_cast<const T*>(table), ids,
                  dim, static_cast<T*>(y));
  });
  launch_check("embedding");
}

void im2col_patches(const void* pixels, int64_t n_images, int64_t size, int64_t patch, void* cols, DType dtype,
                    cudaStream_t stream) {
  const int64_t g = size / patch, n = n_images * g * g * 3 * patch * patch;
  if (n <= 0) return;
  const int grid = static_cast<int>(std::min<int64_t>(ceil_div(n, 256), 65535));
  XC2_CUDA_DISPATCH(dtype, T, {
    launch_kernel(im2col_kernel<T>, grid, 256, 0, stream, static_cast<const T*>(pixels), n_images, size, patch,
                  static_cast<T*>(cols));
  });
  launch_check("im2col_patches");
}

void split_qkv(const void* qkv, int64_t n_tokens, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, void* q,
               void* k, void* v, const int32_t* pos_dev, DType dtype, cudaStream_t stream) {
  if (n_tokens <= 0) return;
  XC2_CUDA_DISPATCH(dtype, T, {
    launch_kernel(split_qkv_kernel<T>, static_cast<unsigned>(n_tokens), 256, 0, stream, static_cast<const T*>(qkv),
                  n_heads, n_kv_heads, head_dim, static_cast<T*>(q), static_cast<T*>(k), static_cast<T*>(v), pos_dev);
  });
  launch_check("split_qkv");
}

}  // namespace xc2::kernels::cuda
