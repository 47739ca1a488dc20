// Implements include/xc2/engine.h on top of the model (src/model), the tokenizer and prompt rules
// (src/text) and image preprocessing (src/vision).
//
// A request becomes a sequence of rows: token embeddings for text segments and projected image
// features for image segments (image rows form the Partial-LoRA spans; engine/engine_impl.cpp). The
// generation loop (engine/generate.cpp) prefills it and generates with the KV cache.
#include "xc2/engine.h"

#include <algorithm>
#include <set>

#include "backends/backend.h"
#include "core/check.h"
#include "core/log.h"
#include "engine/engine_impl.h"
#include "engine/generate.h"
#include "io/checkpoint.h"
#include "io/config.h"
#include "io/gptq.h"
#include "model/quantize.h"
#include "model/weight_names.h"
#include "vision/image.h"
#include "xc2/build_config.h"

namespace xc2 {

namespace {

std::string dtype_list(const io::Checkpoint& ck) {
  std::set<std::string> names;
  for (const auto& t : ck.tensors()) names.insert(dtype_name(t.dtype));
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : "+") + n;
  return out;
}

ModelInfo make_info(const std::string& dir, const io::ModelConfig& c, const io::Checkpoint& ck) {
  ModelInfo m;
  m.model_dir = dir;
  m.variant = c.variant();
  m.format = ck.format() == io::CheckpointFormat::Safetensors ? "safetensors" : "pytorch";
  m.dtype = dtype_list(ck);
  m.n_tensors = static_cast<int64_t>(ck.tensors().size());
  m.n_bytes = static_cast<int64_t>(ck.total_bytes());
  m.n_files = static_cast<int64_t>(ck.files().size());
  m.hidden_size = c.hidden_size;
  m.intermediate_size = c.intermediate_size;
  m.n_layers = c.num_hidden_layers;
  m.n_heads = c.num_attention_heads;
  m.n_kv_heads = c.num_key_value_heads;
  m.vocab_size = c.vocab_size;
  m.max_length = c.max_length;
  m.max_position_embeddings = c.max_position_embeddings;
  m.rope_theta = c.rope_theta;
  m.img_size = c.img_size;
  m.patch_size = c.vision.patch_size;
  m.visual_tokens = c.visual_tokens();
  m.vision_hidden = c.vision.hidden_size;
  m.vision_layers = c.vision.num_hidden_layers;
  m.vision_heads = c.vision.num_attention_heads;
  m.plora_scale = c.plora_scale;
  if (const io::TensorView* a = ck.find(model::names::plora_a(0, "attention.wqkv")))
    if (!a->shape.empty()) m.lora_rank = static_cast<int>(a->shape[0]);
  if (const auto q = io::read_gptq_config(dir)) {
    m.quant_bits = q->bits;
    m.quant_group_size = q->group_size;
    m.quant_desc_act = q->desc_act;
    m.quant_sym = q->sym;
    m.quant_head_bits = q->lm_head ? q->head_bits : 0;
  }
  for (const io::TensorView& t : ck.tensors()) {
    const std::string& n = t.name;
    if (model::names::in_decoder_layer(n) ? !model::names::is_plora_adapter(n)
                                         : (n == model::names::final_norm() || n == model::names::output() ||
                                            (m.quant_head_bits && n.rfind("output.", 0) == 0)))
      m.decode_bytes += static_cast<int64_t>(t.nbytes);
    else if (n == model::names::tok_embeddings() && c.vocab_size > 0)
      m.decode_bytes += static_cast<int64_t>(t.nbytes) / c.vocab_size;
  }
  return m;
}

void check_model_dir(const std::string& dir) {
  XC2_CHECK(!dir.empty(), InvalidArgument, "no model folder given (use --model DIR or set XC2_MODEL)");
  XC2_CHECK(is_directory(dir), NotFound, "model folder '", dir, "' does not exist or is not a folder");
}

}  // namespace

