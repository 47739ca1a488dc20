// InternLM-XComposer2: CLIP ViT -> vision_proj -> InternLM2 decoder with Partial LoRA.
//   encode_images():  pixels [N, 3, S, S] -> projected image rows [N * g^2, hidden_size]
//   forward():        input rows [T, hidden_size] (token embeddings and image rows, model-spec §5)
//                     -> logits of the selected rows, appending T positions to the KV cache.
// Partial LoRA (model-spec §7) is applied to the rows listed in `image_spans` only; decode steps and
// text-only prompts pass no spans and run the plain linears.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "core/tensor.h"
#include "io/checkpoint.h"
#include "io/config.h"
#include "model/kv_pool.h"

namespace xc2::model {

// Contiguous rows [begin, begin + count) of a sequence that hold image embeddings.
struct RowSpan {
  int64_t begin = 0;
  int64_t count = 0;
};

struct PloraLinear {
  Tensor weight;  // [out, in]; empty when the linear is quantized
  QuantWeight qweight;  // GPTQ folders: the quantized [out, in] weight (bias included, if any)
  Tensor lora_a;  // Plora_A: [rank, in]
  Tensor lora_b;  // Plora_B: [out, rank]
  // The fast path of a quantized model: Plora_A / Plora_B rounded to 8 bits for the int8 kernels
  // (Backend::quant_weight_int8), the 16-bit tensor above then left empty; empty otherwise.
  QuantWeight lora_a_q, lora_b_q;
  int64_t rank() const { return lora_a_q ? lora_a_q.n : lora_a.rows(); }
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

// Optional intermediate results of a forward (tests, `xc2 logits`, debug dumps).
struct ForwardTrace {
  bool want_hidden = false;
  std::vector<std::vector<float>> hidden;  // hidden[0] = input rows, hidden[l + 1] = after layer l: [T * hidden]
  // Called with every named intermediate as it is computed (layer -1 outside the layers):
  //   "input" [T, D]; per layer: "attn_norm" [T, D], "qkv" [T, (H + 2 Hk) d] (Partial LoRA applied), "q_rope"
  //   [T, H, d], "attn_out" [T, H d], "attn_proj" [T, D], "ffn_inp" (residual after attention) [T, D],
  //   "ffn_norm" [T, D], "ffn_gate" [T, I], "ffn_up" [T, I], "ffn_act" (silu(gate) * up) [T, I], "ffn_out" [T, D],
  //   "layer_out" [T, D]; then "final_norm" and "logits" for the output rows.
  // The tensor is only valid during the call (copy it to keep it).
  std::function<void(const char* name, int64_t layer, const Tensor& t)> on_tensor;
};

// The rows of a decoder batch that continue one sequence: batch rows [row0, row0 + n_rows) at positions
// pos .. pos + n_rows - 1 of `cache`. Host positions (device_pos null): pos = cache->length() when the forward
// starts, and the forward advances the length. Device positions: pos is read from device_pos[0] when the ops
// run (graph-replayed decode steps); the caller advances it and the cache length, the cache capacity bounds it
// and must not change while a recording is in use, and `theta` is the RoPE base.
struct SeqRows {
  KvCache* cache = nullptr;
  int64_t row0 = 0, n_rows = 0;
  const IntBuffer* device_pos = nullptr;
  double theta = 0;
};

// One step of the decoder over any mix of sequences: a prefill (one sequence, many rows), a decode step (one
// row), a batched decode step (one row each of several sequences), or a device-resident step.
struct DecoderBatch {
  Tensor rows;                       // [T, hidden]: token embeddings and image rows
  std::vector<SeqRows> seqs;         // in row order, covering rows 0 .. T - 1
  std::vector<RowSpan> image_spans;  // batch rows holding image embeddings: Partial LoRA applies there only
  std::vector<int64_t> out_rows;     // rows whose logits are computed, in order (empty: none)
  ForwardTrace* trace = nullptr;
};

class XComposer2 {
 public:
  // Loads config.json and the weights of `dir` onto `backend`. Strict: every expected tensor with
  // its shape, no unexpected tensors (post_layernorm is accepted and ignored).
  static std::unique_ptr<XComposer2> load(const std::string& dir, Backend& backend);

  const io::ModelConfig& config() const { return cfg_; }
  Backend& backend() { return be_; }
  const io::Checkpoint& checkpoint() const { return *checkpoint_; }
  // GPTQ settings of a quantized folder (the decoder linears are quantized), else nullopt.
  const std::optional<io::GptqConfig>& quantization() const { return quant_; }
  const std::vector<DecoderLayer>& layers() const { return layers_; }
  // Weight bytes one decode step reads: the decoder linears as stored on the backend (packed when quantized),
  // the norms, the output head and one embedding row (not the PLoRA weights, which decode never uses).
  uint64_t decode_weight_bytes() const;

