// The public xc2 API: load an InternLM-XComposer2 folder, encode images, generate text, read logits.
//
//   auto engine = xc2::Engine::load({"models/xc2-shapes"});
//   auto chat = engine->new_chat();                       // default system prompt, as upstream chat()
//   auto r = chat->ask("Describe the picture.", {"examples/shapes-1.png"}, {}, [](const std::string& s) {
//     std::cout << s << std::flush;                       // streamed, always complete UTF-8
//     return true;                                        // false stops generation
//   });
//
// Everything throws xc2::Error (include/xc2/error.h) on bad input.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "xc2/diagnostics.h"
#include "xc2/dtype.h"
#include "xc2/error.h"

namespace xc2 {

// Where an engine runs: Auto is CUDA when xc2 was built with it and a GPU is present, else the CPU.
enum class DeviceChoice { Auto, Cpu, Cuda };

struct EngineOptions {
  std::string model_dir;
  DeviceChoice device = DeviceChoice::Auto;
  int threads = 0;  // CPU threads; 0 = all cores
  // Compute dtype; unset: CUDA bf16, CPU f32. The CPU backend computes in f32 only; CUDA f32 (TF32 off) is for
  // checking the GPU against the CPU token for token.
  std::optional<DType> dtype;
  // Upstream's tokenization: special-token strings (`<s>`, `</s>`, `<unk>`, `[UNUSED_TOKEN_146]`, ...) in the
  // user's text become control tokens. Off by default: the user's text (Request::user_spans, a ChatSession's
  // system prompt and messages) is tokenized as text, and only the template emits control tokens.
  bool parse_special = false;
  // Quantized (GPTQ) folders on the CPU: by default, where the CPU has AVX2 (+ FMA, F16C), the quantized linears
  // round the activations to int8 per 32 input columns and use integer dot products (AVX-512 VNNI, AVX-VNNI or
  // plain AVX2, the same results; several times faster prefill; logits differ from the exact path by about 1e-2
  // relative). true: f32 math on the dequantized weights, the reference's numbers. No effect on 16-bit folders
  // or CPUs without AVX2.
  bool exact_quant = false;
};

// The spellings of the CLI: "auto", "cpu", "cuda"; "auto" (nullopt), "f32", "bf16", "f16".
// Error{InvalidArgument} for anything else.
DeviceChoice parse_device(const std::string& name);
std::optional<DType> parse_dtype(const std::string& name);

// Generation settings. The defaults are those of upstream chat() (model-spec §11.2).
struct GenerationOptions {
  int max_new_tokens = 1024;
  bool do_sample = true;
  float temperature = 1.0f;
  int top_k = 50;
  float top_p = 0.8f;
  float repetition_penalty = 1.005f;
  std::optional<uint64_t> seed;     // unset: a random seed (reported in the result)
  bool ignore_eos = false;          // keep going past </s> and [UNUSED_TOKEN_145]
  std::vector<int32_t> stop_ids;    // extra stop tokens (besides </s> and [UNUSED_TOKEN_145])
  // Stop strings (OpenAI `stop`): generation ends when the answer's text contains one; the text is cut before
  // it and nothing from it is streamed (a streamed piece is held back while it could be the start of one).
  std::vector<std::string> stop_strings;
  // A prompt longer than config max_length is an error unless this is set (then it is cut to
  // max_length positions, as upstream does silently).
  bool truncate_prompt = false;
  // Beam search (num_beams > 1, do_sample false): Hugging Face generate(num_beams=N, do_sample=False) as
  // upstream chat() ran it (engine/beam_search.h); the answer is the best hypothesis, its text streamed at the
  // end. length_penalty: hypotheses score sum(log p) / length^length_penalty.
  int num_beams = 1;
  float length_penalty = 1.0f;
};

// How a request's text becomes tokens (model-spec §10, §12). Each mirrors one upstream code path.
enum class PromptStyle {
  ChatImage,   // chat() with images: split on <ImageHere>; every non-empty text part gets a BOS
  ChatText,    // chat() without images: "<s>" + text through the tokenizer -> [BOS, BOS, ...]
  Interleave,  // the composition demo: split on <image>; only the first part gets a BOS
  Raw,         // the text as is, one BOS
};

// A preprocessed, encoded image (the projector output), reusable across requests.
class EncodedImage;
using ImageHandle = std::shared_ptr<const EncodedImage>;

// A byte range [first, second) of a request's text.
using TextRange = std::pair<size_t, size_t>;

struct Request {
  std::string text;                 // full prompt text (template already applied, markers in place)
  // The ranges of `text` that came from the user (the query, system prompt, history, file contents): tokenized
  // as plain text, so special-token strings there never become control tokens (unless
  // EngineOptions::parse_special). chat_prompt() gives them; outside them the text is tokenized as upstream
  // does (the template's markers become control tokens). <ImageHere>/<image> markers place images everywhere.
  std::vector<TextRange> user_spans;
  std::vector<ImageHandle> images;  // image k fills marker k
  PromptStyle style = PromptStyle::ChatImage;
  // Whether the repetition penalty also covers the prompt tokens: true on upstream's input_ids path
  // (text-only chat), false on its inputs_embeds path (images; the penalty sees generated tokens only).
  bool penalize_prompt = false;
};

struct Timings {
  double load_ms = 0;      // image decoding and preprocessing
  double vision_ms = 0;    // ViT + projector
  double prefill_ms = 0;   // the prompt through the decoder
  double decode_ms = 0;    // all decode steps
  double first_token_ms = 0;  // from the call to the first generated token
};

// Why generation ended.
enum class StopReason {
  Eos,           // </s>
  ImEnd,         // [UNUSED_TOKEN_145], the end of an assistant turn
  StopId,        // one of GenerationOptions::stop_ids
  MaxNewTokens,  // max_new_tokens generated
  Cancelled,     // the stream callback returned false
  ContextFull,   // the sequence reached the context limit
  StopString,    // the text reached one of GenerationOptions::stop_strings
};
// "eos", "im_end", "stop_id", "max_new_tokens", "cancelled", "context_full", "stop_string" (the JSON spelling).
const char* stop_reason_name(StopReason reason);

struct GenerationResult {
  std::string text;              // decoded answer (special tokens skipped, cut at [UNUSED_TOKEN_145])
  std::vector<int32_t> tokens;   // generated ids, the stop token excluded
  int64_t prompt_positions = 0;  // prompt length including image rows
  int64_t prompt_tokens = 0;     // text tokens of the prompt
  StopReason stop_reason = StopReason::MaxNewTokens;
  double beam_score = 0;         // beam search: the answer's length-normalised log-probability
  uint64_t seed = 0;
  Timings timings;
};

// Called with each newly decoded piece of text; return false to stop generating.
using StreamCallback = std::function<bool(const std::string& piece)>;

struct LogitsResult {
  int64_t n_positions = 0;
  int64_t vocab_size = 0;
  std::vector<float> logits;     // [n_positions, vocab_size]
  std::vector<int32_t> tokens;   // per position the token id, or -1 where the row is an image embedding
};

// A named intermediate of the decoder forward: name ("input", per layer "attn_norm", "qkv", "q_rope", "attn_out",
// "attn_proj", "ffn_inp", "ffn_norm", "ffn_gate", "ffn_up", "ffn_act", "ffn_out", "layer_out"; then "final_norm",
// "logits"), layer (-1 outside the layers), and its values as f32 [rows, cols], row-major.
using TensorCallback = std::function<void(const std::string& name, int layer, int64_t rows, int64_t cols,
                                          const std::vector<float>& values)>;

struct ModelInfo {
  std::string model_dir;
  std::string variant;           // "XC2-VL-7B", "XC2-7B" or "custom (<img_size> px)"
  std::string format;            // "safetensors" or "pytorch"
  std::string dtype;             // storage dtype(s) of the weights, e.g. "BF16"
  int64_t n_tensors = 0;
  int64_t n_bytes = 0;
  int64_t n_files = 0;
  int hidden_size = 0, intermediate_size = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, vocab_size = 0;
  int max_length = 0, max_position_embeddings = 0;
  double rope_theta = 0;
  int img_size = 0, patch_size = 0, visual_tokens = 0;
  int vision_hidden = 0, vision_layers = 0, vision_heads = 0;
  int lora_rank = 0;
  double plora_scale = 1.0;
  std::string device;            // the backend, when loaded through an Engine
  // Quantized folders (GPTQ): bits (0 for a 16-bit folder), group size (-1: per channel), act-order, symmetry.
  int quant_bits = 0;
  int64_t quant_group_size = 0;
  bool quant_desc_act = false, quant_sym = false;
  int quant_head_bits = 0;  // the output head's bits when it is quantized too (lm_head), else 0
  // Weight bytes one decode step reads, as stored: decoder linears, norms, output head, one embedding row.
  int64_t decode_bytes = 0;
};

// Reads config.json and the checkpoint index of `model_dir` without building the model.
// check = true also verifies every expected tensor name and shape (strict, like Engine::load).
ModelInfo inspect_model(const std::string& model_dir, bool check);

class ChatSession;

class Engine {
 public:
  static std::unique_ptr<Engine> load(const EngineOptions& options);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const ModelInfo& info() const;

