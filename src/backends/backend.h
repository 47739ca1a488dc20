// The device interface the model is written against. One virtual per op; CPU always, CUDA when built.
// Activations live on the backend's device in act_dtype() (f32 on the CPU). Weights come from the
// checkpoint through weight(): the CPU backend views the mapped file, a GPU backend uploads a copy.
// Shapes are checked by the callers (src/model); the backends assume valid arguments.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/checkpoint.h"
#include "xc2/dtype.h"

namespace xc2 {

class ThreadPool;

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual std::string name() const = 0;  // "cpu (avx512, 2 threads)", "cuda (NVIDIA H100 ...)"
  virtual DType act_dtype() const = 0;

  // ---- memory ----
  virtual Tensor empty(const std::vector<int64_t>& shape, DType dtype) = 0;
  Tensor empty(const std::vector<int64_t>& shape) { return empty(shape, act_dtype()); }
  virtual Tensor weight(const io::TensorView& w) = 0;
  virtual Tensor from_host_f32(const float* data, const std::vector<int64_t>& shape) = 0;  // -> act_dtype
  virtual void to_host_f32(const Tensor& t, float* dst) = 0;
  virtual void copy(const Tensor& src, Tensor& dst) = 0;  // same dtype and element count
  virtual void synchronize() {}

  // ---- ops ----
  // y (+)= x . w^T (+ bias).  x: [m, k]; w: [n, k]; bias: [n] or null; y: [m, n]
  virtual void linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y, bool accumulate) = 0;
  // x, y: [rows, dim]; w (and b): [dim]. y may be x.
  virtual void rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& y) = 0;
  virtual void layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps, Tensor& y) = 0;
  virtual void add(const Tensor& a, const Tensor& b, Tensor& y) = 0;  // y may alias a or b
  virtual void scale(Tensor& x, float s) = 0;
  virtual void silu_mul(const Tensor& gate, const Tensor& up, Tensor& y) = 0;
  virtual void gelu_erf(Tensor& x) = 0;
  virtual void quick_gelu(Tensor& x) = 0;
  // y[t, :] = table[ids[t], :]. table: [vocab, dim] weight; y: [ids.size(), dim]
  virtual void embedding(const Tensor& table, const std::vector<int32_t>& ids, Tensor& y) = 0;

  // Splits packed wqkv output rows (model-spec §4.2, groups of G query heads + 1 K + 1 V head) into
  // q [T, n_heads, head_dim] and k, v [T, n_kv_heads, head_dim] (k and v may be KV-cache row views).
  virtual void split_qkv(const Tensor& qkv, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, Tensor& q,
                         Tensor& k, Tensor& v) = 0;
  // In-place rotary embedding (rotate_half) on x: [T, n_heads, head_dim] for positions pos0 .. pos0+T-1
  // with base theta; inv_freq, angles and cos/sin follow the upstream fp32 recipe.
  virtual void rope(Tensor& x, int64_t n_heads, int64_t head_dim, int64_t pos0, double theta) = 0;
  // q: [T, n_heads, head_dim]; k, v: [n_kv, n_kv_heads, head_dim] (the first n_kv rows are used);
  // out: [T, n_heads * head_dim]. Causal: query i sits at position q_pos0 + i.
  virtual void attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t n_kv, int64_t n_heads,
                         int64_t n_kv_heads, int64_t head_dim, int64_t q_pos0, bool causal, float scale,
                         Tensor& out) = 0;
  // pixels: [N, 3, S, S] -> cols: [N * g * g, 3 * p * p]
  virtual void im2col_patches(const Tensor& pixels, int64_t patch, Tensor& cols) = 0;
};

// The CPU backend with its own thread pool (n_threads <= 0: all cores).
std::unique_ptr<Backend> make_cpu_backend(int n_threads);
// The CUDA backend (device index); Error{Unsupported} when xc2 was built without CUDA,
// Error{Cuda} when no usable GPU is present.
std::unique_ptr<Backend> make_cuda_backend(int device_index);
bool cuda_device_available();

// rope tables as upstream builds them in fp32: inv_freq[i] = 1 / theta^(2i/d) (f32 pow),
// angle = f32(pos) * inv_freq[i] (f32 product), then cos/sin of that f32 angle.
// cos, sin: [n_tokens, head_dim / 2].
void rope_tables(int64_t pos0, int64_t n_tokens, int64_t head_dim, double theta, float* cos, float* sin);

}  // namespace xc2
