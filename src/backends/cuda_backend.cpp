// CudaBackend: the Backend interface on one NVIDIA GPU (compiled only with XC2_WITH_CUDA).
//   - One stream, one cuBLASLt handle and a 32 MiB cuBLASLt workspace, and a caching device allocator,
//     all members of the backend (no globals, no thread_local).
//   - Activations and weights in one dtype: BF16 (default), F16, or F32 (weights widened, CUBLAS_COMPUTE_32F:
//     no TF32) so the tiny models can be checked token for token against the CPU backend. Weights are
//     uploaded once through weight(), converted on the device from the checkpoint dtype.
//   - Linear layers through cuBLASLt (kernels/cuda/gemm.h), except m <= 8 rows (decode), which take the
//     bandwidth-bound GEMV kernel (XC2_CUDA_GEMV=0 forces cuBLASLt). accumulate = true is beta = 1. Shapes
//     cuBLASLt has no algorithm for, and all of them with XC2_CUDA_GEMM=simple, take a plain tiled kernel.
//   - GPTQ linears (quant_weight / linear_q): repacked on the host at load into the layout of
//     kernels/common/gptq_gpu.h (backends/gptq_gpu_layout.h) and uploaded; m <= 16 rows take the W4A16 / W8A16
//     GEMV (kernels/cuda/qgemv.cu), more rows dequantize the weight into one scratch buffer in the activation
//     dtype (grow-only, sized by the largest weight dequantized so far) and run the cuBLASLt linear on it. Act-order
//     checkpoints gather x's columns into the layout's order first. XC2_CUDA_GEMV=0 sends every row count
//     through the dequantize + cuBLASLt path.
//   - RoPE tables (rope_tables(), f32, exactly the CPU's numbers) are built on the host once per theta for
//     a range of positions and kept on the device, so decode steps upload nothing.
//   - Out of device memory: the allocator waits for the stream, returns its cached blocks to the driver and
//     tries again (during a graph capture, where no wait is allowed, it reuses a cached block instead).
//   - The host waits for the GPU only in to_host_f32(), read_ints() and synchronize(). XC2_CUDA_SYNC=1
//     synchronises after every op, so an asynchronous fault is reported by the op that caused it.
//   - Every CUDA / cuBLASLt failure becomes xc2::Error{Cuda} with the call and cudaGetErrorString().
#include "xc2/build_config.h"

#if XC2_WITH_CUDA

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "backends/gptq_gpu_layout.h"
#include "backends/kernel_args.h"
#include "core/check.h"
#include "core/env.h"
#include "core/log.h"
#include "cuda/cuda_kernels.h"
#include "cuda/gemm.h"

namespace xc2 {
namespace {

namespace kc = kernels::cuda;

#define XC2_CUDA_CHECK(expr)                                                                         \
  do {                                                                                               \
    const cudaError_t xc2_e_ = (expr);                                                               \
    if (xc2_e_ != cudaSuccess) {                                                                     \
      (void)cudaGetLastError(); /* cleared, so that the next check does not report it again */       \
      XC2_THROW(Cuda, "CUDA call failed: ", #expr, ": ", cudaGetErrorName(xc2_e_), ": ",             \
                cudaGetErrorString(xc2_e_));                                                         \
    }                                                                                                \
  } while (0)

// ---- caching allocator --------------------------------------------------------------------------------
// Blocks are rounded (512 B below 1 MiB, 128 KiB above) and kept on a free list when released, so the
// steady state allocates nothing. Safe to reuse at once because all work runs on one stream, in order.
// A pool is shared by the tensors it handed out (their deleters hold it), so it outlives the backend if
// a tensor does. A CUDA graph gets its own pool: what a captured step used stays reserved for replays.

// Byte counts shared by a backend's pools: the main pool's blocks handed out, every block a graph pool
// holds, and all that cudaMalloc gave (reserved).
struct PoolUsage {
  std::mutex mu;
  uint64_t main_in_use = 0, graph_held = 0, reserved = 0, peak = 0;
  void bump() { peak = std::max(peak, main_in_use + graph_held); }
};

class DevicePool {
 public:
  DevicePool(std::shared_ptr<PoolUsage> usage, bool graph) : usage_(std::move(usage)), graph_(graph) {}
  ~DevicePool() {
    std::lock_guard<std::mutex> lock(usage_->mu);
    for (auto& [size, p] : free_) {
      cudaFree(p);
      usage_->reserved -= size;
      if (graph_) usage_->graph_held -= size;
    }
  }
  DevicePool(const DevicePool&) = delete;
  DevicePool& operator=(const DevicePool&) = delete;

  static size_t round(size_t bytes) {
    if (bytes == 0) bytes = 1;
    const size_t q = bytes < (size_t(1) << 20) ? 512 : (size_t(128) << 10);
    return (bytes + q - 1) / q * q;
  }