  // Decodes, preprocesses and encodes images (ViT + projector, several at once).
  ImageHandle encode_image(const std::string& path);
  std::vector<ImageHandle> encode_images(const std::vector<std::string>& paths);

  // The two halves of encode_images(), for pipelines: prepare_image() decodes and preprocesses one file
  // (no model work, safe to call from another thread while the engine computes; a bad file gives
  // `error` instead of throwing), encode_prepared() runs the ViT + projector on images prepared without
  // error (several at once).
  struct PreparedImage {
    std::string path;
    std::vector<float> pixels;  // [3, img_size, img_size], CLIP-normalised
    double load_ms = 0;
    std::string error;          // empty: ok
  };
  PreparedImage prepare_image(const std::string& path) const;
  // The same from the bytes of an image file in memory (any format xc2 reads); `name` names it in errors.
  PreparedImage prepare_image_bytes(const std::string& bytes, const std::string& name) const;
  std::vector<ImageHandle> encode_prepared(const std::vector<PreparedImage>& images);

  GenerationResult generate(const Request& request, const GenerationOptions& options,
                            const StreamCallback& on_text = {});
  // The logits of every prompt position. on_tensor (optional) receives every named intermediate of the decoder
  // forward as it is computed, for comparing any stage of any layer with the reference (`xc2 logits --dump`).
  LogitsResult logits(const Request& request, bool truncate_prompt = false, const TensorCallback& on_tensor = {});

