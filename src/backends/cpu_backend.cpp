// CpuBackend: f32 activations, weights viewed in place from the mapped checkpoint (f32/f16/bf16) or,
// the large ones when memory allows, copied into huge-page memory (see weight()), every op forwarded to
// kernels/cpu with the backend's thread pool.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "backends/kernel_args.h"
#include "core/check.h"
#include "core/env.h"
#include "core/log.h"
#include "core/thread_pool.h"
#include "cpu/cpu_kernels.h"
#include "cpu/gemm.h"
#include "cpu/qgemm.h"

namespace xc2 {

void rope_tables(int64_t pos0, int64_t n_tokens, int64_t head_dim, double theta, float* cos, float* sin) {
  const int64_t half = head_dim / 2;
  const float base = static_cast<float>(theta);
  std::vector<float> inv_freq(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    const float e = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    const float p = static_cast<float>(std::pow(static_cast<double>(base), static_cast<double>(e)));
    inv_freq[static_cast<size_t>(i)] = 1.0f / p;
  }
  for (int64_t t = 0; t < n_tokens; ++t) {
    const float pos = static_cast<float>(pos0 + t);
    for (int64_t i = 0; i < half; ++i) {
      const float angle = pos * inv_freq[static_cast<size_t>(i)];
      cos[t * half + i] = static_cast<float>(std::cos(static_cast<double>(angle)));
      sin[t * half + i] = static_cast<float>(std::sin(static_cast<double>(angle)));
    }
  }
}

namespace {

namespace kc = kernels::cpu;

// Memory the automatic huge-page copies leave free for the KV caches, activations and everything else.
constexpr size_t kHeadroom = size_t{4} << 30;

struct HugePagePolicy {
  size_t min_bytes = 0;  // 0: never copy
  bool forced = false;   // copy whatever the memory and THP settings
  bool thp = false;      // transparent huge pages enabled (always or madvise)
};

HugePagePolicy read_huge_page_policy() {
  HugePagePolicy p;
  const char* e = std::getenv("XC2_CPU_HUGEPAGES");
  const std::string v = e ? e : "";
  if (v.empty() || v == "auto") {
    p.min_bytes = size_t{1} << 20;
  } else {
    char* end = nullptr;
    const unsigned long long n = std::strtoull(v.c_str(), &end, 10);
    if (end == v.c_str() || *end != '\0') {
      XC2_LOG_WARN("XC2_CPU_HUGEPAGES='" << v << "' is not auto, 0 or a byte count; using auto");
      p.min_bytes = size_t{1} << 20;
    } else {
      p.min_bytes = static_cast<size_t>(n);
      p.forced = true;
    }
  }
  std::ifstream f("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string line;
  if (std::getline(f, line))
    p.thp = line.find("[always]") != std::string::npos || line.find("[madvise]") != std::string::npos;
  return p;
}

const HugePagePolicy& huge_page_policy() {
  static const HugePagePolicy p = read_huge_page_policy();
  return p;
}

class CpuBackend final : public Backend {
 public:
  CpuBackend(int n_threads, CpuWeights weights) : pool_(n_threads), weights_(weights) {}

  Device device() const override { return Device::Cpu; }
  std::string name() const override {
    std::string s = std::string("cpu (") + kc::gemm_isa() + ", " + std::to_string(pool_.size()) + " threads";
    if (huge_bytes_ > 0) {
      char buf[64];
      const double b = static_cast<double>(huge_bytes_);
      if (b >= 1e9) std::snprintf(buf, sizeof(buf), ", %.2f GB of weights in huge pages", b / 1e9);
      else std::snprintf(buf, sizeof(buf), ", %.1f MB of weights in huge pages", b / 1e6);
      s += buf;
    }
    if (quant_bytes_ > 0)
      s += !exact_quant_ && kc::qlinear_int8_supported()
               ? std::string(", quantized matmuls with int8 activations on ") +
                     kc::qint8_kernel_name(kc::qlinear_int8_kernel())
               : ", quantized matmuls exact";
    return s + ")";
  }
  DType act_dtype() const override { return DType::F32; }

  Tensor empty(const std::vector<int64_t>& shape, DType dtype) override { return Tensor::empty_cpu(shape, dtype); }

  // Weights are views of the mapped checkpoint, except that large ones are copied once into anonymous
  // memory advised for transparent huge pages, with their file pages released: at 7B size decode streams
  // 15 GB per token, and with 4 KB file pages the page-table walks no longer fit in cache (docs/perf.md:
  // 0.82 -> 2.29 tok/s at 32 layers, about the same peak RSS). The copies cannot be paged back to the file,
  // so by default (XC2_CPU_HUGEPAGES unset or "auto") a tensor of >= 1 MiB is copied only while transparent
  // huge pages are enabled and MemAvailable holds the whole checkpoint (plan_weights()) plus kHeadroom;
  // otherwise everything stays mapped. XC2_CPU_HUGEPAGES=0 maps everything; =N (bytes) copies every tensor
  // of >= N bytes unconditionally. When the automatic copies are on, the small tensors (norms, biases) are
  // copied too, into plain memory, and weights_loaded() drops the checkpoint's file pages from this process:
  // with large page-cache folios (Linux 6.x) reading a 4 KB bias view maps its whole folio, up to 2 MB of the
  // neighbouring weights (measured: 0.28 GB of file pages resident at the XC2-VL-7B size after one image).
  void plan_weights(uint64_t total_bytes) override {
    const HugePagePolicy& policy = huge_page_policy();
    auto_copy_ = policy.thp && mem_available_bytes() >= total_bytes + kHeadroom;
    XC2_LOG_DEBUG("CPU weights: " << (policy.forced ? "huge-page copies forced (XC2_CPU_HUGEPAGES)"
                                    : auto_copy_   ? "large tensors copied into huge pages"
                                                   : "mapped (transparent huge pages off or not enough memory)"));
  }

  void weights_loaded(const io::Checkpoint& checkpoint) override {
    if (automatic_copies()) checkpoint.release_resident_pages();
  }

  // The automatic huge-page copies are on (XC2_CPU_HUGEPAGES unset or "auto", and plan_weights() found room).
  bool automatic_copies() const {
    const HugePagePolicy& policy = huge_page_policy();
    return weights_ == CpuWeights::Auto && policy.min_bytes > 0 && !policy.forced && auto_copy_;
  }

  // memcpy by the pool's threads in 2 MiB pieces: the first touch of each fresh page (a fault, and on the
  // development VM about 10 us per 4 KiB) is then shared by the threads, as is reading the mapped file.
  void copy_on_pool(void* dst, const void* src, size_t n) {
    constexpr size_t kPiece = size_t{2} << 20;
    const int64_t pieces = static_cast<int64_t>((n + kPiece - 1) / kPiece);
    pool_.parallel_for(pieces, [&](int64_t b, int64_t e) {
      const size_t lo = static_cast<size_t>(b) * kPiece, hi = std::min(n, static_cast<size_t>(e) * kPiece);
      std::memcpy(static_cast<char*>(dst) + lo, static_cast<const char*>(src) + lo, hi - lo);
    });
  }

  // Drops the file pages this process mapped for a tensor it has copied (whole pages inside the tensor only; the
  // page cache keeps them, a later access of a neighbouring view faults them back in).
  static void release_file_pages(const void* data, size_t nbytes) {
    const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
    const uintptr_t b = (reinterpret_cast<uintptr_t>(data) + page - 1) / page * page;
    const uintptr_t e = (reinterpret_cast<uintptr_t>(data) + nbytes) / page * page;
    if (e > b) ::madvise(reinterpret_cast<void*>(b), e - b, MADV_DONTNEED);
  }

  using Backend::weight;
  Tensor weight(const io::TensorView& w, WeightUse use) override {
    const HugePagePolicy& policy = huge_page_policy();
    const bool copy = weights_ == CpuWeights::Auto && use == WeightUse::Streamed && policy.min_bytes > 0 &&
                      w.nbytes >= policy.min_bytes && (policy.forced || auto_copy_);
    if (!copy && use == WeightUse::Streamed && w.nbytes > 0 && automatic_copies()) {
      Tensor t = Tensor::empty_cpu(w.shape, w.dtype);
      std::memcpy(t.data, w.data, w.nbytes);
      return t;
    }
    if (!copy) return Tensor::view(const_cast<void*>(w.data), w.shape, w.dtype, Device::Cpu);
    const size_t huge = size_t{2} << 20;
    const size_t alloc = (w.nbytes + huge - 1) / huge * huge;
    void* p = std::aligned_alloc(huge, alloc);
    XC2_CHECK(p != nullptr, Internal, "out of memory copying weight ", w.name, " (", w.nbytes, " bytes)");
    ::madvise(p, alloc, MADV_HUGEPAGE);
    copy_on_pool(p, w.data, w.nbytes);
    release_file_pages(w.data, w.nbytes);
    Tensor t = Tensor::view(p, w.shape, w.dtype, Device::Cpu);
    t.owner = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
    huge_bytes_ += w.nbytes;
    return t;
  }

  Tensor from_host_f32(const float* data, const std::vector<int64_t>& shape) override {
    Tensor t = Tensor::empty_cpu(shape, DType::F32);
    std::memcpy(t.data, data, t.nbytes());
    return t;
  }

  void to_host_f32(const Tensor& t, float* dst) override { kc::to_f32(t.data, t.dtype, dst, t.numel()); }

  void copy(const Tensor& src, Tensor& dst) override {
    XC2_ASSERT(src.nbytes() == dst.nbytes());
    std::memmove(dst.data, src.data, src.nbytes());
  }

  void do_linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y, bool accumulate) override {
    kc::GemmArgs a;
    a.x = x.ptr<float>();
    a.m = x.rows();
    a.k = x.row_numel();
    a.ldx = a.k;
    a.w = w.data;
    a.w_dtype = w.dtype;
    a.n = w.rows();
    a.ldw = a.k;
    if (bias) {
      a.bias = bias->data;
      a.bias_dtype = bias->dtype;
    }
    a.y = y.ptr<float>();
    a.ldy = a.n;
    a.accumulate = accumulate;
    kc::gemm(a, pool_);
  }

  QuantWeight quant_weight(const io::GptqLinearViews& v) override {
    kc::GptqTensors t;
    t.bits = v.bits;
    t.n = v.n;
    t.k = v.k;
    t.groups = v.groups;
    t.group_size = v.group_size;
    t.qweight = v.qweight->data;
    t.qzeros = v.qzeros->data;
    t.scales = v.scales->data;
    t.scales_dtype = v.scales->dtype;
    t.g_idx = v.g_idx ? v.g_idx->data : nullptr;
    if (v.bias) {
      t.bias = v.bias->data;
      t.bias_dtype = v.bias->dtype;
    }
    auto m = std::make_shared<kc::QuantMatrix>(kc::repack_gptq(t, &pool_));
    QuantWeight q;
    q.n = v.n;
    q.k = v.k;
    q.bits = v.bits;
    q.group_size = v.group_size;
    q.bytes = m->bytes();
    q.impl = std::move(m);
    quant_bytes_ += q.bytes;
    // The repacked copy is all that is used from now on: the mapped GPTQ tensors leave the resident set.
    if (weights_ == CpuWeights::Auto)
      for (const io::TensorView* t : {v.qweight, v.qzeros, v.scales, v.g_idx, v.bias})
        if (t) release_file_pages(t->data, t->nbytes);
    return q;
  }

  void set_exact_quant(bool exact) override { exact_quant_ = exact; }

  QuantWeight quant_weight_int8(const io::TensorView& w) override {
    if (exact_quant_ || !kc::qlinear_int8_supported() || w.shape.size() != 2 || w.shape[1] % 32 != 0) return {};
    auto m = std::make_shared<kc::QuantMatrix>(kc::quantize_rtn8(w.data, w.dtype, w.shape[0], w.shape[1], pool_));
    if (!kc::qlinear_int8_supported(*m)) return {};  // 8-bit weights on an AVX2-only int8 kernel: not faster
    QuantWeight q;
    q.n = w.shape[0];
    q.k = w.shape[1];
    q.bits = 8;
    q.group_size = -1;  // one scale per row
    q.bytes = m->bytes();
    q.impl = std::move(m);
    quant_bytes_ += q.bytes;
    if (weights_ == CpuWeights::Auto) release_file_pages(w.data, w.nbytes);
    return q;
  }

  // Whether a quantized matrix runs with int8 activations (else exact f32 math on its dequantized weights).
  bool int8_path(const kc::QuantMatrix& m) const { return !exact_quant_ && kc::qlinear_int8_supported(m); }

  void do_linear_q(const Tensor& x, const QuantWeight& w, Tensor& y, bool accumulate) override {
    const auto& m = *static_cast<const kc::QuantMatrix*>(w.impl.get());
    if (int8_path(m))
      kc::qlinear_int8(x.ptr<float>(), w.k, m, y.ptr<float>(), w.n, x.rows(), accumulate, pool_);
    else
      kc::qlinear(x.ptr<float>(), w.k, m, y.ptr<float>(), w.n, x.rows(), accumulate, pool_);
  }

  // On the int8 path the deltas run inside the main product's pass over y (kernels::cpu::QInt8Extra).
  void do_linear_q_deltas(const Tensor& x, const QuantWeight& w, const QuantWeight& b, const std::vector<RowDelta>& d,
                          Tensor& y) override {
    const auto& m = *static_cast<const kc::QuantMatrix*>(w.impl.get());
    const auto& mb = *static_cast<const kc::QuantMatrix*>(b.impl.get());
    if (!int8_path(m) || !int8_path(mb)) return Backend::do_linear_q_deltas(x, w, b, d, y);
    std::vector<kc::QInt8Extra> extra;
    for (const RowDelta& r : d)
      if (r.t->rows() > 0) extra.push_back({&mb, r.t->ptr<float>(), b.k, r.row0, r.t->rows()});
    kc::qlinear_int8(x.ptr<float>(), w.k, m, y.ptr<float>(), w.n, x.rows(), false, pool_, kc::QInt8Kernel::Auto,
                     &extra);
  }

  void do_rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& y) override {
    kc::rms_norm(x.ptr<float>(), w.data, y.ptr<float>(), x.rows(), x.row_numel(), eps, w.dtype, pool_);
  }

