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
#include "io/gptq.h"
#include "xc2/dtype.h"

namespace xc2 {

class ThreadPool;

// Device-resident int32 values (token ids, a decode position, a penalty mask) for the device decode path.
struct IntBuffer {
  int32_t* data = nullptr;  // device memory
  int64_t size = 0;         // number of int32 values
  std::shared_ptr<void> owner;
};

// An executable graph captured by graph_end() (opaque; a CUDA graph on the CUDA backend).
using GraphHandle = std::shared_ptr<void>;

// Where the positions of a run of T consecutive rows start: known on the host when the op is enqueued, or
// an int32 in an IntBuffer read when the op runs (graph-replayed decode steps). `bound`: for device
// positions, an upper bound of position + T (the KV-cache capacity; it sizes RoPE tables and attention splits).
struct Positions {
  int64_t pos0 = 0;
  const IntBuffer* device = nullptr;
  int64_t bound = 0;
  static Positions at(int64_t pos0) { return Positions{pos0, nullptr, 0}; }
  static Positions in(const IntBuffer& pos, int64_t bound) { return Positions{0, &pos, bound}; }
  bool on_device() const { return device != nullptr; }
  // The first position (reads the buffer: host memory backends only).
  int64_t host_value() const { return device ? device->data[0] : pos0; }
  // An upper bound of the positions of n rows: pos0 + n on the host, `bound` on the device.
  int64_t end(int64_t n) const { return device ? bound : pos0 + n; }
};

// Token ids of an op: host ids, or an IntBuffer read when the op runs.
struct TokenIds {
  const int32_t* host = nullptr;
  const IntBuffer* device = nullptr;
  int64_t n = 0;
  static TokenIds of(const std::vector<int32_t>& ids) {
    return TokenIds{ids.data(), nullptr, static_cast<int64_t>(ids.size())};
  }
  static TokenIds in(const IntBuffer& ids, int64_t n) { return TokenIds{nullptr, &ids, n}; }
};

// Scaled dot-product attention, one struct for every backend:
//   out[i, h, :] = softmax_j(scale * q[i, h, :] . k[j, h / G, :]) v[j, h / G, :],  G = n_heads / n_kv_heads,
// over keys j < n_kv, and with `causal` j <= q_pos + i. q: [n_q, n_heads, head_dim]; k, v: [>= n_kv, n_kv_heads,
// head_dim] (a KV cache: rows are positions); out: [n_q, n_heads * head_dim]. With q_pos on the device, n_kv is
// q_pos + n_q, read when the op runs (the attention of a decode step over its cache).
struct AttentionArgs {
  AttentionArgs() = default;
  AttentionArgs(const Tensor& q_, const Tensor& k_, const Tensor& v_, Tensor& out_, int64_t n_heads_,
                int64_t n_kv_heads_, int64_t head_dim_)
      : q(&q_), k(&k_), v(&v_), out(&out_), n_heads(n_heads_), n_kv_heads(n_kv_heads_), head_dim(head_dim_) {}
  const Tensor* q = nullptr;
  const Tensor* k = nullptr;
  const Tensor* v = nullptr;
  Tensor* out = nullptr;
  int64_t n_heads = 0, n_kv_heads = 0, head_dim = 0;
  Positions q_pos;
  int64_t n_kv = 0;  // host positions: keys used
  bool causal = true;
  float scale = 1.0f;
};

// A GPTQ-quantized linear weight [n, k] as a backend keeps it (repacked at load into the backend's own layout;
// on the CPU a kernels::cpu::QuantMatrix). Empty (impl null) for a 16-bit linear.
struct QuantWeight {
  int64_t n = 0, k = 0;
  int bits = 0;
  int64_t group_size = 0;  // as configured (-1: per channel)
  size_t bytes = 0;        // resident bytes: what one pass over the weight reads
  std::shared_ptr<const void> impl;
  explicit operator bool() const { return impl != nullptr; }
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual std::string name() const = 0;  // "cpu (avx512, 2 threads)", "cuda (NVIDIA H100 ...)"
  virtual DType act_dtype() const = 0;

  // ---- memory ----
  virtual Tensor empty(const std::vector<int64_t>& shape, DType dtype) = 0;
  Tensor empty(const std::vector<int64_t>& shape) { return empty(shape, act_dtype()); }
  // How a weight is read: Streamed, whole at every step (the CPU backend may copy it into huge pages);
  // Gathered, a few rows at a time (the embedding table: the CPU backend leaves it mapped, so only the rows
  // that are looked up become resident).
  enum class WeightUse { Streamed, Gathered };
  virtual Tensor weight(const io::TensorView& w, WeightUse use) = 0;
  Tensor weight(const io::TensorView& w) { return weight(w, WeightUse::Streamed); }
  // Called once before a model's weight() calls with the checkpoint's total size (a placement hint).
  virtual void plan_weights(uint64_t total_bytes) { (void)total_bytes; }
  // Called once after a model's last weight() / quant_weight() call, with the checkpoint they came from.
  virtual void weights_loaded(const io::Checkpoint& checkpoint) { (void)checkpoint; }
  virtual Tensor from_host_f32(const float* data, const std::vector<int64_t>& shape) = 0;  // -> act_dtype
  virtual void to_host_f32(const Tensor& t, float* dst) = 0;
  virtual void copy(const Tensor& src, Tensor& dst) = 0;  // same dtype and element count
  virtual void synchronize() {}

