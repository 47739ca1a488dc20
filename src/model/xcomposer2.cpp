// InternLM-XComposer2 forward pass on a Backend (model-spec §5-§8).
#include "model/xcomposer2.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"
#include "core/half.h"
#include "core/log.h"
#include "io/weight_store.h"
#include "model/weight_names.h"

namespace xc2::model {

// ---------------------------------------------------------------------------------------------
// Position-table resize (model-spec §8.3): PyTorch upsample_bicubic2d, align_corners=False, A=-0.75
// ---------------------------------------------------------------------------------------------

namespace {

float cubic_conv1(float x, float a) { return ((a + 2) * x - (a + 3)) * x * x + 1; }
float cubic_conv2(float x, float a) { return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a; }

void cubic_coeffs(float t, float c[4]) {
  const float a = -0.75f;
  c[0] = cubic_conv2(t + 1.0f, a);
  c[1] = cubic_conv1(t, a);
  c[2] = cubic_conv1(1.0f - t, a);
  c[3] = cubic_conv2(2.0f - t, a);
}

float round_through(float v, DType dtype) {
  switch (dtype) {
    case DType::F16: return f16_to_f32(f32_to_f16(v));
    case DType::BF16: return bf16_to_f32(f32_to_bf16(v));
    case DType::F32:
    case DType::I32: return v;
  }
  return v;
}

// A checkpoint tensor as f32 on the host (small tensors only: the position table, the CLS row).
std::vector<float> widen_to_f32(const io::TensorView& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  const auto* h = static_cast<const uint16_t*>(t.data);
  for (size_t i = 0; i < out.size(); ++i) {
    switch (t.dtype) {
      case DType::F32: out[i] = static_cast<const float*>(t.data)[i]; break;
      case DType::F16: out[i] = f16_to_f32(h[i]); break;
      case DType::BF16: out[i] = bf16_to_f32(h[i]); break;
      case DType::I32: out[i] = static_cast<float>(static_cast<const int32_t*>(t.data)[i]); break;
    }
  }
  return out;
}

}  // namespace

std::vector<float> resize_position_table(const std::vector<float>& table, int64_t old_g, int64_t new_g, int64_t dim,
                                         DType storage) {
  std::vector<float> out(static_cast<size_t>((new_g * new_g + 1) * dim));
  std::copy(table.begin(), table.begin() + dim, out.begin());  // CLS row kept as is
  const float scale = static_cast<float>(old_g) / static_cast<float>(new_g);
  auto at = [&](int64_t y, int64_t x, int64_t c) {
    y = std::clamp<int64_t>(y, 0, old_g - 1);
    x = std::clamp<int64_t>(x, 0, old_g - 1);
    return table[static_cast<size_t>((1 + y * old_g + x) * dim + c)];
  };
  for (int64_t oy = 0; oy < new_g; ++oy) {
    const float ry = scale * (static_cast<float>(oy) + 0.5f) - 0.5f;
    const int64_t iy = static_cast<int64_t>(std::floor(ry));
    float cy[4];
    cubic_coeffs(ry - static_cast<float>(iy), cy);
    for (int64_t ox = 0; ox < new_g; ++ox) {
      const float rx = scale * (static_cast<float>(ox) + 0.5f) - 0.5f;
      const int64_t ix = static_cast<int64_t>(std::floor(rx));
      float cx[4];
      cubic_coeffs(rx - static_cast<float>(ix), cx);
      for (int64_t c = 0; c < dim; ++c) {
        float rowv[4];
        for (int k = 0; k < 4; ++k) {
          const int64_t yy = iy - 1 + k;
          rowv[k] = at(yy, ix - 1, c) * cx[0] + at(yy, ix, c) * cx[1] + at(yy, ix + 1, c) * cx[2] +
                    at(yy, ix + 2, c) * cx[3];
        }
        const float v = rowv[0] * cy[0] + rowv[1] * cy[1] + rowv[2] * cy[2] + rowv[3] * cy[3];
        out[static_cast<size_t>((1 + oy * new_g + ox) * dim + c)] = round_through(round_through(v, DType::F16), storage);
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

std::unique_ptr<XComposer2> XComposer2::load(const std::string& dir, Backend& backend) {
  std::unique_ptr<XComposer2> m(new XComposer2(backend));
  m->cfg_ = io::ModelConfig::load(path_join(dir, "config.json"));
  const io::ModelConfig& c = m->cfg_;
  m->checkpoint_ = std::make_unique<io::Checkpoint>(io::Checkpoint::open_dir(dir));
  io::WeightStore ws(*m->checkpoint_, dir);
  m->quant_ = io::read_gptq_config(dir);
  Backend& be = backend;
  be.plan_weights(m->checkpoint_->total_bytes());

  const int64_t D = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
  const int64_t H = c.num_attention_heads, Hk = c.num_key_value_heads, d = c.head_dim();
  const int64_t qkv_out = (H + 2 * Hk) * d;

  // LoRA rank: rows of any Plora_A (model-spec §3, derived, never configured).
  const io::TensorView* a0 = m->checkpoint_->find(names::plora_a(0, "attention.wqkv"));
  XC2_CHECK(a0 != nullptr && a0->shape.size() == 2, NotFound, "tensor '",
            names::plora_a(0, "attention.wqkv"), "' not found in '", dir,
            "': not an InternLM-XComposer2 checkpoint (Partial LoRA weights missing)");
  const int64_t rank = a0->shape[0];

  auto w = [&](const std::string& name, std::vector<int64_t> shape) { return be.weight(ws.get(name, shape)); };
  auto plora = [&](int i, const char* lin, int64_t out, int64_t in) {
    const std::string base = names::plora_base(i, lin);
    PloraLinear p;
    if (m->quant_) p.qweight = be.quant_weight(io::get_gptq_linear(ws, base, out, in, *m->quant_));
    else p.weight = w(base + ".weight", {out, in});
    const io::TensorView& a = ws.get(names::plora_a(i, lin), {rank, in});
    const io::TensorView& b = ws.get(names::plora_b(i, lin), {out, rank});
    // A quantized model on the fast path runs its PLoRA deltas on int8 too (where the backend can).
    if (m->quant_) {
      p.lora_a_q = be.quant_weight_int8(a);
      p.lora_b_q = be.quant_weight_int8(b);
    }
    if (!p.lora_a_q) p.lora_a = be.weight(a);
    if (!p.lora_b_q) p.lora_b = be.weight(b);
    p.scale = static_cast<float>(c.plora_scale);
    return p;
  };

  // Only the looked-up rows of the embedding table are read: it stays mapped on the CPU (0.76 GB not resident).
  m->tok_embeddings_ = be.weight(ws.get(names::tok_embeddings(), {V, D}), Backend::WeightUse::Gathered);
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    DecoderLayer L;
    L.attention_norm = w(names::layer(i) + "attention_norm.weight", {D});
    L.ffn_norm = w(names::layer(i) + "ffn_norm.weight", {D});
    L.wqkv = plora(i, "attention.wqkv", qkv_out, D);
    L.wo = plora(i, "attention.wo", D, H * d);
    L.w1 = plora(i, "feed_forward.w1", I, D);
    L.w3 = plora(i, "feed_forward.w3", I, D);
    L.w2 = plora(i, "feed_forward.w2", D, I);
    m->layers_.push_back(std::move(L));
  }
  m->norm_w_ = w(names::final_norm(), {D});
  // The output head stays 16-bit unless the GPTQ settings say lm_head (`xc2 quantize --head-bits`).
  if (m->quant_ && m->quant_->lm_head)
    m->output_q_ = be.quant_weight(io::get_gptq_linear(ws, "output", V, D, m->quant_->head()));
  else
    m->output_w_ = w(names::output(), {V, D});

  // Vision tower.
  const io::VisionConfig& vc = c.vision;
  const int64_t Dv = vc.hidden_size, Iv = vc.intermediate_size, p = vc.patch_size, g = c.grid();
  m->patch_w_ = w(names::vit("embeddings.patch_embedding.weight"), {Dv, 3, p, p}).reshape({Dv, 3 * p * p});
  {
    const io::TensorView& cls = ws.get(names::vit("embeddings.class_embedding"), {Dv});
    const std::string pos_name = names::vit("embeddings.position_embedding.weight");
    const io::TensorView* pos_view = m->checkpoint_->find(pos_name);
    XC2_CHECK(pos_view != nullptr, NotFound, "tensor '", pos_name, "' not found in '", dir, "'");
    const int64_t rows = pos_view->shape.empty() ? 0 : pos_view->shape[0];
    const int64_t native = vc.native_grid();
    int64_t stored_g = -1;
    if (rows == g * g + 1) stored_g = g;
    else if (rows == native * native + 1) stored_g = native;
    XC2_CHECK(stored_g > 0, ShapeMismatch, "tensor '", pos_name, "' in ", pos_view->file, " has shape ",
              pos_view->shape_str(), ", expected [", g * g + 1, ", ", Dv, "] (img_size ", c.img_size, ") or [",
              native * native + 1, ", ", Dv, "] (the native ", vc.image_size, " px table)");
    const io::TensorView& pos = ws.get(pos_name, {rows, Dv});
    std::vector<float> table = widen_to_f32(pos);
    const std::vector<float> cls_f = widen_to_f32(cls);
    if (stored_g != g) {
      XC2_LOG_INFO("resizing the ViT position table from " << stored_g << "x" << stored_g << " to " << g << "x" << g);
      table = resize_position_table(table, stored_g, g, Dv, pos.dtype);
    }
    std::vector<float> cls_pos(static_cast<size_t>(Dv));
    for (int64_t i = 0; i < Dv; ++i) cls_pos[static_cast<size_t>(i)] = cls_f[static_cast<size_t>(i)] + table[static_cast<size_t>(i)];
    m->cls_pos_ = be.from_host_f32(cls_pos.data(), {1, Dv});
    m->patch_pos_ = be.from_host_f32(table.data() + Dv, {g * g, Dv});
  }
  m->pre_ln_w_ = w(names::vit("pre_layrnorm.weight"), {Dv});
  m->pre_ln_b_ = w(names::vit("pre_layrnorm.bias"), {Dv});
  for (int l = 0; l < vc.num_hidden_layers; ++l) {
    VitLayer L;
    auto lw = [&](const std::string& rest, std::vector<int64_t> shape) { return w(names::vit_layer(l, rest), shape); };
    L.ln1_w = lw("layer_norm1.weight", {Dv});
    L.ln1_b = lw("layer_norm1.bias", {Dv});
    L.ln2_w = lw("layer_norm2.weight", {Dv});
    L.ln2_b = lw("layer_norm2.bias", {Dv});
    L.q_w = lw("self_attn.q_proj.weight", {Dv, Dv});
    L.q_b = lw("self_attn.q_proj.bias", {Dv});
    L.k_w = lw("self_attn.k_proj.weight", {Dv, Dv});
    L.k_b = lw("self_attn.k_proj.bias", {Dv});
    L.v_w = lw("self_attn.v_proj.weight", {Dv, Dv});
    L.v_b = lw("self_attn.v_proj.bias", {Dv});
    L.o_w = lw("self_attn.out_proj.weight", {Dv, Dv});
    L.o_b = lw("self_attn.out_proj.bias", {Dv});
    L.fc1_w = lw("mlp.fc1.weight", {Iv, Dv});
    L.fc1_b = lw("mlp.fc1.bias", {Iv});
    L.fc2_w = lw("mlp.fc2.weight", {Dv, Iv});
    L.fc2_b = lw("mlp.fc2.bias", {Dv});
    m->vit_layers_.push_back(std::move(L));
  }
  ws.ignore(names::vit("post_layernorm.weight"));
  ws.ignore(names::vit("post_layernorm.bias"));
  ws.ignore(names::vit("embeddings.position_ids"));

  // Projector: Linear(Dv -> P), GELU, Linear(P -> D); P from the checkpoint.
  const io::TensorView* pj = m->checkpoint_->find(names::vision_proj(0, "weight"));
  XC2_CHECK(pj != nullptr && pj->shape.size() == 2, NotFound, "tensor '", names::vision_proj(0, "weight"),
            "' not found in '", dir, "'");
  const int64_t P = pj->shape[0];
  m->proj0_w_ = w(names::vision_proj(0, "weight"), {P, Dv});
  m->proj0_b_ = w(names::vision_proj(0, "bias"), {P});
  m->proj2_w_ = w(names::vision_proj(2, "weight"), {D, P});
  m->proj2_b_ = w(names::vision_proj(2, "bias"), {D});

  ws.check_all_used();
  be.weights_loaded(*m->checkpoint_);
  return m;
}

uint64_t XComposer2::decode_weight_bytes() const {
  auto lin = [](const PloraLinear& p) -> uint64_t { return p.qweight ? p.qweight.bytes : p.weight.nbytes(); };
  uint64_t n = norm_w_.nbytes() + (output_q_ ? output_q_.bytes : output_w_.nbytes()) +
               tok_embeddings_.nbytes() / static_cast<uint64_t>(cfg_.vocab_size);
  for (const DecoderLayer& L : layers_)
    n += L.attention_norm.nbytes() + L.ffn_norm.nbytes() + lin(L.wqkv) + lin(L.wo) + lin(L.w1) + lin(L.w3) + lin(L.w2);
  return n;
}

std::unique_ptr<KvCache> XComposer2::new_cache() {
  return std::make_unique<KvCache>(be_, cfg_.num_hidden_layers, cfg_.num_key_value_heads, cfg_.head_dim());
}

std::unique_ptr<KvPool> XComposer2::new_pool() {
  return std::make_unique<KvPool>(be_, cfg_.num_hidden_layers, cfg_.num_key_value_heads, cfg_.head_dim());
}

double XComposer2::rope_theta_for(int64_t seq_len) const {
  const double base = cfg_.rope_theta;
  if (cfg_.rope_scaling_type != "dynamic" || seq_len <= cfg_.max_position_embeddings) return base;
  const double f = cfg_.rope_scaling_factor;
  const double d = cfg_.head_dim();
  return base * std::pow(f * static_cast<double>(seq_len) / cfg_.max_position_embeddings - (f - 1.0), d / (d - 2.0));
}

// ---------------------------------------------------------------------------------------------
// Vision
// ---------------------------------------------------------------------------------------------

Tensor XComposer2::vit_forward(const Tensor& pixels, int64_t n_images) {
  const io::VisionConfig& vc = cfg_.vision;
  const int64_t Dv = vc.hidden_size, p = vc.patch_size, g = cfg_.grid(), g2 = g * g, n = g2 + 1;
  const int64_t Hv = vc.num_attention_heads, dv = vc.head_dim();
  const float eps = static_cast<float>(vc.layer_norm_eps);

  Tensor cols = be_.empty({n_images * g2, 3 * p * p});
  be_.im2col_patches(pixels, p, cols);
  Tensor patches = be_.empty({n_images * g2, Dv});
  be_.linear(cols, patch_w_, nullptr, patches, false);
  cols = Tensor();

  Tensor x = be_.empty({n_images * n, Dv});
  for (int64_t i = 0; i < n_images; ++i) {
    Tensor cls_row = x.rows(i * n, 1);
    be_.copy(cls_pos_, cls_row);
    Tensor rows = x.rows(i * n + 1, g2);
    be_.add(patches.rows(i * g2, g2), patch_pos_, rows);
  }
  patches = Tensor();
  be_.layer_norm(x, pre_ln_w_, pre_ln_b_, eps, x);

  const int64_t T = n_images * n;
  Tensor r = be_.empty({T, Dv}), q = be_.empty({T, Dv}), k = be_.empty({T, Dv}), v = be_.empty({T, Dv});
  Tensor att = be_.empty({T, Dv}), o = be_.empty({T, Dv}), f = be_.empty({T, vc.intermediate_size});
  const float q_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(dv)));
  for (const VitLayer& L : vit_layers_) {
    be_.layer_norm(x, L.ln1_w, L.ln1_b, eps, r);
    be_.linear(r, L.q_w, &L.q_b, q, false);
    be_.linear(r, L.k_w, &L.k_b, k, false);
    be_.linear(r, L.v_w, &L.v_b, v, false);
    be_.scale(q, q_scale);
    for (int64_t i = 0; i < n_images; ++i) {
      Tensor out = att.rows(i * n, n);
      const Tensor qi = q.rows(i * n, n), ki = k.rows(i * n, n), vi = v.rows(i * n, n);
      AttentionArgs args(qi, ki, vi, out, Hv, Hv, dv);
      args.n_kv = n;
      args.causal = false;
      be_.attention(args);
    }
    be_.linear(att, L.o_w, &L.o_b, o, false);
    be_.add(x, o, x);
    be_.layer_norm(x, L.ln2_w, L.ln2_b, eps, r);
    be_.linear(r, L.fc1_w, &L.fc1_b, f, false);
    if (vc.hidden_act == "gelu") be_.gelu_erf(f);
    else be_.quick_gelu(f);
    be_.linear(f, L.fc2_w, &L.fc2_b, o, false);
    be_.add(x, o, x);
  }
  // hidden_states[-1] without post_layernorm, CLS dropped.
  Tensor out = be_.empty({n_images * g2, Dv});
  for (int64_t i = 0; i < n_images; ++i) {
    Tensor dst = out.rows(i * g2, g2);
    be_.copy(x.rows(i * n + 1, g2), dst);
  }
  return out;
}

Tensor XComposer2::encode_images(const std::vector<std::vector<float>>& pixels, std::vector<float>* vit_out,
                                 std::vector<float>* proj_out) {
  const int64_t S = cfg_.img_size, N = static_cast<int64_t>(pixels.size());
  XC2_CHECK(N > 0, Internal, "encode_images: no images");
  std::vector<float> all;
  all.reserve(static_cast<size_t>(N * 3 * S * S));
  for (const auto& px : pixels) {
    XC2_CHECK(static_cast<int64_t>(px.size()) == 3 * S * S, Internal, "encode_images: pixel tensor has ",
              px.size(), " values, expected 3 x ", S, " x ", S);
    all.insert(all.end(), px.begin(), px.end());
  }
  Tensor pix = be_.from_host_f32(all.data(), {N, 3, S, S});
  Tensor feats = vit_forward(pix, N);
  if (vit_out) {
    vit_out->resize(static_cast<size_t>(feats.numel()));
    be_.to_host_f32(feats, vit_out->data());
  }
  const int64_t rows = feats.rows();
  Tensor h = be_.empty({rows, proj0_w_.rows()});
  be_.linear(feats, proj0_w_, &proj0_b_, h, false);
  be_.gelu_erf(h);
  Tensor out = be_.empty({rows, cfg_.hidden_size});
  be_.linear(h, proj2_w_, &proj2_b_, out, false);
  if (proj_out) {
    proj_out->resize(static_cast<size_t>(out.numel()));
    be_.to_host_f32(out, proj_out->data());
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Decoder
// ---------------------------------------------------------------------------------------------

Tensor XComposer2::embed_tokens(const std::vector<int32_t>& ids) {
  Tensor y = be_.empty({static_cast<int64_t>(ids.size()), cfg_.hidden_size});
  embed(TokenIds::of(ids), y);
  return y;
}

void XComposer2::embed(const TokenIds& ids, Tensor& rows) {
  if (ids.host)
    for (int64_t i = 0; i < ids.n; ++i)
      XC2_CHECK(ids.host[i] >= 0 && ids.host[i] < cfg_.vocab_size, InvalidArgument, "token id ", ids.host[i],
                " is outside the vocabulary (", cfg_.vocab_size, " entries)");
  be_.embedding(tok_embeddings_, ids, rows);
}

void XComposer2::linear(const Tensor& x, const PloraLinear& w, const std::vector<RowSpan>& spans, Tensor& y) {
  // The image spans' A products (times the scale) first, then the main product and the B products on those rows:
  // with both quantized, one linear_q_deltas (which the CPU backend runs in the main product's pass over y).
  std::vector<Tensor> ts;
  ts.reserve(spans.size());
  std::vector<Backend::RowDelta> deltas;
  for (const RowSpan& s : spans) {
    if (s.count == 0) continue;
    ts.push_back(be_.empty({s.count, w.rank()}));
    const Tensor xs = x.rows(s.begin, s.count);
    if (w.lora_a_q) be_.linear_q(xs, w.lora_a_q, ts.back(), false);
    else be_.linear(xs, w.lora_a, nullptr, ts.back(), false);
    if (w.scale != 1.0f) be_.scale(ts.back(), w.scale);
    deltas.push_back({s.begin, &ts.back()});
  }
  if (w.qweight && w.lora_b_q) return be_.linear_q_deltas(x, w.qweight, w.lora_b_q, deltas, y);
  if (w.qweight) be_.linear_q(x, w.qweight, y, false);
  else be_.linear(x, w.weight, nullptr, y, false);
  for (const Backend::RowDelta& d : deltas) {
    Tensor ys = y.rows(d.row0, d.t->rows());
    if (w.lora_b_q) be_.linear_q(*d.t, w.lora_b_q, ys, true);
    else be_.linear(*d.t, w.lora_b, nullptr, ys, true);
  }
}

namespace {

// Checks a batch and prepares its sequences' caches: host positions reserve room for their rows.
void check_batch(const DecoderBatch& b, int64_t hidden) {
  const int64_t T = b.rows.rows();
  XC2_CHECK(T > 0 && b.rows.row_numel() == hidden, Internal, "forward: input rows ", b.rows.shape_str());
  int64_t next = 0;
  for (size_t i = 0; i < b.seqs.size(); ++i) {
    const SeqRows& s = b.seqs[i];
    XC2_CHECK(s.cache != nullptr && s.row0 == next && s.n_rows > 0, Internal, "forward: sequence ", i,
              " does not continue the rows (row0 ", s.row0, ", ", s.n_rows, " rows)");
    for (size_t j = 0; j < i; ++j)
      XC2_CHECK(b.seqs[j].cache != s.cache, Internal, "forward: one cache given twice");
    next += s.n_rows;
  }
  XC2_CHECK(next == T, Internal, "forward: the sequences cover ", next, " of ", T, " rows");
  for (const RowSpan& s : b.image_spans)
    XC2_CHECK(s.begin >= 0 && s.count >= 0 && s.begin + s.count <= T, Internal, "forward: image span out of range");
  for (int64_t r : b.out_rows) XC2_CHECK(r >= 0 && r < T, Internal, "forward: output row ", r, " of ", T);
}

}  // namespace

Tensor XComposer2::forward_buffer(Tensor& slot, const std::vector<int64_t>& shape) {
  // Not on CUDA: a recorded decode graph keeps the addresses of the buffers it was recorded with.
  if (be_.device() != Device::Cpu) return be_.empty(shape);
  if (!slot.data || slot.shape[0] < shape[0]) {
    slot = Tensor();  // the smaller one goes first
    slot = be_.empty(shape);
  }
  Tensor t = slot;
  t.shape = shape;
  XC2_CHECK(t.nbytes() <= slot.nbytes(), Internal, "forward buffer ", slot.shape_str(), " cannot hold ", t.shape_str());
  return t;
}

Tensor XComposer2::forward(const DecoderBatch& batch, Tensor* logits_out) {
  const io::ModelConfig& c = cfg_;
  const int64_t T = batch.rows.rows(), D = c.hidden_size, I = c.intermediate_size;
  const int64_t H = c.num_attention_heads, Hk = c.num_key_value_heads, d = c.head_dim();
  const float eps = static_cast<float>(c.rms_norm_eps);
  check_batch(batch, D);
  ForwardTrace* trace = batch.trace;
  auto cb = [&](const char* name, int64_t layer, const Tensor& t) {
    if (trace && trace->on_tensor) trace->on_tensor(name, layer, t);
  };
  auto record_hidden = [&](const Tensor& t) {
    if (trace && trace->want_hidden) {
      trace->hidden.emplace_back(static_cast<size_t>(t.numel()));
      be_.to_host_f32(t, trace->hidden.back().data());
    }
  };

  // Per sequence: its positions and RoPE base.
  struct Seq {
    KvCache* cache;
    int64_t row0, n;
    Positions pos;
    double theta;
  };
  std::vector<Seq> seqs;
  for (const SeqRows& s : batch.seqs) {
    KvCache& kv = *s.cache;
    if (s.device_pos) {
      XC2_CHECK(kv.capacity() > kv.length(), Internal, "forward: the KV cache has no free row (capacity ",
                kv.capacity(), ")");
      seqs.push_back({&kv, s.row0, s.n_rows, Positions::in(*s.device_pos, kv.capacity()), s.theta});
    } else {
      const int64_t pos0 = kv.length();
      kv.reserve(pos0 + s.n_rows);
      seqs.push_back({&kv, s.row0, s.n_rows, Positions::at(pos0), rope_theta_for(pos0 + s.n_rows)});
    }
  }

  const std::vector<RowSpan>& spans = batch.image_spans;
  ForwardBuffers& fb = fwd_;
  Tensor h = forward_buffer(fb.h, {T, D});
  be_.copy(batch.rows, h);
  cb("input", -1, h);
  record_hidden(h);
  Tensor a = forward_buffer(fb.a, {T, D}), qkv = forward_buffer(fb.qkv, {T, (H + 2 * Hk) * d});
  Tensor q = forward_buffer(fb.q, {T, H, d}), att = forward_buffer(fb.att, {T, H * d});
  Tensor o = forward_buffer(fb.o, {T, D});
  Tensor gate = forward_buffer(fb.gate, {T, I}), up = forward_buffer(fb.up, {T, I});
  const float attn_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));

  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const DecoderLayer& W = layers_[static_cast<size_t>(l)];
    be_.rms_norm(h, W.attention_norm, eps, a);
    cb("attn_norm", l, a);
    linear(a, W.wqkv, spans, qkv);
    cb("qkv", l, qkv);
    for (const Seq& s : seqs) {
      Tensor& kc = s.cache->k(l);
      Tensor& vc = s.cache->v(l);
      Tensor qs = q.rows(s.row0, s.n), out = att.rows(s.row0, s.n);
      be_.split_qkv(qkv.rows(s.row0, s.n), H, Hk, d, qs, kc, vc, s.pos);
      be_.rope(qs, s.n, H, d, s.pos, false, s.theta);
      be_.rope(kc, s.n, Hk, d, s.pos, true, s.theta);
      AttentionArgs args(qs, kc, vc, out, H, Hk, d);
      args.q_pos = s.pos;
      args.n_kv = s.pos.end(s.n);
      args.scale = attn_scale;
      be_.attention(args);
    }
    cb("q_rope", l, q);
    cb("attn_out", l, att);
    linear(att, W.wo, spans, o);
    cb("attn_proj", l, o);
    be_.add(h, o, h);
    cb("ffn_inp", l, h);
    be_.rms_norm(h, W.ffn_norm, eps, a);
    cb("ffn_norm", l, a);
    linear(a, W.w1, spans, gate);
    cb("ffn_gate", l, gate);
    linear(a, W.w3, spans, up);
    cb("ffn_up", l, up);
    be_.silu_mul(gate, up, gate);
    cb("ffn_act", l, gate);
    linear(gate, W.w2, spans, o);
    cb("ffn_out", l, o);
    be_.add(h, o, h);
    cb("layer_out", l, h);
    record_hidden(h);
  }
  for (const Seq& s : seqs)
    if (!s.pos.on_device()) s.cache->set_length(s.pos.pos0 + s.n);

  const int64_t n_out = static_cast<int64_t>(batch.out_rows.size());
  if (n_out == 0) return Tensor();
  // The output rows: a view when they are the last n_out rows in order, else gathered.
  Tensor last;
  bool tail = true;
  for (int64_t i = 0; i < n_out; ++i) tail = tail && batch.out_rows[static_cast<size_t>(i)] == T - n_out + i;
  if (tail) {
    last = h.rows(T - n_out, n_out);
  } else {
    last = be_.empty({n_out, D});
    for (int64_t i = 0; i < n_out; ++i) {
      Tensor dst = last.rows(i, 1);
      be_.copy(h.rows(batch.out_rows[static_cast<size_t>(i)], 1), dst);
    }
  }
  Tensor fin = be_.empty({n_out, D});
  be_.rms_norm(last, norm_w_, eps, fin);
  cb("final_norm", -1, fin);
  Tensor lg = logits_out ? *logits_out : be_.empty({n_out, c.vocab_size});
  if (output_q_) be_.linear_q(fin, output_q_, lg, false);
  else be_.linear(fin, output_w_, nullptr, lg, false);
  cb("logits", -1, lg);
  return lg;
}

std::vector<float> XComposer2::forward(const Tensor& rows, const std::vector<RowSpan>& image_spans, KvCache& cache,
                                       int64_t n_out, ForwardTrace* trace) {
  const int64_t T = rows.rows();
  XC2_CHECK(T > 0, Internal, "forward: empty input");
  XC2_CHECK(n_out >= 0 && n_out <= T, Internal, "forward: n_out out of range");
  DecoderBatch b;
  b.rows = rows;
  b.seqs.push_back({&cache, 0, T, nullptr, 0});
  b.image_spans = image_spans;
  for (int64_t r = T - n_out; r < T; ++r) b.out_rows.push_back(r);
  b.trace = trace;
  const Tensor lg = forward(b);
  std::vector<float> logits(static_cast<size_t>(lg.numel()));
  if (n_out > 0) be_.to_host_f32(lg, logits.data());
  return logits;
}

std::vector<float> XComposer2::decode_batch(const std::vector<int32_t>& tokens, const std::vector<KvCache*>& caches) {
  const int64_t B = static_cast<int64_t>(tokens.size());
  XC2_CHECK(B > 0, Internal, "decode_batch: empty batch");
  XC2_CHECK(caches.size() == tokens.size(), Internal, "decode_batch: ", tokens.size(), " tokens but ", caches.size(),
            " caches");
  DecoderBatch b;
  b.rows = embed_tokens(tokens);
  for (int64_t i = 0; i < B; ++i) {
    b.seqs.push_back({caches[static_cast<size_t>(i)], i, 1, nullptr, 0});
    b.out_rows.push_back(i);
  }
  const Tensor lg = forward(b);
  std::vector<float> logits(static_cast<size_t>(lg.numel()));
  be_.to_host_f32(lg, logits.data());
  return logits;
}

}  // namespace xc2::model