  void do_layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps, Tensor& y) override {
    kc::layer_norm(x.ptr<float>(), w.data, b.data, y.ptr<float>(), x.rows(), x.row_numel(), eps, w.dtype, pool_);
  }

  void do_add(const Tensor& a, const Tensor& b, Tensor& y) override {
    kc::add(a.ptr<float>(), b.ptr<float>(), y.ptr<float>(), y.numel(), pool_);
  }

  void do_scale(Tensor& x, float s) override { kc::scale(x.ptr<float>(), s, x.numel(), pool_); }

  void do_silu_mul(const Tensor& gate, const Tensor& up, Tensor& y) override {
    kc::silu_mul(gate.ptr<float>(), up.ptr<float>(), y.ptr<float>(), y.numel(), pool_);
  }

  void do_gelu_erf(Tensor& x) override { kc::gelu_erf(x.ptr<float>(), x.numel(), pool_); }
  void do_quick_gelu(Tensor& x) override { kc::quick_gelu(x.ptr<float>(), x.numel(), pool_); }

  void do_embedding(const Tensor& table, const TokenIds& ids, Tensor& y) override {
    kc::embedding(table.data, ids.host ? ids.host : ids.device->data, ids.n, table.row_numel(), y.ptr<float>(),
                  table.dtype, pool_);
  }