  // ---- ops ----
  // The op front end: each op checks its shapes here, once for every backend, then calls the backend's
  // do_* implementation, which only translates the call to its kernels.

  // y (+)= x . w^T (+ bias).  x: [m, k]; w: [n, k]; bias: [n] or null; y: [m, n]
  void linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y, bool accumulate);
  // The same with a quantized weight (and its bias, if the checkpoint has one): y (+)= x . dequant(w)^T (+ bias).
  void linear_q(const Tensor& x, const QuantWeight& w, Tensor& y, bool accumulate);
  // A quantized linear with row deltas (the PLoRA B products of image rows on the fast path):
  // y = x . dequant(w)^T (+ bias), then y[d.row0, d.row0 + d.t->rows()) += *d.t . dequant(b)^T (+ b's bias) for each
  // d. A backend may fuse the deltas into the main product's pass (same results); by default they follow it.
  struct RowDelta {
    int64_t row0 = 0;
    const Tensor* t = nullptr;
  };
  void linear_q_deltas(const Tensor& x, const QuantWeight& w, const QuantWeight& b, const std::vector<RowDelta>& d,
                       Tensor& y);
  // Repacks a validated GPTQ linear (io/gptq.h) for this backend. Default: Error{Unsupported}.
  virtual QuantWeight quant_weight(const io::GptqLinearViews& v);
  // Quantized linears: exact (f32 math on the dequantized weights; the default) or, where the backend has
  // them, faster kernels that round the activations (CPU: int8 per 32 columns, AVX2 and up).
  virtual void set_exact_quant(bool exact) { (void)exact; }
  // On the fast path (set_exact_quant(false) first), a 16-bit weight [n, k] of a quantized model that stays 16-bit
  // in the checkpoint (the PLoRA A/B) rounded to 8 bits for the int8 kernels, or empty where the backend keeps it
  // 16-bit (exact path, no int8 kernel for this shape, or a backend without one). CPU: symmetric round to nearest
  // with one scale per row (kernels::cpu::quantize_rtn8).
  virtual QuantWeight quant_weight_int8(const io::TensorView& w) {
    (void)w;
    return {};
  }
  // x, y: [rows, dim]; w (and b): [dim]. y may be x.
  void rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& y);
  void layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps, Tensor& y);
  void add(const Tensor& a, const Tensor& b, Tensor& y);  // y may alias a or b
  void scale(Tensor& x, float s);
  void silu_mul(const Tensor& gate, const Tensor& up, Tensor& y);  // y may alias gate or up
  void gelu_erf(Tensor& x);
  void quick_gelu(Tensor& x);
  // y[t, :] = table[ids[t], :]. table: [vocab, dim] weight; y: [ids.n, dim]
  void embedding(const Tensor& table, const TokenIds& ids, Tensor& y);
  // Splits packed wqkv output rows (model-spec §4.2, groups of G query heads + 1 K + 1 V head) into
  // q [T, n_heads, head_dim] and the rows pos .. pos + T - 1 of k_cache, v_cache [capacity, n_kv_heads, head_dim].
  void split_qkv(const Tensor& qkv, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, Tensor& q,
                 Tensor& k_cache, Tensor& v_cache, const Positions& pos);
  // In-place rotary embedding (rotate_half) of n_tokens tokens at positions pos .. pos + n_tokens - 1 with base
  // theta; inv_freq, angles and cos/sin follow the upstream fp32 recipe. x: [rows, n_heads, head_dim]; token t is
  // row t, or with rows_at_pos (x is a whole KV cache) row pos + t.
  void rope(Tensor& x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, const Positions& pos, bool rows_at_pos,
            double theta);
  void attention(const AttentionArgs& args);
  // pixels: [N, 3, S, S] -> cols: [N * g * g, 3 * p * p]
  void im2col_patches(const Tensor& pixels, int64_t patch, Tensor& cols);

  // ---- int32 buffers (token ids, positions, penalty masks); device memory on a GPU, host memory on the CPU ----
  virtual IntBuffer ints(int64_t n);                                          // zero-filled
  virtual void write_ints(IntBuffer& dst, const std::vector<int32_t>& values);  // values.size() <= dst.size
  virtual std::vector<int32_t> read_ints(const IntBuffer& src, int64_t n);      // waits for the device

  // ---- device-resident decode steps (optional; the CPU backend has none) ----
  // A decode step whose token id and position live in device memory, so it can be captured once as a graph
  // and replayed, and whose next token is chosen on the device (engine/device_decoder.h drives these). The
  // defaults throw Error{Unsupported}; supports_device_decode() says whether a backend has them.
  virtual bool supports_device_decode() const { return false; }
  // Token selection on logits [1, vocab] with the repetition penalty on ids flagged in `seen` ([vocab], 0/1):
  //   select_greedy: token[0] = argmax (lowest id on ties);
  //   select_candidates: after penalty and / temperature, every id >= the top_k-th largest value (ties kept):
  //   out[0] = count, out[1 .. cap] = ids, out[1 + cap .. 2 cap] = f32 bits of the values, cap = (size - 1) / 2.
  virtual void select_greedy(const Tensor& logits, const IntBuffer& seen, float penalty, IntBuffer& token);
  virtual void select_candidates(const Tensor& logits, const IntBuffer& seen, float penalty, float temperature,
                                 int top_k, IntBuffer& out);
  virtual void mark_seen(IntBuffer& seen, const IntBuffer& token);  // seen[token[0]] = 1
  virtual void add_to(IntBuffer& x, int32_t delta);                 // x[0] += delta
  // Graph capture: ops enqueued between graph_begin() and graph_end() are recorded, not run; graph_launch()
  // runs them. Tensors allocated while capturing stay reserved for the graph until the handle is released.
  virtual bool supports_graphs() const { return false; }
  virtual void graph_begin();
  virtual GraphHandle graph_end();
  virtual void graph_launch(const GraphHandle& graph);

  // ---- device limits for `xc2 bench` (0 where a backend does not measure them) ----
  // Device-to-device copy of a large buffer: (bytes read + bytes written) per second, in GB/s.
  virtual double measure_copy_bandwidth_gbs() { return 0; }
  // Theoretical memory bandwidth from the memory clock and bus width, in GB/s.
  virtual double peak_bandwidth_gbs() const { return 0; }
  // Device memory, in bytes (all 0 on the CPU). needed: what xc2's tensors and recorded graphs hold now
  // (allocator blocks handed out, plus every block a graph keeps); peak: its maximum since
  // reset_memory_peak(); cached: held by the allocator on top, free for reuse (given back when the device
  // runs out); device_used / device_total: the whole device as the driver reports it (the CUDA context,
  // cuBLASLt and any other process included).
  struct MemoryStats {
    uint64_t needed = 0, peak = 0, cached = 0, device_used = 0, device_total = 0;
  };
  virtual MemoryStats memory_stats() { return {}; }
  virtual void reset_memory_peak() {}

 protected:
  // Implementations behind the front end above; arguments are checked. Positions on the device are read
  // when the op runs (for a captured graph, at every replay).
  virtual void do_linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y, bool accumulate) = 0;
  virtual void do_linear_q(const Tensor& x, const QuantWeight& w, Tensor& y, bool accumulate);  // default: Unsupported
  // Default: do_linear_q, then one accumulating do_linear_q per delta.
  virtual void do_linear_q_deltas(const Tensor& x, const QuantWeight& w, const QuantWeight& b,
                                  const std::vector<RowDelta>& d, Tensor& y);
  virtual void do_rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& y) = 0;
  virtual void do_layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps, Tensor& y) = 0;
  virtual void do_add(const Tensor& a, const Tensor& b, Tensor& y) = 0;
  virtual void do_scale(Tensor& x, float s) = 0;
  virtual void do_silu_mul(const Tensor& gate, const Tensor& up, Tensor& y) = 0;
  virtual void do_gelu_erf(Tensor& x) = 0;
  virtual void do_quick_gelu(Tensor& x) = 0;
  virtual void do_embedding(const Tensor& table, const TokenIds& ids, Tensor& y) = 0;
  virtual void do_split_qkv(const Tensor& qkv, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, Tensor& q,
                            Tensor& k_cache, Tensor& v_cache, const Positions& pos) = 0;
  virtual void do_rope(Tensor& x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, const Positions& pos,
                       bool rows_at_pos, double theta) = 0;
  virtual void do_attention(const AttentionArgs& args) = 0;
  virtual void do_im2col_patches(const Tensor& pixels, int64_t patch, Tensor& cols) = 0;
};

