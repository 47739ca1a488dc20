// Implements include/xc2/engine.h on top of the model (src/model), the tokenizer and prompt rules
// (src/text) and image preprocessing (src/vision).
//
// A request becomes a sequence of rows: token embeddings for text segments and projected image
// features for image segments (image rows form the Partial-LoRA spans). The sequence is prefilled,
// then tokens are generated one at a time with the KV cache.
#include "xc2/engine.h"

#include <algorithm>
#include <chrono>
#include <random>
#include <set>

#include "backends/backend.h"
#include "core/check.h"
#include "core/log.h"
#include "io/checkpoint.h"
#include "io/config.h"
#include "model/device_decoder.h"
#include "model/xcomposer2.h"
#include "text/prompt.h"
#include "text/sampler.h"
#include "text/tokenizer.h"
#include "vision/image.h"
#include "xc2/build_config.h"

namespace xc2 {

class EncodedImage {
 public:
  std::string path;
  Tensor rows;           // [visual_tokens, hidden] on the engine's device
  double load_ms = 0;    // decode + preprocess
  double vision_ms = 0;  // share of the ViT + projector batch
};

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

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
  if (const io::TensorView* a = ck.find("model.layers.0.attention.wqkv.Plora_A.weight"))
    if (!a->shape.empty()) m.lora_rank = static_cast<int>(a->shape[0]);
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
    return make_info(model_dir, model->config(), model->checkpoint());
  }
  const io::Checkpoint ck = io::Checkpoint::open_dir(model_dir);
  return make_info(model_dir, cfg, ck);
}

std::string version_string() {
  std::string s = std::string("xc2 ") + XC2_VERSION + " (" + XC2_GIT_SHA + "), CUDA ";
  if (XC2_WITH_CUDA) s += std::string("on (sm ") + XC2_CUDA_ARCHS + ")";
  else s += "off";
  return s;
}

bool built_with_cuda() { return XC2_WITH_CUDA != 0; }

const std::string& default_system_prompt() { return text::default_system_prompt(); }
const std::string& compose_system_prompt() { return text::compose_system_prompt(); }

std::string chat_prompt_text(const std::string& system, const std::vector<std::pair<std::string, std::string>>& history,
                             const std::string& query) {
  std::vector<text::ChatTurn> turns;
  for (const auto& [u, a] : history) turns.push_back({u, a});
  return text::render_chat(system, turns, query);
}

std::string place_image_markers(const std::string& query, int n_images) {
  return text::place_image_markers(query, n_images, text::kImageMarker);
}

int count_markers(const std::string& text, const std::string& marker) { return text::count_markers(text, marker); }

void convert_model(const std::string& model_dir, const std::string& out_dir, uint64_t max_shard_bytes) {
  check_model_dir(model_dir);
  io::convert_checkpoint(model_dir, out_dir, static_cast<size_t>(max_shard_bytes));
}

void set_verbosity(int level) {
  static const LogLevel levels[] = {LogLevel::Error, LogLevel::Warn, LogLevel::Info, LogLevel::Debug};
  set_log_level(levels[std::clamp(level, 0, 3)]);
}

// ---------------------------------------------------------------------------------------------
// Engine::Impl
// ---------------------------------------------------------------------------------------------

struct Engine::Impl {
  EngineOptions options;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<model::XComposer2> model;
  std::shared_ptr<text::Tokenizer> tok;
  ModelInfo info;
  std::set<int32_t> default_stops;

  // A request turned into rows.
  struct Assembled {
    Tensor rows;                          // [T, hidden]
    std::vector<model::RowSpan> spans;    // image rows
    std::vector<int32_t> tokens;          // per row: id or -1
    int64_t n_text_tokens = 0;
    double load_ms = 0, vision_ms = 0;
  };

  const io::ModelConfig& cfg() const { return model->config(); }