  // A cached block of at least `bytes` (and at most 1/8 larger), else a new cudaMalloc; nullptr when the
  // device is out of memory.
  void* try_alloc(size_t bytes, size_t* got) {
    const size_t want = round(bytes);
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.lower_bound(want);
      if (it != free_.end() && it->first <= want + want / 8) {
        void* p = it->second;
        *got = it->first;
        free_.erase(it);
        handed_out(*got);
        return p;
      }
    }
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, want);
    if (e == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      return nullptr;
    }
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      XC2_THROW(Cuda, "cudaMalloc of ", want, " bytes failed: ", cudaGetErrorString(e));
    }
    *got = want;
    {
      std::lock_guard<std::mutex> lock(usage_->mu);
      usage_->reserved += want;
      if (graph_) usage_->graph_held += want;
    }
    handed_out(want);
    return p;
  }

  // The smallest cached block of at least `bytes`, whatever its slack, taken off the free list for `to`
  // (which owns it from now on); nullptr if none.
  void* take_cached(size_t bytes, size_t* got, DevicePool& to) {
    void* p = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.lower_bound(round(bytes));
      if (it == free_.end()) return nullptr;
      *got = it->first;
      p = it->second;
      free_.erase(it);
    }
    std::lock_guard<std::mutex> ulock(usage_->mu);
    if (graph_) usage_->graph_held -= *got;
    if (to.graph_) usage_->graph_held += *got;
    else usage_->main_in_use += *got;
    usage_->bump();
    return p;
  }

  void release(void* p, size_t size) {
    std::lock_guard<std::mutex> lock(mu_);
    free_.emplace(size, p);
    if (!graph_) {
      std::lock_guard<std::mutex> ulock(usage_->mu);
      usage_->main_in_use -= size;
    }
  }

  // cudaFree every cached block. The caller makes sure that no queued work uses them and that no graph is being
  // captured (cudaFree synchronises).
  void free_cached() {
    std::lock_guard<std::mutex> lock(mu_);
    std::lock_guard<std::mutex> ulock(usage_->mu);
    for (auto& [size, p] : free_) {
      cudaFree(p);
      usage_->reserved -= size;
      if (graph_) usage_->graph_held -= size;
    }
    free_.clear();
  }

 private:
  void handed_out(size_t size) {
    if (graph_) return;  // a graph pool's blocks count from their cudaMalloc on
    std::lock_guard<std::mutex> lock(usage_->mu);
    usage_->main_in_use += size;
    usage_->bump();
  }

  std::shared_ptr<PoolUsage> usage_;
  bool graph_;
  std::mutex mu_;
  std::multimap<size_t, void*> free_;
};

std::shared_ptr<void> pool_owner(const std::shared_ptr<DevicePool>& pool, void* p, size_t size) {
  return std::shared_ptr<void>(p, [pool, size](void* q) { pool->release(q, size); });
}

struct CudaGraph {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  std::shared_ptr<DevicePool> pool;  // the memory the captured ops use
  ~CudaGraph() {
    if (exec) cudaGraphExecDestroy(exec);
    if (graph) cudaGraphDestroy(graph);
  }
};

struct RopeTable {
  double theta = 0;
  int64_t head_dim = 0, n_positions = 0;
  Tensor cos, sin;  // [n_positions, head_dim / 2] f32 on the device
  uint64_t last_use = 0;
  bool in_graph = false;  // looked up while a graph was being captured
};

