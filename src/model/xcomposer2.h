// InternLM-XComposer2: CLIP ViT -> vision_proj -> InternLM2 decoder with Partial LoRA.
//   encode_images():  pixels [N, 3, S, S] -> projected image rows [N * g^2, hidden_size]
//   forward():        input rows [T, hidden_size] (token embeddings and image rows, model-spec §5)
//                     -> logits of the selected rows, appending T positions to the KV cache.
// Partial LoRA (model-spec §7) is applied to the rows listed in `image_spans` only; decode steps and
// text-only prompts pass no spans and run the plain linears.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "core/tensor.h"
#include "io/checkpoint.h"
#include "io/config.h"

namespace xc2::model {

// Contiguous rows [begin, begin + count) of a sequence that hold image embeddings.
struct RowSpan {
  int64_t begin = 0;
  int64_t count = 0;
};

struct PloraLinear {
  Tensor weight;  // [out, in]
  Tensor lora_a;  // Plora_A: [rank, in]
  Tensor lora_b;  // Plora_B: [out, rank]
  float scale = 1.0f;
};

struct DecoderLayer {
  Tensor attention_norm, ffn_norm;  // [hidden]
  PloraLinear wqkv;                 // [(n_heads + 2 n_kv_heads) head_dim, hidden]
  PloraLinear wo;                   // [hidden, hidden]
  PloraLinear w1, w3;               // gate, up: [ffn, hidden]
  PloraLinear w2;                   // down: [hidden, ffn]
};

struct VitLayer {
  Tensor ln1_w, ln1_b, ln2_w, ln2_b;           // [vis_hidden]
  Tensor q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b;  // [vis_hidden, vis_hidden], [vis_hidden]
  Tensor fc1_w, fc1_b;                         // [vis_ffn, vis_hidden], [vis_ffn]
  Tensor fc2_w, fc2_b;                         // [vis_hidden, vis_ffn], [vis_hidden]
};

// Per-layer keys (post-RoPE) and values, grown on demand. k[l], v[l]: [capacity, n_kv_heads, head_dim].
class KvCache {
 public:
  KvCache(Backend& backend, int64_t n_layers, int64_t n_kv_heads, int64_t head_dim);
  int64_t length() const { return length_; }
  int64_t capacity() const { return capacity_; }
  void reserve(int64_t n_positions);  // keeps the first length() rows
  void set_length(int64_t n) { length_ = n; }
  void clear() { length_ = 0; }
  Tensor& k(int64_t layer) { return k_[static_cast<size_t>(layer)]; }
  Tensor& v(int64_t layer) { return v_[static_cast<size_t>(layer)]; }

 private:
  Backend& be_;
  int64_t n_layers_, n_kv_heads_, head_dim_;
  int64_t capacity_ = 0, length_ = 0;
  std::vector<Tensor> k_, v_;
};

// Optional intermediate results, copied to the host (used by tests and `xc2 logits`).
struct ForwardTrace {
  bool want_hidden = false;
  std::vector<std::vector<float>> hidden;  // hidden[0] = input rows, hidden[l + 1] = after layer l: [T * hidden]
};

class XComposer2 {
 public:
  // Loads config.json and the weights of `dir` onto `backend`. Strict: every expected tensor with
  // its shape, no unexpected tensors (post_layernorm is accepted and ignored).
  static std::unique_ptr<XComposer2> load(const std::string& dir, Backend& backend);

  const io::ModelConfig& config() const { return cfg_; }
  Backend& backend() { return be_; }
  const io::Checkpoint& checkpoint() const { return *checkpoint_; }

  // pixels: N preprocessed images, each [3, S, S] (S = img_size) -> [N * g^2, hidden] on the device.
  // vit_out / proj_out (optional): host copies of the ViT features [N * g^2, vis_hidden] and projector output.
  Tensor encode_images(const std::vector<std::vector<float>>& pixels, std::vector<float>* vit_out = nullptr,
                       std::vector<float>* proj_out = nullptr);

  // Token embeddings: [ids.size(), hidden].
  Tensor embed_tokens(const std::vector<int32_t>& ids);