  text::Prompt tokenize_request(const Request& r) const {
    const int n = static_cast<int>(r.images.size());
    switch (r.style) {
      case PromptStyle::ChatImage: {
        const int markers = text::count_markers(r.text, text::kImageMarker);
        XC2_CHECK(markers == n, InvalidArgument, "the prompt has ", markers, " ", text::kImageMarker, " marker",
                  markers == 1 ? "" : "s", " but ", n, " image", n == 1 ? " was" : "s were", " given");
        return text::build_image_prompt(*tok, r.text, n, text::kImageMarker, true);
      }
      case PromptStyle::Interleave: {
        const int markers = text::count_markers(r.text, text::kComposeMarker);
        XC2_CHECK(markers == n, InvalidArgument, "the prompt has ", markers, " ", text::kComposeMarker, " marker",
                  markers == 1 ? "" : "s", " but ", n, " image", n == 1 ? " was" : "s were", " given");
        return text::build_image_prompt(*tok, r.text, n, text::kComposeMarker, false);
      }
      case PromptStyle::ChatText:
        XC2_CHECK(n == 0, InvalidArgument, "a text-only prompt cannot carry images");
        return text::build_text_prompt(*tok, r.text);
      case PromptStyle::Raw:
        XC2_CHECK(n == 0, InvalidArgument, "a raw prompt cannot carry images");
        return text::build_raw_prompt(*tok, r.text, true);
    }
    XC2_THROW(Internal, "unknown prompt style");
  }

  // Appends the rows of `prompt` to a new rows tensor. `images[k]` fills image segment k.
  Assembled assemble(const text::Prompt& prompt, const std::vector<ImageHandle>& images, bool truncate,
                     int64_t already_in_cache) {
    const io::ModelConfig& c = cfg();
    const int64_t vt = c.visual_tokens();
    Assembled out;
    int64_t T = prompt.n_positions(vt);
    const int64_t limit = c.max_length;
    if (already_in_cache + T > limit) {
      XC2_CHECK(truncate, InvalidArgument, "the prompt needs ", already_in_cache + T,
                " positions but the model's max_length is ", limit,
                " (shorten the prompt, use fewer images, or pass --truncate to cut it as upstream does)");
      XC2_LOG_WARN("prompt of " << already_in_cache + T << " positions truncated to max_length " << limit);
      T = std::max<int64_t>(0, limit - already_in_cache);
    }
    XC2_CHECK(T > 0, InvalidArgument, "the prompt is empty");
    out.rows = backend->empty({T, c.hidden_size});
    int64_t pos = 0;
    for (const text::PromptSegment& seg : prompt.segments) {
      if (pos >= T) break;
      if (seg.image >= 0) {
        XC2_ASSERT(static_cast<size_t>(seg.image) < images.size());
        const EncodedImage& img = *images[static_cast<size_t>(seg.image)];
        const int64_t n = std::min(vt, T - pos);
        Tensor dst = out.rows.rows(pos, n);
        backend->copy(img.rows.rows(0, n), dst);
        out.spans.push_back({pos, n});
        out.tokens.insert(out.tokens.end(), static_cast<size_t>(n), -1);
        out.load_ms += img.load_ms;
        out.vision_ms += img.vision_ms;
        pos += n;
      } else if (!seg.ids.empty()) {
        const int64_t n = std::min<int64_t>(static_cast<int64_t>(seg.ids.size()), T - pos);
        std::vector<int32_t> ids(seg.ids.begin(), seg.ids.begin() + n);
        Tensor emb = model->embed_tokens(ids);
        Tensor dst = out.rows.rows(pos, n);
        backend->copy(emb, dst);
        out.tokens.insert(out.tokens.end(), ids.begin(), ids.end());
        out.n_text_tokens += n;
        pos += n;
      }
    }
    XC2_ASSERT(pos == T);
    return out;
  }

  std::set<int32_t> stop_set(const GenerationOptions& o) const {
    std::set<int32_t> s(o.stop_ids.begin(), o.stop_ids.end());
    if (!o.ignore_eos) s.insert(default_stops.begin(), default_stops.end());
    return s;
  }