// Where the CPU backend keeps weights: Auto copies large tensors into transparent-huge-page memory when
// the machine has room (XC2_CPU_HUGEPAGES overrides; see weight() in cpu_backend.cpp), Mapped always reads
// them in place from the mapped checkpoint (for loads that only inspect a model).
enum class CpuWeights { Auto, Mapped };
// The CPU backend with its own thread pool (n_threads <= 0: all cores).
std::unique_ptr<Backend> make_cpu_backend(int n_threads, CpuWeights weights = CpuWeights::Auto);
// The CUDA backend on GPU `device_index` with an activation/weight dtype: F32 (f32 weights and math, TF32 off:
// checked against the CPU backend), BF16 (the engine's default) or F16. Error{Unsupported} when xc2 was built
// without CUDA, Error{Cuda} when no usable GPU is present.
std::unique_ptr<Backend> make_cuda_backend(int device_index, DType act_dtype);
bool cuda_device_available();

// rope tables as upstream builds them in fp32: inv_freq[i] = 1 / theta^(2i/d) (f32 pow),
// angle = f32(pos) * inv_freq[i] (f32 product), then cos/sin of that f32 angle.
// cos, sin: [n_tokens, head_dim / 2].
void rope_tables(int64_t pos0, int64_t n_tokens, int64_t head_dim, double theta, float* cos, float* sin);

}  // namespace xc2