  // Runs the decoder on `rows` ([T, hidden], positions cache.length() .. +T-1) and appends them to the
  // cache. Returns the logits [n_out, vocab] (f32, on the host) of the last `n_out` rows
  // (n_out = 0: none, used for prefilling context only).
  std::vector<float> forward(const Tensor& rows, const std::vector<RowSpan>& image_spans, KvCache& cache,
                             int64_t n_out, ForwardTrace* trace = nullptr);
  // forward() with the logits [n_out, vocab] left on the device, in the backend's activation dtype
  // (an empty tensor when n_out = 0). forward() is this plus the copy to the host.
  Tensor forward_device(const Tensor& rows, const std::vector<RowSpan>& image_spans, KvCache& cache, int64_t n_out,
                        ForwardTrace* trace = nullptr);
  // One decode step whose token id (token[0]) and position (pos[0] = the cache length before the step) are
  // read on the device (Backend::supports_device_decode()), so it can be recorded once as a graph and
  // replayed: the math of forward(embed_tokens({token}), {}, cache, 1) with RoPE base `theta`, k and v
  // written at row pos of the cache (whose capacity must not change while a recording is in use), the
  // logits written into `logits` ([1, vocab]). Neither pos nor cache.length() is advanced here.
  // One decode step for B independent sequences: tokens[b] is appended to *caches[b], each at its own
  // position and with its own RoPE base (rope_theta_for of its new length). The linears run once on the B
  // stacked rows, so each weight is read once per step for the whole batch; RoPE and attention run per
  // sequence on its own cache. Returns the logits [B, vocab] (f32, host). Per sequence the math is that of
  // forward(embed_tokens({tokens[b]}), {}, *caches[b], 1); on the CPU backend the bits are the same too
  // (a GEMM row's result does not depend on the other rows of the call).
  std::vector<float> decode_batch(const std::vector<int32_t>& tokens, const std::vector<KvCache*>& caches);
  void decode_step_at(const IntBuffer& token, const IntBuffer& pos, KvCache& cache, double theta, Tensor& logits);

  std::unique_ptr<KvCache> new_cache();

  // RoPE base for a sequence of total length `seq_len` (dynamic NTK beyond max_position_embeddings).
  double rope_theta_for(int64_t seq_len) const;

 private:
  XComposer2(Backend& backend) : be_(backend) {}
  void plora_linear(const Tensor& x, const PloraLinear& w, const std::vector<RowSpan>& spans, Tensor& y);
  Tensor vit_forward(const Tensor& pixels_dev, int64_t n_images);
  // A decoder layer after attention on text rows (no Partial LoRA; decode steps): h += wo(att), then
  // h += w2(silu(w1 a) * w3 a) with a = ffn_norm(h). a, gate, up, o: scratch with h's rows.
  void text_layer_tail(const DecoderLayer& W, const Tensor& att, Tensor& h, Tensor& a, Tensor& gate, Tensor& up,
                       Tensor& o);

  Backend& be_;
  io::ModelConfig cfg_;
  std::unique_ptr<io::Checkpoint> checkpoint_;

  // vision
  Tensor patch_w;                // [vis_hidden, 3 * p * p]
  Tensor cls_pos;                // [1, vis_hidden]: class_embedding + position row 0 (f32)
  Tensor patch_pos;              // [g^2, vis_hidden]: position rows 1.. (resized if needed, f32)
  Tensor pre_ln_w, pre_ln_b;
  std::vector<VitLayer> vit_layers_;
  Tensor proj0_w, proj0_b, proj2_w, proj2_b;

  // decoder
  Tensor tok_embeddings_;        // [vocab, hidden]
  std::vector<DecoderLayer> layers_;
  Tensor norm_w_;                // [hidden]
  Tensor output_w_;              // [vocab, hidden]
};

// The position-table resize rule of model-spec §8.3: rows 1.. of `table` ([old_g^2 + 1, dim], f32)
// bicubic-resized (A = -0.75, align_corners = False, f32) to new_g x new_g, rounded through f16 and
// then through `storage` dtype, with the CLS row kept. Returns [new_g^2 + 1, dim].
std::vector<float> resize_position_table(const std::vector<float>& table, int64_t old_g, int64_t new_g, int64_t dim,
                                         DType storage);

}  // namespace xc2::model