  static void check_options(const GenerationOptions& o) {
    XC2_CHECK(o.max_new_tokens >= 0, InvalidArgument, "max_new_tokens must be >= 0");
    XC2_CHECK(o.temperature > 0 || !o.do_sample, InvalidArgument, "temperature must be > 0");
    XC2_CHECK(o.top_p > 0 && o.top_p <= 1, InvalidArgument, "top_p must be in (0, 1]");
    XC2_CHECK(o.top_k >= 0, InvalidArgument, "top_k must be >= 0");
    XC2_CHECK(o.repetition_penalty > 0, InvalidArgument, "repetition_penalty must be > 0");
  }

  static text::SamplingParams sampling_params(const GenerationOptions& o) {
    text::SamplingParams sp;
    sp.do_sample = o.do_sample;
    sp.temperature = o.temperature;
    sp.top_k = o.top_k;
    sp.top_p = o.top_p;
    sp.repetition_penalty = o.repetition_penalty;
    return sp;
  }

  // Positions beyond which generation stops with "context_full".
  int64_t context_limit() const {
    return std::max<int64_t>(cfg().max_position_embeddings, cfg().max_length) * 4;
  }

  // A result with the prompt's sizes and timings filled in and its seed chosen.
  static GenerationResult start_result(const Assembled& a, const GenerationOptions& o) {
    GenerationResult r;
    r.prompt_positions = a.rows.rows();
    r.prompt_tokens = a.n_text_tokens;
    r.timings.load_ms = a.load_ms;
    r.timings.vision_ms = a.vision_ms;
    r.seed = o.seed ? *o.seed : std::random_device{}();
    return r;
  }

  // The stop reason for a stop token.
  std::string stop_reason(int32_t id) const {
    return id == tok->eos_id() ? "eos" : id == tok->im_end_id() ? "im_end" : "stop_id";
  }

  // Drops the stop token (kept in r.tokens until now) and decodes the text.
  void finish_result(GenerationResult& r) const {
    if (r.stop_reason == "eos" || r.stop_reason == "im_end" || r.stop_reason == "stop_id") r.tokens.pop_back();
    r.text = tok->decode(r.tokens, true);
    const size_t cut = r.text.find("[UNUSED_TOKEN_145]");
    if (cut != std::string::npos) r.text.resize(cut);
  }

  // Prefills `a` on top of `cache`, then generates. `penalty_history` holds the ids the repetition
  // penalty covers before the first generated token.
  GenerationResult run(Assembled& a, model::KvCache& cache, std::vector<int32_t> penalty_history,
                       const GenerationOptions& o, const StreamCallback& on_text, Clock::time_point t_start) {
    check_options(o);
    GenerationResult r = start_result(a, o);
    text::Sampler sampler(r.seed);
    const text::SamplingParams sp = sampling_params(o);
    const std::set<int32_t> stops = stop_set(o);
    const int64_t ctx_limit = context_limit();

    auto t0 = Clock::now();
    // On a GPU the logits, the token choice and the decode steps stay on the device (model/device_decoder.h);
    // elsewhere (and with XC2_DEVICE_DECODE=0) the logits come to the host for the Sampler.
    std::unique_ptr<model::DeviceDecoder> dev = model::DeviceDecoder::create(
        *model, cache, sp, penalty_history, cache.length() + a.rows.rows(),
        std::min<int64_t>(o.max_new_tokens, ctx_limit + 1 - cache.length() - a.rows.rows()));
    std::vector<float> logits;
    if (dev) dev->prefill(a.rows, a.spans);
    else logits = model->forward(a.rows, a.spans, cache, 1);
    r.timings.prefill_ms = ms_since(t0);
    a.rows = Tensor();

    text::StreamDecoder stream(*tok);
    auto t_dec = Clock::now();
    r.stop_reason = "max_new_tokens";
    for (int step = 0; step < o.max_new_tokens; ++step) {
      const int32_t id = dev ? dev->select(sampler) : sampler.next(logits, penalty_history, sp);
      if (step == 0) r.timings.first_token_ms = ms_since(t_start);
      if (stops.count(id)) {
        r.stop_reason = stop_reason(id);
        r.tokens.push_back(id);  // popped below; kept here so the session can feed it next turn
        break;
      }
      r.tokens.push_back(id);
      penalty_history.push_back(id);
      const std::string piece = stream.push(id);
      if (!piece.empty() && on_text && !on_text(piece)) {
        r.stop_reason = "cancelled";
        break;
      }
      if (step + 1 == o.max_new_tokens) break;
      if (cache.length() + 1 > ctx_limit) {
        r.stop_reason = "context_full";
        break;
      }
      if (dev) {
        dev->feed(id);
      } else {
        Tensor row = model->embed_tokens({id});
        logits = model->forward(row, {}, cache, 1);
      }
    }
    const std::string rest = stream.finish();
    if (!rest.empty() && on_text && r.stop_reason != "cancelled") on_text(rest);
    r.timings.decode_ms = ms_since(t_dec);
    finish_result(r);
    return r;
  }

