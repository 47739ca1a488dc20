#include "support/backend_test_util.h"

#include <cstring>
#include <memory>

#include "core/half.h"
#include "io/checkpoint.h"

namespace xc2::test {

Tensor upload_weight(Backend& be, const std::vector<float>& values, const std::vector<int64_t>& shape, DType dtype) {
  const size_t es = dtype_size(dtype);
  auto bytes = std::make_shared<std::vector<unsigned char>>(values.size() * es);
  for (size_t i = 0; i < values.size(); ++i) {
    unsigned char* dst = bytes->data() + i * es;
    if (dtype == DType::F32) {
      std::memcpy(dst, &values[i], 4);
    } else {
      const uint16_t h = dtype == DType::F16 ? f32_to_f16(values[i]) : f32_to_bf16(values[i]);
      std::memcpy(dst, &h, 2);
    }
  }
  io::TensorView tv;
  tv.name = "test";
  tv.dtype = dtype;
  tv.shape = shape;
  tv.data = bytes->data();
  tv.nbytes = bytes->size();
  Tensor t = be.weight(tv);
  if (!t.owner) t.owner = bytes;  // a view of the host bytes (the CPU backend): keep them
  return t;
}

std::vector<float> to_host(Backend& be, const Tensor& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  be.to_host_f32(t, out.data());
  return out;
}

void attention(Backend& be, const Tensor& q, const Tensor& k, const Tensor& v, int64_t n_kv, int64_t n_heads,
               int64_t n_kv_heads, int64_t head_dim, const Positions& q_pos, bool causal, float scale, Tensor& out) {
  AttentionArgs a(q, k, v, out, n_heads, n_kv_heads, head_dim);
  a.q_pos = q_pos;
  a.n_kv = n_kv;
  a.causal = causal;
  a.scale = scale;
  be.attention(a);
}

}  // namespace xc2::test