ModelInfo inspect_model(const std::string& model_dir, bool check) {
  check_model_dir(model_dir);
  const io::ModelConfig cfg = io::ModelConfig::load(path_join(model_dir, "config.json"));
  if (check) {
    auto be = make_cpu_backend(1, CpuWeights::Mapped);  // checks names and shapes only: no weight copies
    auto model = model::XComposer2::load(model_dir, *be);
    text::Tokenizer::load(path_join(model_dir, "tokenizer.model"));  // missing, empty or not SentencePiece: an error
    return make_info(model_dir, model->config(), model->checkpoint());
  }
  const io::Checkpoint ck = io::Checkpoint::open_dir(model_dir);
  return make_info(model_dir, cfg, ck);
}

std::string version_string() {
  std::string s = std::string("xc2 ") + XC2_VERSION + " (" + XC2_GIT_SHA + "), CUDA ";
  if (XC2_CUDA_EMULATOR) s += "emulated on the CPU (a test build: tests/cuda_emu)";
  else if (XC2_WITH_CUDA) s += std::string("on (sm ") + XC2_CUDA_ARCHS + ")";
  else s += "off";
  return s;
}

bool built_with_cuda() { return XC2_WITH_CUDA != 0; }

const std::string& default_system_prompt() { return text::default_system_prompt(); }
const std::string& compose_system_prompt() { return text::compose_system_prompt(); }

std::string chat_prompt_text(const std::string& system, const std::vector<std::pair<std::string, std::string>>& history,
                             const std::string& query) {
  return chat_prompt(system, history, query).text;
}

ChatPrompt chat_prompt(const std::string& system, const std::vector<std::pair<std::string, std::string>>& history,
                       const std::string& query) {
  std::vector<text::ChatTurn> turns;
  for (const auto& [u, a] : history) turns.push_back({u, a});
  text::TemplateText t = text::render_chat_spans(system, turns, query);
  ChatPrompt p;
  p.text = std::move(t.text);
  for (const text::TextSpan& s : t.user) p.user_spans.emplace_back(s.begin, s.end);
  return p;
}

std::vector<TextRange> find_user_spans(const std::string& text, const std::vector<std::string>& user_texts) {
  std::vector<TextRange> out;
  for (const text::TextSpan& s : text::find_user_spans(text, user_texts)) out.emplace_back(s.begin, s.end);
  return out;
}

std::string place_image_markers(const std::string& query, int n_images) {
  return text::place_image_markers(query, n_images, text::kImageMarker);
}

int count_markers(const std::string& text, const std::string& marker) { return text::count_markers(text, marker); }

void convert_model(const std::string& model_dir, const std::string& out_dir, uint64_t max_shard_bytes) {
  check_model_dir(model_dir);
  io::convert_checkpoint(model_dir, out_dir, static_cast<size_t>(max_shard_bytes));
}

void quantize_model(const std::string& model_dir, const std::string& out_dir, int bits, int64_t group_size, bool sym,
                    int head_bits, uint64_t max_shard_bytes, const std::function<void(size_t, size_t)>& progress) {
  check_model_dir(model_dir);
  model::QuantizeOptions o;
  o.bits = bits;
  o.group_size = group_size;
  o.sym = sym;
  o.head_bits = head_bits;
  o.max_shard_bytes = max_shard_bytes;
  model::quantize_checkpoint(model_dir, out_dir, o, [&](size_t done, size_t total, const std::string&) {
    if (progress) progress(done, total);
  });
}

void set_verbosity(int level) {
  static const LogLevel levels[] = {LogLevel::Error, LogLevel::Warn, LogLevel::Info, LogLevel::Debug};
  set_log_level(levels[std::clamp(level, 0, 3)]);
}


DeviceChoice parse_device(const std::string& name) {
  if (name == "auto") return DeviceChoice::Auto;
  if (name == "cpu") return DeviceChoice::Cpu;
  if (name == "cuda") return DeviceChoice::Cuda;
  XC2_THROW(InvalidArgument, "unknown device '", name, "' (expected auto, cpu or cuda)");
}

std::optional<DType> parse_dtype(const std::string& name) {
  if (name == "auto") return std::nullopt;
  if (name == "f32") return DType::F32;
  if (name == "bf16") return DType::BF16;
  if (name == "f16") return DType::F16;
  XC2_THROW(InvalidArgument, "unknown dtype '", name, "' (expected auto, f32, bf16 or f16)");
}