  // The request's prompt rows and the ids its repetition penalty starts with.
  Assembled assemble_request(const Request& request, bool truncate, std::vector<int32_t>* history) {
    text::Prompt prompt = tokenize_request(request);
    Assembled a = assemble(prompt, request.images, truncate, 0);
    history->clear();
    if (request.penalize_prompt)
      for (int32_t id : a.tokens)
        if (id >= 0) history->push_back(id);
    return a;
  }
};

Engine::Engine() : impl_(std::make_unique<Impl>()) {}
Engine::~Engine() = default;

std::unique_ptr<Engine> Engine::load(const EngineOptions& options) {
  check_model_dir(options.model_dir);
  std::unique_ptr<Engine> e(new Engine());
  Impl& m = *e->impl_;
  m.options = options;
  XC2_CHECK(options.threads >= 0, InvalidArgument, "--threads must be >= 0");
  const std::string& dev = options.device;
  const std::string& dt = options.dtype;
  XC2_CHECK(dt == "auto" || dt == "f32" || dt == "bf16" || dt == "f16", InvalidArgument, "unknown dtype '", dt,
            "' (expected auto, f32, bf16 or f16)");
  const DType cuda_dtype = dt == "f32" ? DType::F32 : dt == "f16" ? DType::F16 : DType::BF16;
  auto cpu = [&]() {
    XC2_CHECK(dt == "auto" || dt == "f32", InvalidArgument, "the CPU backend computes in f32 (--dtype ", dt,
              " needs --device cuda)");
    return make_cpu_backend(options.threads);
  };
  if (dev == "cuda") {
    m.backend = make_cuda_backend(0, cuda_dtype);
  } else if (dev == "auto") {
    if (built_with_cuda() && cuda_device_available()) m.backend = make_cuda_backend(0, cuda_dtype);
    else m.backend = cpu();
  } else if (dev == "cpu") {
    m.backend = cpu();
  } else {
    XC2_THROW(InvalidArgument, "unknown device '", dev, "' (expected auto, cpu or cuda)");
  }
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
  std::vector<int32_t> history;
  Impl::Assembled a = m.assemble_request(request, options.truncate_prompt, &history);
  auto cache = m.model->new_cache();
  return m.run(a, *cache, std::move(history), options, on_text, t_start);
}