  void do_split_qkv(const Tensor& qkv, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, Tensor& q,
                    Tensor& k_cache, Tensor& v_cache, const Positions& pos) override {
    const int64_t row0 = pos.host_value();
    kc::split_qkv(qkv.ptr<float>(), qkv.rows(), n_heads, n_kv_heads, head_dim, q.ptr<float>(),
                  k_cache.rows(row0, 1).ptr<float>(), v_cache.rows(row0, 1).ptr<float>(), pool_);
  }

  void do_rope(Tensor& x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, const Positions& pos, bool rows_at_pos,
               double theta) override {
    const int64_t pos0 = pos.host_value();
    RopeTables& r = rope_;
    if (r.pos0 != pos0 || r.n_tokens != n_tokens || r.head_dim != head_dim || r.theta != theta) {
      // Every layer ropes the same positions twice (queries and keys): the tables are made once per forward (in
      // double, serially; made on every call they took 25-35 ms of an 8-layer 1290-position prefill).
      r.cos.resize(static_cast<size_t>(n_tokens * head_dim / 2));
      r.sin.resize(r.cos.size());
      rope_tables(pos0, n_tokens, head_dim, theta, r.cos.data(), r.sin.data());
      r.pos0 = pos0, r.n_tokens = n_tokens, r.head_dim = head_dim, r.theta = theta;
    }
    float* rows = x.rows(rows_at_pos ? pos0 : 0, 1).ptr<float>();
    kc::rope(rows, n_tokens, n_heads, head_dim, n_heads * head_dim, r.cos.data(), r.sin.data(), pool_);
  }

