// Backend selection. The CUDA factory lives in cuda_backend.cpp when xc2 is built with CUDA.
#include "backends/backend.h"

#include <algorithm>

#include "backends/kernel_args.h"
#include "core/check.h"
#include "xc2/build_config.h"

namespace xc2 {

#if !XC2_WITH_CUDA
std::unique_ptr<Backend> make_cuda_backend(int, DType) {
  XC2_THROW(Unsupported, "this xc2 was built without CUDA (rebuild with -DXC2_WITH_CUDA=ON)");
}
bool cuda_device_available() { return false; }
#endif

// ---- the op front end: shape checks shared by every backend ----

namespace {

void check_rows(const Tensor& t, int64_t rows, int64_t cols, const char* op, const char* what) {
  XC2_CHECK(t.rows() == rows && t.row_numel() == cols, Internal, op, ": ", what, " is ", t.shape_str(), ", expected ",
            rows, " rows of ", cols);
}

void check_numel(const Tensor& t, int64_t n, const char* op, const char* what) {
  XC2_CHECK(t.numel() == n, Internal, op, ": ", what, " is ", t.shape_str(), ", expected ", n, " elements");
}

void check_heads(int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, const char* op) {
  XC2_CHECK(n_heads > 0 && n_kv_heads > 0 && n_heads % n_kv_heads == 0 && head_dim > 0 && head_dim % 2 == 0,
            Internal, op, ": ", n_heads, " heads over ", n_kv_heads, " KV heads of dim ", head_dim);
}

// Rows pos .. pos + n - 1 must lie inside a cache of `rows` rows.
void check_positions(const Positions& pos, int64_t n, int64_t rows, const char* op) {
  if (pos.on_device()) {
    XC2_CHECK(pos.device->size >= 1 && pos.bound <= rows, Internal, op, ": device positions bounded by ", pos.bound,
              " in a cache of ", rows, " rows");
  } else {
    XC2_CHECK(pos.pos0 >= 0 && pos.pos0 + n <= rows, Internal, op, ": positions ", pos.pos0, "..", pos.pos0 + n - 1,
              " outside a cache of ", rows, " rows");
  }
}

}  // namespace

void Backend::linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y, bool accumulate) {
  const int64_t m = x.rows(), k = x.row_numel(), n = w.rows();
  check_rows(w, n, k, "linear", "w");
  check_rows(y, m, n, "linear", "y");
  if (bias) check_numel(*bias, n, "linear", "bias");
  do_linear(x, w, bias, y, accumulate);
}

void Backend::linear_q(const Tensor& x, const QuantWeight& w, Tensor& y, bool accumulate) {
  XC2_CHECK(static_cast<bool>(w), Internal, "linear_q: empty quantized weight");
  XC2_CHECK(x.dtype == act_dtype() && y.dtype == act_dtype(), Internal, "linear_q: x and y must be in the activation dtype");
  check_rows(x, x.rows(), w.k, "linear_q", "x");
  check_rows(y, x.rows(), w.n, "linear_q", "y");
  do_linear_q(x, w, y, accumulate);
}

void Backend::linear_q_deltas(const Tensor& x, const QuantWeight& w, const QuantWeight& b,
                              const std::vector<RowDelta>& d, Tensor& y) {
  XC2_CHECK(static_cast<bool>(w) && static_cast<bool>(b), Internal, "linear_q_deltas: empty quantized weight");
  XC2_CHECK(b.n == w.n, Internal, "linear_q_deltas: the delta weight has ", b.n, " outputs, the main one ", w.n);
  XC2_CHECK(x.dtype == act_dtype() && y.dtype == act_dtype(), Internal,
            "linear_q_deltas: x and y must be in the activation dtype");
  check_rows(x, x.rows(), w.k, "linear_q_deltas", "x");
  check_rows(y, x.rows(), w.n, "linear_q_deltas", "y");
  for (const RowDelta& r : d) {
    XC2_CHECK(r.t != nullptr && r.t->dtype == act_dtype(), Internal, "linear_q_deltas: a delta's rows");
    check_rows(*r.t, r.t->rows(), b.k, "linear_q_deltas", "delta rows");
    XC2_CHECK(r.row0 >= 0 && r.row0 + r.t->rows() <= x.rows(), Internal, "linear_q_deltas: delta rows [", r.row0,
              ", ", r.row0 + r.t->rows(), ") outside the ", x.rows(), " rows");
  }
  do_linear_q_deltas(x, w, b, d, y);
}