  // pixels: N preprocessed images, each [3, S, S] (S = img_size) -> [N * g^2, hidden] on the device.
  // vit_out / proj_out (optional): host copies of the ViT features [N * g^2, vis_hidden] and projector output.
  Tensor encode_images(const std::vector<std::vector<float>>& pixels, std::vector<float>* vit_out = nullptr,
                       std::vector<float>* proj_out = nullptr);

  // Token embeddings: [ids.size(), hidden]; embed() also takes ids in an IntBuffer (read when the op runs).
  Tensor embed_tokens(const std::vector<int32_t>& ids);
  void embed(const TokenIds& ids, Tensor& rows);

  // THE decoder forward: every sequence's rows go through the layers together (the linears once on all rows,
  // RoPE and attention per sequence on its own cache) and are appended to its cache. Returns the logits
  // [out_rows.size(), vocab] on the device in the activation dtype, written into *logits_out when given
  // (e.g. a buffer a recorded graph writes); an empty tensor when out_rows is empty.
  Tensor forward(const DecoderBatch& batch, Tensor* logits_out = nullptr);

  // Conveniences over forward(DecoderBatch), logits copied to the host (f32):
  // `rows` ([T, hidden]) continue `cache`; the logits of the last n_out rows (0: none, prefilling context only).
  std::vector<float> forward(const Tensor& rows, const std::vector<RowSpan>& image_spans, KvCache& cache,
                             int64_t n_out, ForwardTrace* trace = nullptr);
  // One decode step of B sequences: tokens[b] is appended to *caches[b]; logits [B, vocab]. The weights are read
  // once for the whole batch; per sequence the math is that of forward(embed_tokens({tokens[b]}), {}, *caches[b],
  // 1), and on the CPU backend the bits too (a GEMM row's result does not depend on the other rows of the call).
  std::vector<float> decode_batch(const std::vector<int32_t>& tokens, const std::vector<KvCache*>& caches);

  std::unique_ptr<KvCache> new_cache();
  std::unique_ptr<KvPool> new_pool();

  // RoPE base for a sequence of total length `seq_len` (dynamic NTK beyond max_position_embeddings).
  double rope_theta_for(int64_t seq_len) const;

 private:
  XComposer2(Backend& backend) : be_(backend) {}
  // Every decoder linear: y = x . W^T, plus the Partial-LoRA delta scale * (x A^T) B^T on the image rows.
  // (Quantized weights plug in here.)
  void linear(const Tensor& x, const PloraLinear& w, const std::vector<RowSpan>& spans, Tensor& y);
  Tensor vit_forward(const Tensor& pixels_dev, int64_t n_images);
  // A buffer of `shape` for forward(): on the CPU backend a view of `slot`, which grows to the most rows a forward
  // has needed and is kept for the next one; on other backends a new tensor.
  Tensor forward_buffer(Tensor& slot, const std::vector<int64_t>& shape);

  Backend& be_;
  io::ModelConfig cfg_;
  std::unique_ptr<io::Checkpoint> checkpoint_;
  std::optional<io::GptqConfig> quant_;

  // vision
  Tensor patch_w_;                // [vis_hidden, 3 * p * p]
  Tensor cls_pos_;               // [1, vis_hidden]: class_embedding + position row 0 (f32)
  Tensor patch_pos_;              // [g^2, vis_hidden]: position rows 1.. (resized if needed, f32)
  Tensor pre_ln_w_, pre_ln_b_;
  std::vector<VitLayer> vit_layers_;
  Tensor proj0_w_, proj0_b_, proj2_w_, proj2_b_;

  // decoder
  Tensor tok_embeddings_;        // [vocab, hidden]
  std::vector<DecoderLayer> layers_;
  Tensor norm_w_;                // [hidden]
  Tensor output_w_;              // [vocab, hidden]; empty when the head is quantized
  QuantWeight output_q_;         // GPTQ folders with lm_head

  // forward()'s activations, kept between forwards on the CPU (forward_buffer): fresh memory costs a page fault per
  // 4 KiB at its first touch, and the buffers over glibc's 32 MiB mmap threshold (the FFN's gate and up: 71 MB
  // each at 1290 positions) came fresh from the kernel on every forward.
  struct ForwardBuffers {
    Tensor h, a, qkv, q, att, o, gate, up;
  } fwd_;
};

// The position-table resize rule of model-spec §8.3: rows 1.. of `table` ([old_g^2 + 1, dim], f32)
// bicubic-resized (A = -0.75, align_corners = False, f32) to new_g x new_g, rounded through f16 and
// then through `storage` dtype, with the CLS row kept. Returns [new_g^2 + 1, dim].
std::vector<float> resize_position_table(const std::vector<float>& table, int64_t old_g, int64_t new_g, int64_t dim,
                                         DType storage);

}  // namespace xc2::model
