// LtGemm: the linear layers through cuBLASLt (host code only).
//   y[m, n] (+)= x[m, k] . w[n, k]^T (+ bias[n]),  x, w, y, bias all in one dtype (F32, F16 or BF16),
//   f32 accumulation and f32 alpha/beta. F32 uses CUBLAS_COMPUTE_32F, so TF32 is never used.
// Row-major x [m, k] is the column-major k x m matrix B; w [n, k] (checkpoint layout, never transposed) is
// the column-major k x n matrix A used as op(A) = A^T; y [m, n] is the column-major n x m matrix D, so
// D = A^T B. accumulate sets beta = 1 with C = D = y (the Partial-LoRA delta adds into the base output);
// a bias uses the BIAS epilogue, or a separate add when cuBLASLt offers no algorithm with it. A shape with no
// cuBLASLt algorithm at all (odd leading dimensions) goes to the plain tiled kernel linear_simple().
// Descriptors, layouts and the heuristic's algorithm are cached per shape; the handle and workspace belong
// to the object (one per CudaBackend), never to a global.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <tuple>

#include "xc2/dtype.h"

namespace xc2::kernels::cuda {

class LtGemm {
 public:
  LtGemm();
  ~LtGemm();
  LtGemm(const LtGemm&) = delete;
  LtGemm& operator=(const LtGemm&) = delete;

  // workspace: device memory kept alive by the caller (32 MiB is plenty on H100).
  void set_workspace(void* workspace, size_t bytes) {
    workspace_ = workspace;
    workspace_bytes_ = bytes;
  }
  void linear(const void* x, const void* w, const void* bias, void* y, int64_t m, int64_t n, int64_t k,
              bool accumulate, DType dtype, cudaStream_t stream);

 private:
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
    bool bias_epilogue = false;
    bool simple = false;  // no cuBLASLt algorithm: linear_simple() computes this shape
  };
  // (m, n, k, dtype, has_bias, alignment of x / w / y in bytes)
  using Key = std::tuple<int64_t, int64_t, int64_t, int, bool, int, int, int>;
  Plan& plan(const Key& key, const void* bias);

  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  std::map<Key, Plan> plans_;
};

}  // namespace xc2::kernels::cuda