std::vector<Engine::BatchResult> Engine::generate_batch(const std::vector<Request>& requests,
                                                        const GenerationOptions& options) {
  Impl& m = *impl_;
  Impl::check_options(options);
  const text::SamplingParams sp = Impl::sampling_params(options);
  const std::set<int32_t> stops = m.stop_set(options);
  const int64_t ctx_limit = m.context_limit();
  const auto t_start = Clock::now();

  struct Seq {
    size_t index = 0;
    std::unique_ptr<model::KvCache> cache;
    std::vector<int32_t> history;
    std::unique_ptr<text::Sampler> sampler;
    std::vector<float> logits;  // [vocab] for the next choice
  };
  std::vector<BatchResult> out(requests.size());
  std::vector<Seq> live;
  // Prefill, one request at a time (image prompts are long: each prefill is a full GEMM already).
  for (size_t i = 0; i < requests.size(); ++i) {
    try {
      Seq s;
      s.index = i;
      Impl::Assembled a = m.assemble_request(requests[i], options.truncate_prompt, &s.history);
      GenerationResult& r = out[i].result;
      r = Impl::start_result(a, options);
      s.sampler = std::make_unique<text::Sampler>(r.seed);
      s.cache = m.model->new_cache();
      auto t1 = Clock::now();
      s.logits = m.model->forward(a.rows, a.spans, *s.cache, 1);
      r.timings.prefill_ms = ms_since(t1);
      r.stop_reason = "max_new_tokens";
      live.push_back(std::move(s));
    } catch (const Error& e) {
      out[i] = BatchResult{};
      out[i].error = e.what();
    }
  }

  // Decode in lockstep; a sequence leaves the batch when it stops.
  const auto t_dec = Clock::now();
  const double first_token_ms = ms_since(t_start);  // every first token is chosen once all prompts are in
  for (Seq& s : live) out[s.index].result.timings.first_token_ms = first_token_ms;
  const int vocab = m.cfg().vocab_size;
  for (int step = 0; step < options.max_new_tokens && !live.empty(); ++step) {
    std::vector<int32_t> feed;
    std::vector<model::KvCache*> caches;
    std::vector<Seq> next;
    for (Seq& s : live) {
      GenerationResult& r = out[s.index].result;
      const int32_t id = s.sampler->next(s.logits, s.history, sp);
      bool done = false;
      if (stops.count(id)) {
        r.stop_reason = m.stop_reason(id);
        r.tokens.push_back(id);  // dropped by finish_result
        done = true;
      } else {
        r.tokens.push_back(id);
        s.history.push_back(id);
        if (step + 1 == options.max_new_tokens) {
          done = true;
        } else if (s.cache->length() + 1 > ctx_limit) {
          r.stop_reason = "context_full";
          done = true;
        }
      }
      if (done) {
        r.timings.decode_ms = ms_since(t_dec);
        continue;
      }
      feed.push_back(id);
      caches.push_back(s.cache.get());
      next.push_back(std::move(s));
    }
    live = std::move(next);
    if (live.empty()) break;
    const std::vector<float> logits = m.model->decode_batch(feed, caches);
    for (size_t b = 0; b < live.size(); ++b)
      live[b].logits.assign(logits.begin() + static_cast<std::ptrdiff_t>(b) * vocab,
                            logits.begin() + static_cast<std::ptrdiff_t>(b + 1) * vocab);
  }
  for (Seq& s : live) out[s.index].result.timings.decode_ms = ms_since(t_dec);  // max_new_tokens == 0
  for (BatchResult& b : out)
    if (b.error.empty()) m.finish_result(b.result);
  return out;
}