void Backend::do_linear_q_deltas(const Tensor& x, const QuantWeight& w, const QuantWeight& b,
                                 const std::vector<RowDelta>& d, Tensor& y) {
  do_linear_q(x, w, y, false);
  for (const RowDelta& r : d) {
    if (r.t->rows() == 0) continue;
    Tensor ys = y.rows(r.row0, r.t->rows());
    do_linear_q(*r.t, b, ys, true);
  }
}

QuantWeight Backend::quant_weight(const io::GptqLinearViews& v) {
  XC2_THROW(Unsupported, "the ", name(), " backend does not run quantized (GPTQ) weights yet ('", v.base,
            "'); use --device cpu");
}

void Backend::do_linear_q(const Tensor&, const QuantWeight&, Tensor&, bool) {
  XC2_THROW(Unsupported, "the ", name(), " backend does not run quantized (GPTQ) weights yet; use --device cpu");
}

void Backend::rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& y) {
  check_numel(w, x.row_numel(), "rms_norm", "w");
  check_rows(y, x.rows(), x.row_numel(), "rms_norm", "y");
  do_rms_norm(x, w, eps, y);
}

void Backend::layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps, Tensor& y) {
  check_numel(w, x.row_numel(), "layer_norm", "w");
  check_numel(b, x.row_numel(), "layer_norm", "b");
  XC2_CHECK(w.dtype == b.dtype, Internal, "layer_norm: w is ", dtype_name(w.dtype), ", b is ", dtype_name(b.dtype));
  check_rows(y, x.rows(), x.row_numel(), "layer_norm", "y");
  do_layer_norm(x, w, b, eps, y);
}

void Backend::add(const Tensor& a, const Tensor& b, Tensor& y) {
  check_numel(a, y.numel(), "add", "a");
  check_numel(b, y.numel(), "add", "b");
  do_add(a, b, y);
}

void Backend::scale(Tensor& x, float s) { do_scale(x, s); }

void Backend::silu_mul(const Tensor& gate, const Tensor& up, Tensor& y) {
  check_numel(gate, y.numel(), "silu_mul", "gate");
  check_numel(up, y.numel(), "silu_mul", "up");
  do_silu_mul(gate, up, y);
}

void Backend::gelu_erf(Tensor& x) { do_gelu_erf(x); }
void Backend::quick_gelu(Tensor& x) { do_quick_gelu(x); }

void Backend::embedding(const Tensor& table, const TokenIds& ids, Tensor& y) {
  XC2_CHECK((ids.host != nullptr) != (ids.device != nullptr) || ids.n == 0, Internal,
            "embedding: ids on the host or on the device");
  XC2_CHECK(!ids.device || ids.n <= ids.device->size, Internal, "embedding: ", ids.n, " ids from a buffer of ",
            ids.device ? ids.device->size : 0);
  check_rows(y, ids.n, table.row_numel(), "embedding", "y");
  if (ids.n == 0) return;
  do_embedding(table, ids, y);
}

void Backend::split_qkv(const Tensor& qkv, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, Tensor& q,
                        Tensor& k_cache, Tensor& v_cache, const Positions& pos) {
  check_heads(n_heads, n_kv_heads, head_dim, "split_qkv");
  const int64_t T = qkv.rows();
  check_rows(qkv, T, (n_heads + 2 * n_kv_heads) * head_dim, "split_qkv", "qkv");
  check_rows(q, T, n_heads * head_dim, "split_qkv", "q");
  XC2_CHECK(k_cache.row_numel() == n_kv_heads * head_dim && v_cache.row_numel() == n_kv_heads * head_dim &&
                k_cache.rows() == v_cache.rows(),
            Internal, "split_qkv: caches ", k_cache.shape_str(), " and ", v_cache.shape_str());
  check_positions(pos, T, k_cache.rows(), "split_qkv");
  do_split_qkv(qkv, n_heads, n_kv_heads, head_dim, q, k_cache, v_cache, pos);
}

void Backend::rope(Tensor& x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, const Positions& pos,
                   bool rows_at_pos, double theta) {
  check_heads(n_heads, n_heads, head_dim, "rope");
  XC2_CHECK(x.row_numel() == n_heads * head_dim, Internal, "rope: x is ", x.shape_str(), " for ", n_heads,
            " heads of dim ", head_dim);
  if (rows_at_pos) check_positions(pos, n_tokens, x.rows(), "rope");
  else XC2_CHECK(n_tokens <= x.rows(), Internal, "rope: ", n_tokens, " tokens in ", x.shape_str());
  do_rope(x, n_tokens, n_heads, head_dim, pos, rows_at_pos, theta);
}

