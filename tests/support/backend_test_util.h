// Helpers for tests that drive a Backend (CPU or CUDA): the skip of CUDA cases on machines without a GPU,
// weights uploaded as a checkpoint would hand them over, and results read back as f32.
#pragma once

#include <cstdint>
#include <vector>

#include "backends/backend.h"

// In a CUDA test (label `cuda`): skip when no GPU is present.
#define XC2_SKIP_IF_NO_CUDA()                                                         \
  do {                                                                                \
    if (!::xc2::cuda_device_available()) GTEST_SKIP() << "no CUDA device available"; \
  } while (0)

namespace xc2::test {

// A weight through Backend::weight from host values stored in `dtype` (an io::TensorView like the ones
// a checkpoint gives; the values are rounded to dtype). The host bytes live as long as the tensor.
Tensor upload_weight(Backend& be, const std::vector<float>& values, const std::vector<int64_t>& shape,
                     DType dtype = DType::F32);

// The tensor's values as f32 on the host.
std::vector<float> to_host(Backend& be, const Tensor& t);

// Backend::attention of q over the first n_kv rows of k, v (q_pos: the position of query 0).
void attention(Backend& be, const Tensor& q, const Tensor& k, const Tensor& v, int64_t n_kv, int64_t n_heads,
               int64_t n_kv_heads, int64_t head_dim, const Positions& q_pos, bool causal, float scale, Tensor& out);

}  // namespace xc2::test