LogitsResult Engine::logits(const Request& request, bool truncate_prompt) {
  Impl& m = *impl_;
  text::Prompt prompt = m.tokenize_request(request);
  Impl::Assembled a = m.assemble(prompt, request.images, truncate_prompt, 0);
  auto cache = m.model->new_cache();
  LogitsResult r;
  r.n_positions = a.rows.rows();
  r.vocab_size = m.cfg().vocab_size;
  r.tokens = a.tokens;
  r.logits = m.model->forward(a.rows, a.spans, *cache, r.n_positions);
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
// ChatSession
// ---------------------------------------------------------------------------------------------

struct ChatSession::State {
  Engine* engine = nullptr;
  std::string system;
  std::unique_ptr<model::KvCache> cache;
  std::vector<int32_t> text_ids;  // every text id in the cache (the text path's penalty history)
  std::vector<int32_t> sequence;  // every position in the cache: id, or -1 for image rows
  bool any_image = false;
  int turns = 0;
};

ChatSession::ChatSession(Engine& engine, std::string system) : state_(std::make_unique<State>()) {
  state_->engine = &engine;
  state_->system = std::move(system);
  state_->cache = engine.impl_->model->new_cache();
}

ChatSession::~ChatSession() = default;

std::unique_ptr<ChatSession> Engine::new_chat(std::optional<std::string> system) {
  return std::unique_ptr<ChatSession>(new ChatSession(*this, system ? *system : text::default_system_prompt()));
}

void ChatSession::reset() {
  state_->cache->clear();
  state_->text_ids.clear();
  state_->sequence.clear();
  state_->any_image = false;
  state_->turns = 0;
}

int64_t ChatSession::n_positions() const { return state_->cache->length(); }
int ChatSession::turns() const { return state_->turns; }
const std::vector<int32_t>& ChatSession::tokens() const { return state_->sequence; }

GenerationResult ChatSession::ask(const std::string& query, const std::vector<std::string>& image_paths,
                                  const GenerationOptions& options, const StreamCallback& on_text) {
  State& s = *state_;
  Engine::Impl& m = *s.engine->impl_;
  const auto t_start = Clock::now();
  const int n_img = static_cast<int>(image_paths.size());
  const std::string q = n_img > 0 ? text::place_image_markers(query, n_img) : query;
  XC2_CHECK(n_img > 0 || text::count_markers(q, text::kImageMarker) == 0, InvalidArgument, "the prompt has ",
            text::count_markers(q, text::kImageMarker), " ", text::kImageMarker, " markers but no image was given");
  std::vector<ImageHandle> images = s.engine->encode_images(image_paths);

  text::Prompt prompt;
  if (s.turns == 0) {
    const std::string full = text::render_chat(s.system, {}, q);
    prompt = n_img > 0 ? text::build_image_prompt(*m.tok, full, n_img, text::kImageMarker, true)
                       : text::build_text_prompt(*m.tok, full);
  } else {
    // The turn continues the cached sequence: close the last answer, then the new user turn. As in
    // upstream's image path, every text part after an image starts with a BOS; the first part
    // continues the cached text and gets none.
    const std::string full = "[UNUSED_TOKEN_145]\n" + text::render_chat("", {}, q);
    text::Prompt parts = text::build_image_prompt(*m.tok, full, n_img, text::kImageMarker, true);
    XC2_ASSERT(!parts.segments.empty() && parts.segments[0].image < 0);
    std::vector<int32_t>& first = parts.segments[0].ids;
    if (!first.empty() && first[0] == m.tok->bos_id()) first.erase(first.begin());
    // With add_dummy_prefix the chunk starts with a lone "▁" that upstream (which tokenizes the
    // history as one string) does not have.
    if (!first.empty() && m.tok->adds_dummy_prefix() && m.tok->id_to_piece(first[0]) == "\xe2\x96\x81")
      first.erase(first.begin());
    prompt = std::move(parts);
  }
  s.any_image = s.any_image || n_img > 0;
  Engine::Impl::Assembled a = m.assemble(prompt, images, options.truncate_prompt, s.cache->length());
  for (int32_t id : a.tokens)
    if (id >= 0) s.text_ids.push_back(id);
  s.sequence.insert(s.sequence.end(), a.tokens.begin(), a.tokens.end());
  std::vector<int32_t> history = s.any_image ? std::vector<int32_t>{} : s.text_ids;
  GenerationResult r = m.run(a, *s.cache, std::move(history), options, on_text, t_start);
  // The answer's tokens are in the cache except the last sampled one (never fed back); feed it now
  // unless it was a stop token: the next turn starts with "[UNUSED_TOKEN_145]\n", which closes the
  // answer as upstream's re-rendered history does.
  s.text_ids.insert(s.text_ids.end(), r.tokens.begin(), r.tokens.end());
  s.sequence.insert(s.sequence.end(), r.tokens.begin(), r.tokens.end());
  if (!r.tokens.empty() && (r.stop_reason == "max_new_tokens" || r.stop_reason == "cancelled" ||
                            r.stop_reason == "context_full")) {
    Tensor row = m.model->embed_tokens({r.tokens.back()});
    m.model->forward(row, {}, *s.cache, 0);
  }
  XC2_ASSERT(static_cast<int64_t>(s.sequence.size()) == s.cache->length());
  ++s.turns;
  return r;
}

// ---------------------------------------------------------------------------------------------
// Diagnostics (include/xc2/diagnostics.h, src/engine/diagnostics.cpp)
// ---------------------------------------------------------------------------------------------

EngineDiagnostics Engine::diagnostics() { return EngineDiagnostics(*impl_->backend, *impl_->model); }

}  // namespace xc2