void Backend::attention(const AttentionArgs& a) {
  XC2_CHECK(a.q && a.k && a.v && a.out, Internal, "attention: missing tensor");
  check_heads(a.n_heads, a.n_kv_heads, a.head_dim, "attention");
  const int64_t n_q = a.q->rows();
  check_rows(*a.q, n_q, a.n_heads * a.head_dim, "attention", "q");
  check_rows(*a.out, n_q, a.n_heads * a.head_dim, "attention", "out");
  XC2_CHECK(a.k->row_numel() == a.n_kv_heads * a.head_dim && a.v->row_numel() == a.n_kv_heads * a.head_dim,
            Internal, "attention: k ", a.k->shape_str(), ", v ", a.v->shape_str());
  if (a.q_pos.on_device()) {
    XC2_CHECK(a.causal, Internal, "attention: device positions need causal attention");
    check_positions(a.q_pos, n_q, std::min(a.k->rows(), a.v->rows()), "attention");
  } else {
    XC2_CHECK(a.n_kv >= 1 && a.n_kv <= a.k->rows() && a.n_kv <= a.v->rows(), Internal, "attention: ", a.n_kv,
              " keys in k ", a.k->shape_str(), ", v ", a.v->shape_str());
  }
  do_attention(a);
}

void Backend::im2col_patches(const Tensor& pixels, int64_t patch, Tensor& cols) {
  // Like a Conv2d of stride `patch`: pixels past the last whole patch are not used.
  XC2_CHECK(pixels.rank() == 4 && pixels.dim(1) == 3 && pixels.dim(2) == pixels.dim(3) && patch > 0, Internal, "im2col_patches: pixels ", pixels.shape_str(), ", patch ", patch);
  const int64_t g = pixels.dim(2) / patch;
  check_rows(cols, pixels.dim(0) * g * g, 3 * patch * patch, "im2col_patches", "cols");
  do_im2col_patches(pixels, patch, cols);
}

kernels::AttentionArgs kernel_args(const AttentionArgs& a, DType dtype) {
  kernels::AttentionArgs k;
  k.q = a.q->data;
  k.q_stride = a.n_heads * a.head_dim;
  k.k = a.k->data;
  k.v = a.v->data;
  k.kv_stride = a.n_kv_heads * a.head_dim;
  k.out = a.out->data;
  k.out_stride = a.n_heads * a.head_dim;
  k.n_q = a.q->rows();
  k.n_heads = a.n_heads;
  k.n_kv_heads = a.n_kv_heads;
  k.head_dim = a.head_dim;
  if (a.q_pos.on_device()) {
    k.n_kv = a.q_pos.bound;
    k.pos_dev = a.q_pos.device->data;
  } else {
    k.n_kv = a.n_kv;
    k.q_pos0 = a.q_pos.pos0;
  }
  k.causal = a.causal;
  k.scale = a.scale;
  k.dtype = dtype;
  return k;
}

// Device-decode defaults: backends without a device-resident decode path (the CPU) report Unsupported.
namespace {
[[noreturn]] void no_device_decode(const Backend& be, const char* op) {
  XC2_THROW(Unsupported, "backend '", be.name(), "' has no device-resident decode op ", op);
}
}  // namespace

IntBuffer Backend::ints(int64_t) { no_device_decode(*this, "ints"); }
void Backend::write_ints(IntBuffer&, const std::vector<int32_t>&) { no_device_decode(*this, "write_ints"); }
std::vector<int32_t> Backend::read_ints(const IntBuffer&, int64_t) { no_device_decode(*this, "read_ints"); }
void Backend::select_greedy(const Tensor&, const IntBuffer&, float, IntBuffer&) {
  no_device_decode(*this, "select_greedy");
}
void Backend::select_candidates(const Tensor&, const IntBuffer&, float, float, int, IntBuffer&) {
  no_device_decode(*this, "select_candidates");
}
void Backend::mark_seen(IntBuffer&, const IntBuffer&) { no_device_decode(*this, "mark_seen"); }
void Backend::add_to(IntBuffer&, int32_t) { no_device_decode(*this, "add_to"); }
void Backend::graph_begin() { no_device_decode(*this, "graph_begin"); }
GraphHandle Backend::graph_end() { no_device_decode(*this, "graph_end"); }
void Backend::graph_launch(const GraphHandle&) { no_device_decode(*this, "graph_launch"); }

}  // namespace xc2