  void do_attention(const AttentionArgs& args) override { kc::attention(kernel_args(args, DType::F32), pool_); }

  // Int buffers are host memory: positions and ids on the "device" are plain values read when an op runs.
  IntBuffer ints(int64_t n) override {
    auto v = std::make_shared<std::vector<int32_t>>(static_cast<size_t>(std::max<int64_t>(n, 1)), 0);
    IntBuffer b;
    b.data = v->data();
    b.size = n;
    b.owner = v;
    return b;
  }

  void write_ints(IntBuffer& dst, const std::vector<int32_t>& values) override {
    XC2_CHECK(static_cast<int64_t>(values.size()) <= dst.size, Internal, "write_ints: ", values.size(),
              " values into ", dst.size);
    std::copy(values.begin(), values.end(), dst.data);
  }

  std::vector<int32_t> read_ints(const IntBuffer& src, int64_t n) override {
    XC2_CHECK(n <= src.size, Internal, "read_ints: ", n, " values from ", src.size);
    return std::vector<int32_t>(src.data, src.data + n);
  }

  void do_im2col_patches(const Tensor& pixels, int64_t patch, Tensor& cols) override {
    kc::im2col_patches(pixels.ptr<float>(), pixels.dim(0), pixels.dim(2), patch, cols.ptr<float>(), pool_);
  }

 private:
  bool exact_quant_ = true;  // set_exact_quant()
  size_t quant_bytes_ = 0;   // quantized weights loaded (for name())
  ThreadPool pool_;
  CpuWeights weights_;
  bool auto_copy_ = false;  // set by plan_weights(): the automatic copies fit in memory
  size_t huge_bytes_ = 0;   // weight bytes copied into huge-page memory
  struct RopeTables {        // the last do_rope()'s cos / sin tables, reused while its arguments repeat
    int64_t pos0 = -1, n_tokens = 0, head_dim = 0;
    double theta = 0;
    std::vector<float> cos, sin;
  } rope_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(int n_threads, CpuWeights weights) {
  return std::make_unique<CpuBackend>(n_threads, weights);
}

}  // namespace xc2