  // Generates for several requests together: each prompt is prefilled on its own, then the sequences decode
  // in lockstep, one token each per step with the weights read once per step for the whole batch (finished
  // sequences leave the batch). Each result is what generate() gives for that request with these options
  // (the same seed gives the same tokens). A request that fails (prompt too long, marker mismatch, ...)
  // gets its message in `error` and the others go on; invalid options throw. No streaming.
  struct BatchResult {
    GenerationResult result;
    std::string error;  // empty: ok
  };
  std::vector<BatchResult> generate_batch(const std::vector<Request>& requests, const GenerationOptions& options);

  // Tokens of a request, as the model sees them (-1 for image rows).
  std::vector<int32_t> prompt_tokens(const Request& request);
  std::vector<int32_t> tokenize(const std::string& text, bool add_bos) const;
  std::string detokenize(const std::vector<int32_t>& ids) const;
  int32_t token_id(const std::string& piece) const;  // -1 if absent

  // A multi-turn conversation that keeps its KV cache between turns.
  std::unique_ptr<ChatSession> new_chat(std::optional<std::string> system = std::nullopt);

  // The device behind the engine (bandwidth, memory, bytes per decode step), for benchmarks (xc2/diagnostics.h).
  EngineDiagnostics diagnostics();

 private:
  struct Impl;
  friend struct EngineAccess;  // src/engine: reaches Impl
  Engine();
  std::unique_ptr<Impl> impl_;
  friend class ChatSession;
};

// Upstream chat() semantics turn by turn (model-spec §10-11), with the history kept in the KV cache
// instead of being re-encoded. Images: `<ImageHere>` markers in the query are filled in order;
// without markers, one marker per image goes at the start of the query. A turn that no longer fits max_length
// is an error, or with GenerationOptions::truncate_prompt drops the oldest turns (as few as make it fit; the
// kept turns are prefilled again, their images kept).
class ChatSession {
 public:
  ~ChatSession();
  GenerationResult ask(const std::string& query, const std::vector<std::string>& image_paths,
                       const GenerationOptions& options, const StreamCallback& on_text = {});
  void reset();                    // forget the history (keeps the system prompt)
  int64_t n_positions() const;     // positions in the KV cache
  int turns() const;
  // The sequence in the KV cache: a token id per position, -1 for image rows.
  const std::vector<int32_t>& tokens() const;