// A GPTQ linear on the device: the arrays of its GptqGpuLayout (the blocks keep them alive).
struct CudaGptq {
  kc::GptqDeviceWeight w;
  const int32_t* perm = nullptr;  // [k] or null (identity)
  std::vector<std::shared_ptr<void>> blocks;
  Tensor bias;                    // [n] in the activation dtype, or empty
};

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, DType act) : device_(device), act_(act) {
    int n = 0;
    XC2_CUDA_CHECK(cudaGetDeviceCount(&n));
    XC2_CHECK(device >= 0 && device < n, Cuda, "CUDA device ", device, " does not exist (", n, " found)");
    XC2_CUDA_CHECK(cudaSetDevice(device));
    XC2_CUDA_CHECK(cudaGetDeviceProperties(&prop_, device));
    XC2_CHECK(prop_.major >= 8, Unsupported, "GPU '", prop_.name, "' has compute capability ", prop_.major, ".",
              prop_.minor, "; xc2 needs 8.0 or newer (bf16 tensor cores)");
    XC2_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    usage_ = std::make_shared<PoolUsage>();
    pool_ = std::make_shared<DevicePool>(usage_, false);
    active_pool_ = pool_;
    workspace_ = alloc_raw(kWorkspaceBytes);
    lt_ = std::make_unique<kc::LtGemm>();
    lt_->set_workspace(workspace_.get(), kWorkspaceBytes);
    sync_each_op_ = env_flag("XC2_CUDA_SYNC", false);
    use_gemv_ = env_flag("XC2_CUDA_GEMV", true);
    const char* gemm = std::getenv("XC2_CUDA_GEMM");
    simple_gemm_ = gemm != nullptr && std::strcmp(gemm, "simple") == 0;
    use_flash_ = env_flag("XC2_CUDA_FLASH", true);
    XC2_CUDA_CHECK(cudaMallocHost(&pinned_, kPinnedBytes));
  }

  ~CudaBackend() override {
    cudaStreamSynchronize(stream_);
    rope_.clear();
    retired_.clear();
    dequant_.reset();
    lt_.reset();
    workspace_.reset();
    if (pinned_) cudaFreeHost(pinned_);
    cudaStreamDestroy(stream_);
  }

  Device device() const override { return Device::Cuda; }
  std::string name() const override {
    return std::string("cuda (") + prop_.name + ", sm_" + std::to_string(prop_.major * 10 + prop_.minor) + ", " +
           dtype_name(act_) + ")";
  }
  DType act_dtype() const override { return act_; }

  // ---- memory ----

  Tensor empty(const std::vector<int64_t>& shape, DType dtype) override {
    Tensor t;
    t.dtype = dtype;
    t.device = Device::Cuda;
    t.shape = shape;
    for (int64_t d : shape) XC2_CHECK(d >= 0, Internal, "negative tensor dimension in ", t.shape_str());
    t.owner = device_alloc(t.nbytes());
    t.data = t.owner.get();
    return t;
  }

  using Backend::weight;
  Tensor weight(const io::TensorView& w, WeightUse /*use*/) override {
    Tensor t = empty(w.shape, act_);
    const int64_t n = t.numel();
    if (n == 0) return t;
    const size_t src_es = dtype_size(w.dtype);
    // Upload in chunks through the pinned buffer, converting on the device when the dtypes differ.
    const int64_t chunk = static_cast<int64_t>(kPinnedBytes / src_es);
    std::shared_ptr<void> staging;
    if (w.dtype != act_) staging = alloc_raw(static_cast<size_t>(std::min(n, chunk)) * src_es);
    const char* src = static_cast<const char*>(w.data);
    for (int64_t i = 0; i < n; i += chunk) {
      const int64_t c = std::min(chunk, n - i);
      const size_t bytes = static_cast<size_t>(c) * src_es;
      XC2_CUDA_CHECK(cudaStreamSynchronize(stream_));  // the pinned buffer is free again
      std::memcpy(pinned_, src + static_cast<size_t>(i) * src_es, bytes);
      if (w.dtype == act_) {
        XC2_CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(t.data) + static_cast<size_t>(i) * src_es, pinned_, bytes,
                                       cudaMemcpyHostToDevice, stream_));
      } else {
        XC2_CUDA_CHECK(cudaMemcpyAsync(staging.get(), pinned_, bytes, cudaMemcpyHostToDevice, stream_));
        kc::convert(staging.get(), w.dtype, static_cast<char*>(t.data) + static_cast<size_t>(i) * dtype_size(act_),
                    act_, c, stream_);
      }
    }
    XC2_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return t;
  }

  Tensor from_host_f32(const float* data, const std::vector<int64_t>& shape) override {
    Tensor t = empty(shape, act_);
    const int64_t n = t.numel();
    if (n == 0) return t;
    if (act_ == DType::F32) {
      XC2_CUDA_CHECK(cudaMemcpyAsync(t.data, data, t.nbytes(), cudaMemcpyHostToDevice, stream_));
    } else {
      Tensor tmp = empty(shape, DType::F32);
      XC2_CUDA_CHECK(cudaMemcpyAsync(tmp.data, data, tmp.nbytes(), cudaMemcpyHostToDevice, stream_));
      kc::convert(tmp.data, DType::F32, t.data, act_, n, stream_);
    }
    after_op("from_host_f32");
    return t;
  }

  void to_host_f32(const Tensor& t, float* dst) override {
    const int64_t n = t.numel();
    if (n == 0) return;
    if (t.device == Device::Cpu) {
      XC2_CHECK(t.dtype == DType::F32, Internal, "to_host_f32: host tensor in ", dtype_name(t.dtype));
      std::memcpy(dst, t.data, t.nbytes());
      return;
    }
    if (t.dtype == DType::F32) {
      XC2_CUDA_CHECK(cudaMemcpyAsync(dst, t.data, t.nbytes(), cudaMemcpyDeviceToHost, stream_));
    } else {
      Tensor tmp = empty(t.shape, DType::F32);
      kc::convert(t.data, t.dtype, tmp.data, DType::F32, n, stream_);
      XC2_CUDA_CHECK(cudaMemcpyAsync(dst, tmp.data, tmp.nbytes(), cudaMemcpyDeviceToHost, stream_));
    }
    XC2_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  void copy(const Tensor& src, Tensor& dst) override {
    XC2_CHECK(src.numel() == dst.numel(), Internal, "copy: ", src.shape_str(), " into ", dst.shape_str());
    if (src.numel() == 0) return;
    if (src.dtype == dst.dtype) {
      XC2_CUDA_CHECK(cudaMemcpyAsync(dst.data, src.data, src.nbytes(), cudaMemcpyDefault, stream_));
    } else {
      XC2_CHECK(src.device == Device::Cuda && dst.device == Device::Cuda, Internal,
                "copy: dtype conversion only between device tensors");
      kc::convert(src.data, src.dtype, dst.data, dst.dtype, src.numel(), stream_);
    }
    after_op("copy");
  }

  void synchronize() override { XC2_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

  // ---- ops ----

  void do_linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y, bool accumulate) override {
    check_act(x, "linear x");
    check_act(w, "linear w");
    check_act(y, "linear y");
    if (bias) check_act(*bias, "linear bias");
    const int64_t m = x.rows(), k = x.row_numel(), n = w.rows();
    if (simple_gemm_) {
      kc::linear_simple(x.data, w.data, bias ? bias->data : nullptr, y.data, m, n, k, accumulate, act_, stream_);
    } else if (use_gemv_ && m <= kc::kGemvMaxRows && kc::gemv_fits(x.data, w.data, m, k, act_)) {
      kc::gemv(x.data, w.data, bias ? bias->data : nullptr, y.data, m, n, k, accumulate, act_, stream_);
    } else {
      lt_->linear(x.data, w.data, bias ? bias->data : nullptr, y.data, m, n, k, accumulate, act_, stream_);
    }
    after_op("linear");
  }

  QuantWeight quant_weight(const io::GptqLinearViews& v) override {
    XC2_CHECK(!capturing_, Internal, "quant_weight while a graph is being captured");
    const GptqGpuLayout lay = gptq_gpu_layout(v);
    auto g = std::make_shared<CudaGptq>();
    // Plain copies on the backend's stream (the pool's blocks may still be in use by queued work); the wait at
    // the end lets the host arrays go.
    auto upload = [&](const void* host, size_t bytes) -> void* {
      if (bytes == 0) return nullptr;
      std::shared_ptr<void> d = alloc_raw(bytes);
      XC2_CUDA_CHECK(cudaMemcpyAsync(d.get(), host, bytes, cudaMemcpyHostToDevice, stream_));
      g->blocks.push_back(d);
      return d.get();
    };
    kc::GptqDeviceWeight& d = g->w;
    d.q = static_cast<const uint32_t*>(upload(lay.q.data(), lay.q.size() * 4));
    d.sz = static_cast<const float*>(upload(lay.sz.data(), lay.sz.size() * 4));
    d.col_group = static_cast<const int32_t*>(upload(lay.col_group.data(), lay.col_group.size() * 4));
    d.vec_group = static_cast<const int32_t*>(upload(lay.vec_group.data(), lay.vec_group.size() * 4));
    g->perm = static_cast<const int32_t*>(upload(lay.perm.data(), lay.perm.size() * 4));
    if (!lay.bias.empty()) {
      g->bias = from_host_f32(lay.bias.data(), {lay.n});
      d.bias = g->bias.data;
    }
    d.bits = lay.bits;
    d.n = lay.n;
    d.k = lay.k;
    d.kw = lay.kw;
    d.groups = lay.groups;
    XC2_CUDA_CHECK(cudaStreamSynchronize(stream_));
    QuantWeight q;
    q.n = v.n;
    q.k = v.k;
    q.bits = v.bits;
    q.group_size = v.group_size;
    q.bytes = lay.bytes(dtype_size(act_));
    q.impl = std::move(g);
    return q;
  }

  void do_linear_q(const Tensor& x, const QuantWeight& w, Tensor& y, bool accumulate) override {
    check_act(x, "linear_q x");
    check_act(y, "linear_q y");
    const auto& g = *static_cast<const CudaGptq*>(w.impl.get());
    const kc::GptqDeviceWeight& d = g.w;
    const int64_t m = x.rows();
    if (m == 0) return;
    const void* xin = x.data;
    Tensor xp;
    if (g.perm) {  // act-order: x's columns into the layout's order
      xp = empty({m, d.k}, act_);
      kc::gather_columns(x.data, g.perm, xp.data, m, d.k, act_, stream_);
      xin = xp.data;
    }
    if (use_gemv_ && m <= kc::kQGemvMaxRows) {
      kc::qgemv(d, xin, y.data, m, accumulate, act_, stream_);
    } else {
      std::shared_ptr<void> held;
      void* wd = dequant_buffer(static_cast<size_t>(d.n * d.k) * dtype_size(act_), &held);
      kc::gptq_dequantize(d, wd, act_, stream_);
      if (simple_gemm_) kc::linear_simple(xin, wd, d.bias, y.data, m, d.n, d.k, accumulate, act_, stream_);
      else lt_->linear(xin, wd, d.bias, y.data, m, d.n, d.k, accumulate, act_, stream_);
    }
    after_op("linear_q");
  }

  void do_rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& y) override {
    check_act(x, "rms_norm x");
    check_act(w, "rms_norm w");
    kc::rms_norm(x.data, w.data, y.data, x.rows(), x.row_numel(), eps, act_, stream_);
    after_op("rms_norm");
  }

  void do_layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps, Tensor& y) override {
    check_act(x, "layer_norm x");
    check_act(w, "layer_norm w");
    check_act(b, "layer_norm b");
    kc::layer_norm(x.data, w.data, b.data, y.data, x.rows(), x.row_numel(), eps, act_, stream_);
    after_op("layer_norm");
  }

  void do_add(const Tensor& a, const Tensor& b, Tensor& y) override {
    kc::add(a.data, b.data, y.data, y.numel(), act_, stream_);
    after_op("add");
  }

  void do_scale(Tensor& x, float s) override {
    kc::scale(x.data, s, x.numel(), act_, stream_);
    after_op("scale");
  }

  void do_silu_mul(const Tensor& gate, const Tensor& up, Tensor& y) override {
    kc::silu_mul(gate.data, up.data, y.data, y.numel(), act_, stream_);
    after_op("silu_mul");
  }

  void do_gelu_erf(Tensor& x) override {
    kc::gelu_erf(x.data, x.numel(), act_, stream_);
    after_op("gelu_erf");
  }

  void do_quick_gelu(Tensor& x) override {
    kc::quick_gelu(x.data, x.numel(), act_, stream_);
    after_op("quick_gelu");
  }

  void do_embedding(const Tensor& table, const TokenIds& ids, Tensor& y) override {
    check_act(table, "embedding table");
    const int32_t* dev = ids.device ? ids.device->data : nullptr;
    Tensor staged;
    if (!dev) {
      staged = empty({ids.n}, DType::F32);  // 4-byte slots holding int32 ids
      XC2_CUDA_CHECK(cudaMemcpyAsync(staged.data, ids.host, static_cast<size_t>(ids.n) * 4, cudaMemcpyHostToDevice,
                                     stream_));
      dev = static_cast<const int32_t*>(staged.data);
    }
    kc::embedding(table.data, dev, ids.n, table.row_numel(), y.data, act_, stream_);
    after_op("embedding");
  }

  // Host positions become a row offset into the caches; device positions are read by the kernel.
  void do_split_qkv(const Tensor& qkv, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, Tensor& q,
                    Tensor& k_cache, Tensor& v_cache, const Positions& pos) override {
    const int64_t row0 = pos.on_device() ? 0 : pos.pos0;
    kc::split_qkv(qkv.data, qkv.rows(), n_heads, n_kv_heads, head_dim, q.data, k_cache.rows(row0, 1).data,
                  v_cache.rows(row0, 1).data, pos.on_device() ? pos.device->data : nullptr, act_, stream_);
    after_op("split_qkv");
  }

  void do_rope(Tensor& x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, const Positions& pos, bool rows_at_pos,
               double theta) override {
    const RopeTable& tab = rope_table(theta, head_dim, pos.end(n_tokens));
    kc::rope(x.data, n_tokens, n_heads, head_dim, n_heads * head_dim, tab.cos.ptr<float>(), tab.sin.ptr<float>(),
             pos.pos0, pos.on_device() ? pos.device->data : nullptr, rows_at_pos, act_, stream_);
    after_op("rope");
  }

  void do_attention(const AttentionArgs& a) override {
    check_act(*a.q, "attention q");
    check_act(*a.k, "attention k");
    check_act(*a.v, "attention v");
    const kernels::AttentionArgs p = kernel_args(a, act_);
    kc::AttentionLaunch launch;
    launch.num_sms = prop_.multiProcessorCount;
    launch.allow_tensor_cores = use_flash_;
    const size_t ws = kc::attention_workspace_bytes(p, launch);
    Tensor scratch;
    if (ws > 0) {
      scratch = empty({static_cast<int64_t>((ws + 3) / 4)}, DType::F32);
      launch.workspace = scratch.data;
    }
    launch.n_splits = kc::attention_splits(p, launch);
    kc::attention(p, launch, stream_);
    after_op("attention");
  }

  void do_im2col_patches(const Tensor& pixels, int64_t patch, Tensor& cols) override {
    kc::im2col_patches(pixels.data, pixels.dim(0), pixels.dim(2), patch, cols.data, act_, stream_);
    after_op("im2col_patches");
  }

  // ---- device-resident decode ----

  bool supports_device_decode() const override { return true; }

  IntBuffer ints(int64_t n) override {
    IntBuffer b;
    b.owner = device_alloc(static_cast<size_t>(std::max<int64_t>(n, 1)) * 4);
    void* p = b.owner.get();
    b.data = static_cast<int32_t*>(p);
    b.size = n;
    XC2_CUDA_CHECK(cudaMemsetAsync(p, 0, static_cast<size_t>(n) * 4, stream_));
    after_op("ints");
    return b;
  }

  void write_ints(IntBuffer& dst, const std::vector<int32_t>& values) override {
    XC2_CHECK(static_cast<int64_t>(values.size()) <= dst.size, Internal, "write_ints: ", values.size(),
              " values into ", dst.size);
    if (values.empty()) return;
    const size_t bytes = values.size() * 4;
    if (bytes <= kPinnedBytes) {
      // The pinned buffer may still feed an earlier copy: wait, then stage (small writes: token ids).
      XC2_CUDA_CHECK(cudaStreamSynchronize(stream_));
      std::memcpy(pinned_, values.data(), bytes);
      XC2_CUDA_CHECK(cudaMemcpyAsync(dst.data, pinned_, bytes, cudaMemcpyHostToDevice, stream_));
    } else {
      XC2_CUDA_CHECK(cudaMemcpyAsync(dst.data, values.data(), bytes, cudaMemcpyHostToDevice, stream_));
    }
    after_op("write_ints");
  }

  std::vector<int32_t> read_ints(const IntBuffer& src, int64_t n) override {
    XC2_CHECK(n <= src.size, Internal, "read_ints: ", n, " values from ", src.size);
    std::vector<int32_t> out(static_cast<size_t>(n));
    if (n == 0) return out;
    const size_t bytes = static_cast<size_t>(n) * 4;
    if (bytes <= kPinnedBytes) {
      XC2_CUDA_CHECK(cudaMemcpyAsync(pinned_, src.data, bytes, cudaMemcpyDeviceToHost, stream_));
      XC2_CUDA_CHECK(cudaStreamSynchronize(stream_));
      std::memcpy(out.data(), pinned_, bytes);
    } else {
      XC2_CUDA_CHECK(cudaMemcpyAsync(out.data(), src.data, bytes, cudaMemcpyDeviceToHost, stream_));
      XC2_CUDA_CHECK(cudaStreamSynchronize(stream_));
    }
    return out;
  }

  void select_greedy(const Tensor& logits, const IntBuffer& seen, float penalty, IntBuffer& token) override {
    const int64_t vocab = logits.numel();
    Tensor work = empty({vocab}, DType::F32);
    kc::prepare_logits(logits.data, logits.dtype, vocab, seen.data, penalty, 1.0f, work.ptr<float>(), stream_);
    kc::argmax(work.ptr<float>(), vocab, token.data, stream_);
    after_op("select_greedy");
  }

  void select_candidates(const Tensor& logits, const IntBuffer& seen, float penalty, float temperature, int top_k,
                         IntBuffer& out) override {
    const int64_t vocab = logits.numel();
    const int cap = static_cast<int>((out.size - 1) / 2);
    XC2_CHECK(cap >= 1, Internal, "select_candidates: output buffer too small");
    Tensor work = empty({vocab}, DType::F32);
    kc::prepare_logits(logits.data, logits.dtype, vocab, seen.data, penalty, temperature, work.ptr<float>(), stream_);
    kc::topk_candidates(work.ptr<float>(), vocab, top_k, cap, out.data, out.data + 1,
                        reinterpret_cast<float*>(out.data + 1 + cap), stream_);
    after_op("select_candidates");
  }

  void mark_seen(IntBuffer& seen, const IntBuffer& token) override {
    kc::mark_seen(seen.data, token.data, stream_);
    after_op("mark_seen");
  }

  void add_to(IntBuffer& x, int32_t delta) override {
    kc::add_scalar(x.data, delta, stream_);
    after_op("add_to");
  }

  bool supports_graphs() const override { return true; }

  void graph_begin() override {
    XC2_CHECK(!capturing_, Internal, "graph_begin: already capturing");
    graph_pool_ = std::make_shared<DevicePool>(usage_, true);
    active_pool_ = graph_pool_;
    // Relaxed: the graph pool may cudaMalloc while the step is being recorded.
    const cudaError_t e = cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed);
    if (e != cudaSuccess) {
      active_pool_ = pool_;
      graph_pool_.reset();
      XC2_THROW(Cuda, "cudaStreamBeginCapture: ", cudaGetErrorString(e));
    }
    capturing_ = true;
  }

  GraphHandle graph_end() override {
    XC2_CHECK(capturing_, Internal, "graph_end without graph_begin");
    capturing_ = false;
    active_pool_ = pool_;
    auto g = std::make_shared<CudaGraph>();
    g->pool = std::move(graph_pool_);
    XC2_CUDA_CHECK(cudaStreamEndCapture(stream_, &g->graph));
    XC2_CUDA_CHECK(cudaGraphInstantiate(&g->exec, g->graph, 0));
    return g;
  }

  double measure_copy_bandwidth_gbs() override {
    const size_t bytes = size_t(1) << 30;
    std::shared_ptr<void> a = alloc_raw(bytes), b = alloc_raw(bytes);
    XC2_CUDA_CHECK(cudaMemsetAsync(a.get(), 0, bytes, stream_));
    cudaEvent_t e0 = nullptr, e1 = nullptr;
    XC2_CUDA_CHECK(cudaEventCreate(&e0));
    XC2_CUDA_CHECK(cudaEventCreate(&e1));
    float best_ms = 1e30f;
    for (int rep = 0; rep < 6; ++rep) {
      XC2_CUDA_CHECK(cudaEventRecord(e0, stream_));
      XC2_CUDA_CHECK(cudaMemcpyAsync(b.get(), a.get(), bytes, cudaMemcpyDeviceToDevice, stream_));
      XC2_CUDA_CHECK(cudaEventRecord(e1, stream_));
      XC2_CUDA_CHECK(cudaEventSynchronize(e1));
      float ms = 0;
      XC2_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
      if (rep > 0) best_ms = std::min(best_ms, ms);  // the first copy warms up
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    return 2.0 * static_cast<double>(bytes) / (static_cast<double>(best_ms) * 1e6);
  }

  MemoryStats memory_stats() override {
    MemoryStats m;
    {
      std::lock_guard<std::mutex> lock(usage_->mu);
      m.needed = usage_->main_in_use + usage_->graph_held;
      m.peak = usage_->peak;
      m.cached = usage_->reserved - m.needed;
    }
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) {
      m.device_used = total_b - free_b;
      m.device_total = total_b;
    } else {
      (void)cudaGetLastError();
    }
    return m;
  }

  void reset_memory_peak() override {
    std::lock_guard<std::mutex> lock(usage_->mu);
    usage_->peak = usage_->main_in_use + usage_->graph_held;
  }

  double peak_bandwidth_gbs() const override {
    int clock_khz = 0, bus_bits = 0;
    if (cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, device_) != cudaSuccess ||
        cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, device_) != cudaSuccess) {
      (void)cudaGetLastError();
      return 0;
    }
    return 2.0 * clock_khz * 1e3 * (bus_bits / 8.0) / 1e9;  // double data rate
  }

  void graph_launch(const GraphHandle& graph) override {
    auto* g = static_cast<CudaGraph*>(graph.get());
    XC2_CHECK(g != nullptr && g->exec != nullptr, Internal, "graph_launch: no graph");
    XC2_CUDA_CHECK(cudaGraphLaunch(g->exec, stream_));
    after_op("graph_launch");
  }

 private:
  static constexpr size_t kWorkspaceBytes = size_t(32) << 20;
  static constexpr size_t kPinnedBytes = size_t(64) << 20;

  // Device memory from the active pool (the graph's while one is being captured).
  std::shared_ptr<void> device_alloc(size_t bytes) { return alloc_in(active_pool_, bytes); }
  // Device memory from the main pool, never a graph's (buffers that outlive a capture).
  std::shared_ptr<void> alloc_raw(size_t bytes) { return alloc_in(pool_, bytes); }

  // When the device is full: outside a capture, wait for the stream, hand the main pool's cached blocks back
  // to the driver and try again; while capturing (no synchronisation allowed) take a cached block of the main
  // pool instead: it is free, since all work that used it was queued before the graph's replays can run.
  std::shared_ptr<void> alloc_in(const std::shared_ptr<DevicePool>& pool, size_t bytes) {
    size_t got = 0;
    if (void* p = pool->try_alloc(bytes, &got)) return pool_owner(pool, p, got);
    if (capturing_) {
      if (void* p = pool_->take_cached(bytes, &got, *pool)) return pool_owner(pool, p, got);
    } else {
      XC2_CUDA_CHECK(cudaStreamSynchronize(stream_));
      pool_->free_cached();
      if (void* p = pool->try_alloc(bytes, &got)) return pool_owner(pool, p, got);
    }
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    (void)cudaGetLastError();
    XC2_THROW(Cuda, "out of GPU memory: ", DevicePool::round(bytes), " bytes wanted, ", free_b >> 20, " MiB free of ",
              total_b >> 20, " MiB", capturing_ ? " (while recording the decode step as a CUDA graph)" : "");
  }

  // The buffer a quantized weight is dequantized into for the dense GEMM: one grow-only buffer of the main
  // pool, reused by every call (the calls run in order on the stream), grown to the largest weight dequantized so
  // far: a prefill dequantizes the decoder's linears (117 MB at most in bf16 at the 7B size), not an 8-bit output
  // head (758 MB), which runs as a GEMV for the few rows whose logits are wanted. While a graph is being captured
  // a block of the graph's pool is taken instead (`held` keeps it for this call; the graph keeps it reserved
  // afterwards).
  void* dequant_buffer(size_t bytes, std::shared_ptr<void>* held) {
    if (capturing_) {
      *held = device_alloc(bytes);
      return held->get();
    }
    if (dequant_bytes_ < bytes) {
      dequant_.reset();
      dequant_ = alloc_raw(bytes);
      dequant_bytes_ = bytes;
    }
    return dequant_.get();
  }

  void check_act(const Tensor& t, const char* what) const {
    XC2_CHECK(t.device == Device::Cuda, Internal, what, ": tensor ", t.shape_str(), " is not on the GPU");
    XC2_CHECK(t.dtype == act_, Internal, what, ": tensor ", t.shape_str(), " is ", dtype_name(t.dtype),
              ", the backend computes in ", dtype_name(act_));
  }

  void after_op(const char* what) {
    if (!sync_each_op_ || capturing_) return;
    const cudaError_t e = cudaStreamSynchronize(stream_);
    if (e != cudaSuccess) XC2_THROW(Cuda, "CUDA error after ", what, " (XC2_CUDA_SYNC=1): ", cudaGetErrorString(e));
  }

  // The table for (theta, head_dim) covering positions [0, n_positions). The first theta seen keeps its
  // table (grown by doubling); other thetas (dynamic NTK past max_position_embeddings, one per sequence in a
  // batch) get tables of just the positions asked for, the kRopeCache most recently used kept.
  const RopeTable& rope_table(double theta, int64_t head_dim, int64_t n_positions) {
    ++rope_clock_;
    for (auto& t : rope_)
      if (t->theta == theta && t->head_dim == head_dim && t->n_positions >= n_positions) {
        t->last_use = rope_clock_;
        if (capturing_) t->in_graph = true;
        return *t;
      }
    XC2_CHECK(!capturing_, Internal, "rope table for ", n_positions, " positions built while capturing a graph");
    const bool primary = rope_.empty() || (rope_[0]->theta == theta && rope_[0]->head_dim == head_dim);
    const int64_t n = primary ? std::max<int64_t>({n_positions, 4096, rope_.empty() ? 0 : 2 * rope_[0]->n_positions})
                              : (n_positions + 63) / 64 * 64;
    auto t = std::make_unique<RopeTable>();
    t->theta = theta;
    t->head_dim = head_dim;
    t->n_positions = n;
    t->last_use = rope_clock_;
    std::vector<float> c(static_cast<size_t>(n * head_dim / 2)), s(c.size());
    rope_tables(0, n, head_dim, theta, c.data(), s.data());
    // Uploaded as f32 regardless of the activation dtype, in order on the backend's stream (the blocks may
    // have been released by work still queued there). The wait lets the host vectors go, and it means no
    // queued kernel still reads a table dropped below.
    t->cos = empty({n, head_dim / 2}, DType::F32);
    t->sin = empty({n, head_dim / 2}, DType::F32);
    XC2_CUDA_CHECK(cudaMemcpyAsync(t->cos.data, c.data(), c.size() * 4, cudaMemcpyHostToDevice, stream_));
    XC2_CUDA_CHECK(cudaMemcpyAsync(t->sin.data, s.data(), s.size() * 4, cudaMemcpyHostToDevice, stream_));
    XC2_CUDA_CHECK(cudaStreamSynchronize(stream_));
    if (primary) {
      if (rope_.empty()) {
        rope_.push_back(std::move(t));
      } else {
        drop_rope_table(std::move(rope_[0]));
        rope_[0] = std::move(t);
      }
      return *rope_[0];
    }
    if (rope_.size() >= 1 + kRopeCache) {
      auto lru = std::min_element(rope_.begin() + 1, rope_.end(),
                                  [](const auto& x, const auto& y) { return x->last_use < y->last_use; });
      drop_rope_table(std::move(*lru));
      rope_.erase(lru);
    }
    rope_.push_back(std::move(t));
    return *rope_.back();
  }

  // A table a captured graph reads is kept for the graph's replays; any other is freed (the stream is idle).
  void drop_rope_table(std::unique_ptr<RopeTable> t) {
    if (t->in_graph) retired_.push_back(std::move(t));
  }

  int device_;
  DType act_;
  cudaDeviceProp prop_{};
  cudaStream_t stream_ = nullptr;
  std::shared_ptr<PoolUsage> usage_;
  std::shared_ptr<DevicePool> pool_, graph_pool_, active_pool_;
  std::shared_ptr<void> workspace_;
  std::shared_ptr<void> dequant_;  // dequant_buffer()
  size_t dequant_bytes_ = 0;
  std::unique_ptr<kc::LtGemm> lt_;
  void* pinned_ = nullptr;
  bool sync_each_op_ = false;
  bool use_gemv_ = true;
  bool simple_gemm_ = false;  // XC2_CUDA_GEMM=simple: every linear through the plain tiled kernel
  bool use_flash_ = true;
  bool capturing_ = false;
  static constexpr size_t kRopeCache = 8;
  std::vector<std::unique_ptr<RopeTable>> rope_;     // [0]: the first theta's table
  std::vector<std::unique_ptr<RopeTable>> retired_;  // dropped tables that a captured graph reads
  uint64_t rope_clock_ = 0;
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(int device_index, DType act_dtype) {
  return std::make_unique<CudaBackend>(device_index, act_dtype);
}

bool cuda_device_available() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  if (n <= 0) return false;
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return false;
  return prop.major >= 8;
}

}  // namespace xc2

#endif  // XC2_WITH_CUDA
