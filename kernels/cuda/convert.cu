// Element type conversion on the device: dst[i] = dst_type(src[i]) (round to nearest even).
// Used for weight upload (checkpoint dtype -> backend dtype) and for Backend::copy between dtypes.
// Geometry: grid-stride loop, 256 threads per block.
#include "cuda/common.cuh"
#include "cuda/cuda_kernels.h"

namespace xc2::kernels::cuda {
namespace {

template <typename S, typename D>
__global__ void convert_kernel(const S* __restrict__ src, D* __restrict__ dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = from_f<D>(to_f(src[i]));
}

int grid_for(int64_t n) { return static_cast<int>(std::min<int64_t>(ceil_div(n, 256), 65535)); }

}  // namespace

void convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  if (src_dtype == dst_dtype) {
    const cudaError_t e = cudaMemcpyAsync(dst, src, static_cast<size_t>(n) * dtype_size(src_dtype),
                                          cudaMemcpyDeviceToDevice, stream);
    if (e != cudaSuccess) XC2_THROW(Cuda, "cudaMemcpyAsync (convert): ", cudaGetErrorString(e));
    return;
  }
  XC2_CUDA_DISPATCH(src_dtype, S, XC2_CUDA_DISPATCH(dst_dtype, D, {
    launch_kernel(convert_kernel<S, D>, grid_for(n), 256, 0, stream, static_cast<const S*>(src), static_cast<D*>(dst),
                  n);
  }));
  launch_check("convert");
}

}  // namespace xc2::kernels::cuda