 private:
  struct State;
  friend class Engine;
  ChatSession(Engine& engine, std::string system);
  void drop_oldest_turns(size_t n);  // rebuilds the cache from the turns after the first n
  std::unique_ptr<State> state_;
};

// ---- prompt text helpers (model-spec §10) ----
// The default `meta_instruction` of upstream chat(), and the composition demo's text-only meta.
const std::string& default_system_prompt();
const std::string& compose_system_prompt();
// The chat template: optional system turn, history turns, then the open assistant turn.
std::string chat_prompt_text(const std::string& system,
                             const std::vector<std::pair<std::string, std::string>>& history,
                             const std::string& query);
// The same text with the ranges that came from the user (system, history, query), for Request::user_spans.
struct ChatPrompt {
  std::string text;
  std::vector<TextRange> user_spans;
};
ChatPrompt chat_prompt(const std::string& system, const std::vector<std::pair<std::string, std::string>>& history,
                       const std::string& query);
// Every occurrence of each non-empty user string in `text`, for prompts assembled by concatenation.
std::vector<TextRange> find_user_spans(const std::string& text, const std::vector<std::string>& user_texts);
// xc2's image placement rule: without markers, one "<ImageHere>" per image at the start of the query
// (joined by spaces); with markers, their number must equal n_images (Error{InvalidArgument}).
std::string place_image_markers(const std::string& query, int n_images);
int count_markers(const std::string& text, const std::string& marker);

// `xc2 convert`: rewrites a model folder (safetensors or PyTorch .bin) as sharded safetensors with the
// same tensor names, copying config and tokenizer files.
void convert_model(const std::string& model_dir, const std::string& out_dir, uint64_t max_shard_bytes);

// `xc2 quantize`: round-to-nearest GPTQ quantization (bits 4 or 8; group_size -1 = per channel) of the decoder
// linears into out_dir, in the layout AutoGPTQ writes; everything else is copied. head_bits 4 or 8 quantizes the
// output head too (quantization_config "lm_head"), 0 keeps it 16-bit. progress(done, total) per tensor.
void quantize_model(const std::string& model_dir, const std::string& out_dir, int bits, int64_t group_size, bool sym,
                    int head_bits, uint64_t max_shard_bytes,
                    const std::function<void(size_t, size_t)>& progress = nullptr);

// Messages on stderr: 0 errors only, 1 warnings (default), 2 info, 3 debug.
void set_verbosity(int level);

// Version and build description: "xc2 0.1.0 (abc1234), CUDA on (sm 90,80)".
std::string version_string();
bool built_with_cuda();

}  // namespace xc2