const char* stop_reason_name(StopReason reason) {
  switch (reason) {
    case StopReason::Eos: return "eos";
    case StopReason::ImEnd: return "im_end";
    case StopReason::StopId: return "stop_id";
    case StopReason::MaxNewTokens: return "max_new_tokens";
    case StopReason::Cancelled: return "cancelled";
    case StopReason::ContextFull: return "context_full";
    case StopReason::StopString: return "stop_string";
  }
  return "unknown";
}

Engine::Engine() : impl_(std::make_unique<Impl>()) {}
Engine::~Engine() = default;

std::unique_ptr<Engine> Engine::load(const EngineOptions& options) {
  check_model_dir(options.model_dir);
  std::unique_ptr<Engine> e(new Engine());
  Impl& m = *e->impl_;
  m.options = options;
  XC2_CHECK(options.threads >= 0, InvalidArgument, "--threads must be >= 0");
  const DType cuda_dtype = options.dtype.value_or(DType::BF16);
  bool cuda = options.device == DeviceChoice::Cuda;
  if (options.device == DeviceChoice::Auto) cuda = built_with_cuda() && cuda_device_available();
  if (cuda) {
    m.backend = make_cuda_backend(0, cuda_dtype);
  } else {
    XC2_CHECK(!options.dtype || *options.dtype == DType::F32, InvalidArgument, "the CPU backend computes in f32 (--dtype ",
              dtype_name(*options.dtype), " needs --device cuda)");
    m.backend = make_cpu_backend(options.threads);
  }
  m.backend->set_exact_quant(options.exact_quant);
  m.model = model::XComposer2::load(options.model_dir, *m.backend);
  const std::string tok_path = path_join(options.model_dir, "tokenizer.model");
  m.tok = text::Tokenizer::load(tok_path);
  XC2_CHECK(m.tok->vocab_size() <= m.cfg().vocab_size, ShapeMismatch, "'", tok_path, "' has ", m.tok->vocab_size(),
            " pieces but config.json vocab_size is ", m.cfg().vocab_size);
  m.default_stops = {m.tok->eos_id(), m.tok->im_end_id()};
  m.info = make_info(options.model_dir, m.cfg(), m.model->checkpoint());
  m.info.device = m.backend->name();
  return e;
}

const ModelInfo& Engine::info() const { return impl_->info; }

ImageHandle Engine::encode_image(const std::string& path) { return encode_images({path}).at(0); }

std::vector<ImageHandle> Engine::encode_images(const std::vector<std::string>& paths) {
  std::vector<PreparedImage> prepared;
  for (const std::string& p : paths) {
    auto t0 = Clock::now();
    PreparedImage img;
    img.path = p;
    img.pixels = vision::preprocess_clip(vision::load_image(p), impl_->cfg().img_size);  // throws on a bad file
    img.load_ms = ms_since(t0);
    prepared.push_back(std::move(img));
  }
  return encode_prepared(prepared);
}

Engine::PreparedImage Engine::prepare_image(const std::string& path) const {
  PreparedImage img;
  img.path = path;
  auto t0 = Clock::now();
  try {
    img.pixels = vision::preprocess_clip(vision::load_image(path), impl_->cfg().img_size);
  } catch (const Error& e) {
    img.error = e.what();
  }
  img.load_ms = ms_since(t0);
  return img;
}

Engine::PreparedImage Engine::prepare_image_bytes(const std::string& bytes, const std::string& name) const {
  PreparedImage img;
  img.path = name;
  auto t0 = Clock::now();
  try {
    img.pixels = vision::preprocess_clip(
        vision::decode_image(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), name), impl_->cfg().img_size);
  } catch (const Error& e) {
    img.error = e.what();
  }
  img.load_ms = ms_since(t0);
  return img;
}

std::vector<ImageHandle> Engine::encode_prepared(const std::vector<PreparedImage>& images) {
  Impl& m = *impl_;
  std::vector<ImageHandle> out;
  if (images.empty()) return out;
  std::vector<std::vector<float>> pixels;
  for (const PreparedImage& img : images) {
    XC2_CHECK(img.error.empty(), InvalidArgument, img.error);
    pixels.push_back(img.pixels);
  }
  auto t0 = Clock::now();
  Tensor rows = m.model->encode_images(pixels);
  const double vision_ms = ms_since(t0);
  const int64_t vt = m.cfg().visual_tokens();
  for (size_t i = 0; i < images.size(); ++i) {
    auto e = std::make_shared<EncodedImage>();
    e->path = images[i].path;
    e->rows = rows.rows(static_cast<int64_t>(i) * vt, vt);
    e->load_ms = images[i].load_ms;
    e->vision_ms = vision_ms / static_cast<double>(images.size());
    out.push_back(e);
  }
  return out;
}

GenerationResult Engine::generate(const Request& request, const GenerationOptions& options,
                                  const StreamCallback& on_text) {
  Impl& m = *impl_;
  const auto t_start = Clock::now();
  engine::check_options(options);
  auto cache = m.model->new_cache();
  std::vector<engine::GenSequence> seq(1);
  seq[0].cache = cache.get();
  seq[0].prompt = m.assemble_request(request, options.truncate_prompt, &seq[0].penalty_history);
  GenerationResult r = start_result(seq[0].prompt, options);
  seq[0].result = &r;
  seq[0].on_text = on_text;
  engine::generate(m, seq, options, t_start);
  return r;
}

std::vector<Engine::BatchResult> Engine::generate_batch(const std::vector<Request>& requests,
                                                        const GenerationOptions& options) {
  Impl& m = *impl_;
  engine::check_options(options);
  const auto t_start = Clock::now();
  std::vector<BatchResult> out(requests.size());
  std::vector<std::unique_ptr<model::KvCache>> caches;
  std::vector<engine::GenSequence> seqs;
  for (size_t i = 0; i < requests.size(); ++i) {
    try {
      engine::GenSequence s;
      s.prompt = m.assemble_request(requests[i], options.truncate_prompt, &s.penalty_history);
      out[i].result = start_result(s.prompt, options);
      s.result = &out[i].result;
      s.error = &out[i].error;
      caches.push_back(m.model->new_cache());
      s.cache = caches.back().get();
      seqs.push_back(std::move(s));
    } catch (const Error& e) {
      out[i] = BatchResult{};
      out[i].error = e.what();
    }
  }
  engine::generate(m, seqs, options, t_start);
  return out;
}

LogitsResult Engine::logits(const Request& request, bool truncate_prompt, const TensorCallback& on_tensor) {
  Impl& m = *impl_;
  Impl::Assembled a = m.assemble(m.tokenize_request(request), request.images, truncate_prompt, 0);
  auto cache = m.model->new_cache();
  LogitsResult r;
  r.n_positions = a.rows.rows();
  r.vocab_size = m.cfg().vocab_size;
  r.tokens = a.tokens;
  model::ForwardTrace trace;
  if (on_tensor)
    trace.on_tensor = [&](const char* name, int64_t layer, const Tensor& t) {
      std::vector<float> values(static_cast<size_t>(t.numel()));
      m.backend->to_host_f32(t, values.data());
      on_tensor(name, static_cast<int>(layer), t.rows(), t.row_numel(), values);
    };
  r.logits = m.model->forward(a.rows, a.spans, *cache, r.n_positions, on_tensor ? &trace : nullptr);
  return r;
}

std::vector<int32_t> Engine::prompt_tokens(const Request& request) {
  Impl& m = *impl_;
  text::Prompt prompt = m.tokenize_request(request);
  std::vector<int32_t> out;
  for (const auto& seg : prompt.segments) {
    if (seg.image >= 0) out.insert(out.end(), static_cast<size_t>(m.cfg().visual_tokens()), -1);
    else out.insert(out.end(), seg.ids.begin(), seg.ids.end());
  }
  return out;
}

std::vector<int32_t> Engine::tokenize(const std::string& text, bool add_bos) const {
  return impl_->tok->encode(text, add_bos);
}

std::string Engine::detokenize(const std::vector<int32_t>& ids) const { return impl_->tok->decode(ids, true); }

int32_t Engine::token_id(const std::string& piece) const { return impl_->tok->piece_to_id(piece); }

// ---------------------------------------------------------------------------------------------
// Diagnostics (include/xc2/diagnostics.h, src/engine/diagnostics.cpp)
// ---------------------------------------------------------------------------------------------

EngineDiagnostics Engine::diagnostics() { return EngineDiagnostics(*this); }

}  // namespace xc2
