// xc2 bench (include/xc2/bench.h): a synthetic real-dimension checkpoint, the model's three phases
// timed on the CPU backend, and the machine's limits measured with the same thread count; with
// --device cuda the same phases (plus captioning) on GPU 0 against the measured device copy bandwidth.
#include "xc2/bench.h"

#include <sys/resource.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>

#include "backends/backend.h"
#include "core/check.h"
#include "core/half.h"
#include "core/mmap_file.h"
#include "core/thread_pool.h"
#include "cpu/gemm.h"
#include "cpu/microbench.h"
#include "engine/device_decoder.h"
#include "model/xcomposer2.h"
#include "text/sampler.h"
#include "xc2/build_config.h"

namespace xc2 {
namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) {
      const size_t c = line.find(':');
      return c == std::string::npos ? line : line.substr(c + 2);
    }
  return "unknown CPU";
}

double peak_rss_gib() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / (1024.0 * 1024.0);  // ru_maxrss is in KiB
}

// ---- synthetic checkpoint -------------------------------------------------------------------------

struct SynthTensor {
  std::string name;
  std::vector<int64_t> shape;
  float fill = 0;  // != 0: constant (norm weights); 0: random in [-scale, scale]
  float scale = 0.02f;
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

std::vector<SynthTensor> synthetic_tensors(int n_layers, int n_vit_layers, int img_size) {
  const int64_t D = 4096, I = 14336, V = 92544, H = 32, Hk = 8, d = 128, r = 256;
  const int64_t Dv = 1024, Iv = 4096, p = 14, g = img_size / p;
  std::vector<SynthTensor> t;
  t.push_back({"model.tok_embeddings.weight", {V, D}});
  for (int i = 0; i < n_layers; ++i) {
    const std::string L = "model.layers." + std::to_string(i) + ".";
    t.push_back({L + "attention_norm.weight", {D}, 1.0f});
    t.push_back({L + "ffn_norm.weight", {D}, 1.0f});
    auto plora = [&](const std::string& name, int64_t out, int64_t in) {
      t.push_back({L + name + ".weight", {out, in}});
      t.push_back({L + name + ".Plora_A.weight", {r, in}});
      t.push_back({L + name + ".Plora_B.weight", {out, r}});
    };
    plora("attention.wqkv", (H + 2 * Hk) * d, D);
    plora("attention.wo", D, D);
    plora("feed_forward.w1", I, D);
    plora("feed_forward.w3", I, D);
    plora("feed_forward.w2", D, I);
  }
  t.push_back({"model.norm.weight", {D}, 1.0f});
  t.push_back({"output.weight", {V, D}});
  const std::string vp = "vit.vision_tower.vision_model.";
  t.push_back({vp + "embeddings.class_embedding", {Dv}});
  t.push_back({vp + "embeddings.patch_embedding.weight", {Dv, 3, p, p}});
  t.push_back({vp + "embeddings.position_embedding.weight", {g * g + 1, Dv}});
  t.push_back({vp + "pre_layrnorm.weight", {Dv}, 1.0f});
  t.push_back({vp + "pre_layrnorm.bias", {Dv}});
  for (int l = 0; l < n_vit_layers; ++l) {
    const std::string L = vp + "encoder.layers." + std::to_string(l) + ".";
    for (const char* ln : {"layer_norm1", "layer_norm2"}) {
      t.push_back({L + ln + ".weight", {Dv}, 1.0f});
      t.push_back({L + ln + ".bias", {Dv}});
    }
    for (const char* pr : {"q_proj", "k_proj", "v_proj", "out_proj"}) {
      t.push_back({L + "self_attn." + pr + ".weight", {Dv, Dv}});
      t.push_back({L + "self_attn." + pr + ".bias", {Dv}});
    }
    t.push_back({L + "mlp.fc1.weight", {Iv, Dv}});
    t.push_back({L + "mlp.fc1.bias", {Iv}});
    t.push_back({L + "mlp.fc2.weight", {Dv, Iv}});
    t.push_back({L + "mlp.fc2.bias", {Dv}});
  }
  t.push_back({vp + "post_layernorm.weight", {Dv}, 1.0f});
  t.push_back({vp + "post_layernorm.bias", {Dv}});
  t.push_back({"vision_proj.0.weight", {D, Dv}});
  t.push_back({"vision_proj.0.bias", {D}});
  t.push_back({"vision_proj.2.weight", {D, D}});
  t.push_back({"vision_proj.2.bias", {D}});
  return t;
}

// Streams a bf16 safetensors file tensor by tensor (the data never sits in memory all at once).
void write_synthetic_safetensors(const std::string& path, const std::vector<SynthTensor>& tensors) {
  std::ostringstream hdr;
  hdr << "{\"__metadata__\":{\"format\":\"pt\"}";
  uint64_t off = 0;
  for (const auto& t : tensors) {
    const uint64_t bytes = static_cast<uint64_t>(t.numel()) * 2;
    hdr << ",\"" << t.name << "\":{\"dtype\":\"BF16\",\"shape\":[";
    for (size_t i = 0; i < t.shape.size(); ++i) hdr << (i ? "," : "") << t.shape[i];
    hdr << "],\"data_offsets\":[" << off << "," << off + bytes << "]}";
    off += bytes;
  }
  hdr << "}";
  std::string h = hdr.str();
  h.append((8 - h.size() % 8) % 8, ' ');
  const std::string tmp = path + ".tmp";
  std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
  XC2_CHECK(f.good(), Io, "cannot write '", tmp, "'");
  uint64_t len = h.size();
  char lenb[8];
  for (int i = 0; i < 8; ++i) lenb[i] = static_cast<char>((len >> (8 * i)) & 0xff);
  f.write(lenb, 8);
  f.write(h.data(), static_cast<std::streamsize>(h.size()));
  uint64_t state = 0x9e3779b97f4a7c15ull;
  std::vector<uint16_t> buf;
  for (const auto& t : tensors) {
    int64_t left = t.numel();
    while (left > 0) {
      const int64_t n = std::min<int64_t>(left, 1 << 22);
      buf.resize(static_cast<size_t>(n));
      if (t.fill != 0) {
        std::fill(buf.begin(), buf.end(), f32_to_bf16(t.fill));
      } else {
        for (int64_t i = 0; i < n; ++i) {
          state ^= state << 13;
          state ^= state >> 7;
          state ^= state << 17;
          const float u = static_cast<float>(state >> 40) / static_cast<float>(1ull << 24);  // [0, 1)
          buf[static_cast<size_t>(i)] = f32_to_bf16((2 * u - 1) * t.scale);
        }
      }
      f.write(reinterpret_cast<const char*>(buf.data()), static_cast<std::streamsize>(n * 2));
      left -= n;
    }
  }
  f.close();
  XC2_CHECK(!f.fail(), Io, "error writing '", tmp, "' (disk full?)");
  XC2_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, Io, "cannot rename '", tmp, "'");
}

std::string synthetic_config(int n_layers, int n_vit_layers, int img_size) {
  std::ostringstream c;
  c << "{\n  \"architectures\": [\"InternLMXComposer2ForCausalLM\"],\n  \"bias\": false,\n"
    << "  \"bos_token_id\": 1,\n  \"eos_token_id\": 2,\n  \"pad_token_id\": 2,\n  \"hidden_act\": \"silu\",\n"
    << "  \"hidden_size\": 4096,\n  \"intermediate_size\": 14336,\n  \"max_length\": 4096,\n"
    << "  \"max_position_embeddings\": 32768,\n  \"model_type\": \"internlmxcomposer2\",\n"
    << "  \"num_attention_heads\": 32,\n  \"num_hidden_layers\": " << n_layers << ",\n"
    << "  \"num_key_value_heads\": 8,\n  \"rms_norm_eps\": 1e-05,\n"
    << "  \"rope_scaling\": {\"factor\": 1.0, \"type\": \"dynamic\"},\n  \"rope_theta\": 1000000,\n"
    << "  \"tie_word_embeddings\": false,\n  \"torch_dtype\": \"bfloat16\",\n  \"use_cache\": false,\n"
    << "  \"vocab_size\": 92544,\n  \"img_size\": " << img_size << ",\n"
    << "  \"vision_config\": {\"hidden_size\": 1024, \"intermediate_size\": 4096, \"num_hidden_layers\": "
    << n_vit_layers << ", \"num_attention_heads\": 16, \"patch_size\": 14, \"image_size\": 336, "
    << "\"layer_norm_eps\": 1e-05, \"hidden_act\": \"quick_gelu\"},\n  \"plora_scale\": 1.0\n}\n";
  return c.str();
}

std::string ensure_synthetic(const BenchOptions& o) {
  const std::string dir = o.work_dir + "/xc2-vl-7b-synthetic-L" + std::to_string(o.decoder_layers) + "-V" +
                          std::to_string(o.vision_layers) + "-" + std::to_string(o.img_size);
  const std::string weights = dir + "/model.safetensors";
  if (file_exists(weights) && file_exists(dir + "/config.json")) return dir;
  ::mkdir(o.work_dir.c_str(), 0755);
  ::mkdir(dir.c_str(), 0755);
  XC2_CHECK(is_directory(dir), Io, "cannot create '", dir, "'");
  std::cerr << "xc2 bench: writing a synthetic checkpoint with the XC2-VL-7B dimensions (" << o.decoder_layers
            << " decoder layers, " << o.vision_layers << " ViT layers) to " << dir << " ...\n";
  {
    std::ofstream c(dir + "/config.json", std::ios::trunc);
    c << synthetic_config(o.decoder_layers, o.vision_layers, o.img_size);
    XC2_CHECK(c.good(), Io, "cannot write '", dir, "/config.json'");
  }
  write_synthetic_safetensors(weights, synthetic_tensors(o.decoder_layers, o.vision_layers, o.img_size));
  return dir;
}

// ---- the reference ---------------------------------------------------------------------------------

struct RefNumbers {
  bool ok = false;
  std::string dtype;
  double vit_ms = 0, prefill_ms = 0, decode_tok_s = 0;
  std::string error;
};

double json_number(const std::string& line, const std::string& key) {
  const size_t k = line.find("\"" + key + "\"");
  if (k == std::string::npos) return 0;
  const size_t c = line.find(':', k);
  return c == std::string::npos ? 0 : std::atof(line.c_str() + c + 1);
}

std::vector<RefNumbers> run_reference(const BenchOptions& o, const std::string& model_dir, int threads) {
  std::vector<RefNumbers> out;
  const std::string script =
      o.reference_script.empty() ? std::string(XC2_SOURCE_DIR) + "/tools/reference/bench_ref.py" : o.reference_script;
  if (!file_exists(script)) {
    RefNumbers r;
    r.error = "reference script '" + script + "' not found";
    out.push_back(r);
    return out;
  }
  const bool cuda = o.device == "cuda";
  const std::vector<const char*> dtypes = cuda ? std::vector<const char*>{"bfloat16"}
                                               : std::vector<const char*>{"float32", "bfloat16"};
  for (const char* dtype : dtypes) {
    std::ostringstream cmd;
    cmd << o.python << " '" << script << "' --model '" << model_dir << "' --threads " << threads << " --dtype "
        << dtype << " --text-tokens " << o.text_tokens << " --decode-steps " << o.decode_steps << " --repeats "
        << o.repeats << (cuda ? " --device cuda" : "") << " 2>&1";
    std::cerr << "xc2 bench: running the PyTorch reference (" << dtype << (cuda ? ", cuda" : "") << ") ...\n";
    RefNumbers r;
    r.dtype = dtype;
    FILE* p = ::popen(cmd.str().c_str(), "r");
    if (!p) {
      r.error = "cannot run " + o.python;
      out.push_back(r);
      continue;
    }
    std::string all, line;
    char buf[4096];
    while (std::fgets(buf, sizeof(buf), p)) all += buf;
    const int status = ::pclose(p);
    std::istringstream lines(all);
    while (std::getline(lines, line))
      if (line.rfind("{\"bench_ref\"", 0) == 0) {
        r.vit_ms = json_number(line, "vit_ms");
        r.prefill_ms = json_number(line, "prefill_ms");
        r.decode_tok_s = json_number(line, "decode_tok_s");
        r.ok = r.prefill_ms > 0;
      }
    if (!r.ok) r.error = "reference failed (status " + std::to_string(status) + "): " + all.substr(0, 300);
    out.push_back(r);
  }
  return out;
}

// The prompt's text tokens: spread over the vocabulary, valid for any vocabulary size.
std::vector<int32_t> bench_text_ids(int n, int64_t vocab) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (size_t i = 0; i < ids.size(); ++i)
    ids[i] = static_cast<int32_t>((1000 + (static_cast<int64_t>(i) * 7919) % 50000) % vocab);
  return ids;
}

std::string fmt(double v, int prec = 2) {
  char b[64];
  std::snprintf(b, sizeof(b), "%.*f", prec, v);
  return b;
}

// A copy of `src` (its first length() rows), with room for `extra` more positions.
std::unique_ptr<model::KvCache> clone_cache(model::XComposer2& m, model::KvCache& src, int64_t extra) {
  auto dst = m.new_cache();
  dst->reserve(src.length() + extra);
  for (int64_t l = 0; l < m.config().num_hidden_layers; ++l) {
    Tensor k = dst->k(l).rows(0, src.length()), v = dst->v(l).rows(0, src.length());
    m.backend().copy(src.k(l).rows(0, src.length()), k);
    m.backend().copy(src.v(l).rows(0, src.length()), v);
  }
  dst->set_length(src.length());
  return dst;
}

// Batched decode: B sequences continuing `proto` (each with its own copy of the cache) take `steps` greedy
// steps together through decode_batch(); returns tokens per second summed over the batch (the first step,
// which may allocate, is not timed).
double batched_decode_tok_s(model::XComposer2& m, model::KvCache& proto, int B, int steps) {
  std::vector<std::unique_ptr<model::KvCache>> caches;
  std::vector<model::KvCache*> ptrs;
  for (int b = 0; b < B; ++b) {
    caches.push_back(clone_cache(m, proto, steps + 1));
    ptrs.push_back(caches.back().get());
  }
  const size_t V = static_cast<size_t>(m.config().vocab_size);
  std::vector<int32_t> ids(static_cast<size_t>(B));
  for (int b = 0; b < B; ++b) ids[static_cast<size_t>(b)] = static_cast<int32_t>((1000 + 17 * b) % V);
  Clock::time_point t0{};
  for (int s = 0; s <= steps; ++s) {
    if (s == 1) t0 = Clock::now();
    const std::vector<float> logits = m.decode_batch(ids, ptrs);
    for (size_t b = 0; b < ids.size(); ++b) {
      const auto row = logits.begin() + static_cast<std::ptrdiff_t>(b * V);
      ids[b] = static_cast<int32_t>(std::max_element(row, row + static_cast<std::ptrdiff_t>(V)) - row);
    }
  }
  return static_cast<double>(B) * steps * 1000.0 / ms_since(t0);
}

// ---- CUDA ------------------------------------------------------------------------------------------

// Greedy decode of `steps` tokens after `rows`; returns ms per token over the steps after the first two
// (the first runs eagerly, the second records the graph), and the generated ids.
struct DecodeRun {
  double prefill_ms = 0, ms_per_token = 0;
  bool graphs = false;
};

DecodeRun prefill_and_decode(model::XComposer2& m, const Tensor& rows, const std::vector<model::RowSpan>& spans,
                             int steps) {
  Backend& be = m.backend();
  auto cache = m.new_cache();
  text::SamplingParams sp;
  sp.do_sample = false;
  sp.repetition_penalty = 1.0f;
  text::Sampler sampler(1);
  DecodeRun r;
  auto t0 = Clock::now();
  std::unique_ptr<engine::DeviceDecoder> dev =
      engine::DeviceDecoder::create(m, *cache, sp, {}, cache->length() + rows.rows(), steps + 1);
  if (!dev) {  // XC2_DEVICE_DECODE=0: the host path the engine would take
    std::vector<float> logits = m.forward(rows, spans, *cache, 1);
    r.prefill_ms = ms_since(t0);
    Clock::time_point t_steps{};
    for (int s = 0; s < steps; ++s) {
      if (s == 2) t_steps = Clock::now();
      const int32_t id = sampler.next(logits, {}, sp);
      Tensor row = m.embed_tokens({id});
      logits = m.forward(row, {}, *cache, 1);
    }
    r.ms_per_token = steps > 2 ? ms_since(t_steps) / (steps - 2) : 0;
    return r;
  }
  dev->prefill(rows, spans);
  r.prefill_ms = ms_since(t0);
  r.graphs = dev->uses_graphs();
  Clock::time_point t_steps{};
  for (int s = 0; s < steps; ++s) {
    if (s == 2) t_steps = Clock::now();
    dev->feed(dev->select(sampler));
  }
  dev->select(sampler);  // waits for the last step
  be.synchronize();
  r.ms_per_token = steps > 2 ? ms_since(t_steps) / (steps - 2) : 0;
  return r;
}

BenchReport run_bench_cuda(const BenchOptions& o, const std::string& dir) {
  XC2_CHECK(o.decode_steps >= 4, InvalidArgument, "bench --device cuda needs --decode-steps >= 4");
  const DType dt = o.dtype == "f32" ? DType::F32 : o.dtype == "f16" ? DType::F16 : DType::BF16;
  auto backend = make_cuda_backend(0, dt);
  // What the CUDA context, cuBLASLt and the backend's own buffers take before any model memory.
  const Backend::MemoryStats m_start = backend->memory_stats();
  BenchReport rep;
  rep.machine = backend->name();
  std::cerr << "xc2 bench: measuring the device copy bandwidth ...\n";
  const double copy_bw = backend->measure_copy_bandwidth_gbs();
  const double peak_bw = backend->peak_bandwidth_gbs();

  std::cerr << "xc2 bench: loading " << dir << " onto the GPU ...\n";
  auto t_load = Clock::now();
  auto model = model::XComposer2::load(dir, *backend);
  backend->synchronize();
  const double load_ms = ms_since(t_load);
  const Backend::MemoryStats m_load = backend->memory_stats();
  const io::ModelConfig& c = model->config();
  rep.model = dir + " (" + c.variant() + ", " + std::to_string(c.num_hidden_layers) + " decoder layers, " +
              std::to_string(c.vision.num_hidden_layers) + " ViT layers, " + dtype_name(dt) + ")";
  const int64_t S = c.img_size, vt = c.visual_tokens(), D = c.hidden_size;
  const int64_t H = c.num_attention_heads, Hk = c.num_key_value_heads, d = c.head_dim(), I = c.intermediate_size;
  const int64_t L = c.num_hidden_layers, V = c.vocab_size;
  const int64_t layer_params = (H + 2 * Hk) * d * D + D * H * d + 3 * D * I;
  const io::TensorView* a0 = model->checkpoint().find("model.layers.0.attention.wqkv.Plora_A.weight");
  const int64_t r = a0 ? a0->shape[0] : 0;
  const int64_t lora_params = r * ((D + (H + 2 * Hk) * d) + (H * d + D) + 2 * (D + I) + (I + D));
  const double es = static_cast<double>(dtype_size(dt));

  auto make_pixels = [&](uint64_t seed) {
    std::vector<float> px(static_cast<size_t>(3 * S * S));
    uint64_t st = seed;
    for (float& v : px) {
      st = st * 6364136223846793005ull + 1442695040888963407ull;
      v = static_cast<float>((st >> 40) % 2000) / 1000.0f - 1.0f;
    }
    return px;
  };
  const std::vector<float> pixels = make_pixels(42);
  const std::vector<int32_t> text_ids = bench_text_ids(o.text_tokens, V);
  const int64_t T = 1 + vt + o.text_tokens;
  auto assemble = [&](const Tensor& img) {
    Tensor rows = backend->empty({T, D});
    Tensor r0 = rows.rows(0, 1), r1 = rows.rows(1, vt), r2 = rows.rows(1 + vt, o.text_tokens);
    backend->copy(model->embed_tokens({1}), r0);
    backend->copy(img, r1);
    backend->copy(model->embed_tokens(text_ids), r2);
    return rows;
  };

  double vit_ms = 1e30, prefill_ms = 1e30, tok_ms = 1e30;
  bool graphs = false;
  for (int rep_i = 0; rep_i < o.repeats; ++rep_i) {
    std::cerr << "xc2 bench: run " << rep_i + 1 << "/" << o.repeats << " ...\n";
    auto t0 = Clock::now();
    Tensor img = model->encode_images({pixels});
    backend->synchronize();
    vit_ms = std::min(vit_ms, ms_since(t0));
    const DecodeRun dr = prefill_and_decode(*model, assemble(img), {{1, vt}}, o.decode_steps);
    prefill_ms = std::min(prefill_ms, dr.prefill_ms);
    tok_ms = std::min(tok_ms, dr.ms_per_token);
    graphs = dr.graphs;
  }

  // Memory at a full context, as `xc2 chat` runs it: the cache reserved for kMemoryContext positions, one
  // image prompt prefilled, a few steps decoded (the step recorded as a graph).
  constexpr int64_t kMemoryContext = 4096;
  Backend::MemoryStats m_ctx;
  uint64_t kv_ctx_bytes = 0;
  if (T + 8 < kMemoryContext) {
    std::cerr << "xc2 bench: memory at a " << kMemoryContext << "-token context ...\n";
    backend->synchronize();
    backend->reset_memory_peak();
    auto cache = model->new_cache();
    text::SamplingParams sp;
    sp.do_sample = false;
    sp.repetition_penalty = 1.0f;
    text::Sampler sampler(1);
    Tensor rows = assemble(model->encode_images({pixels}));
    std::unique_ptr<engine::DeviceDecoder> dev =
        engine::DeviceDecoder::create(*model, *cache, sp, {}, T, kMemoryContext - T - 1);
    if (dev) {
      dev->prefill(rows, {{1, vt}});
      for (int s = 0; s < 4; ++s) dev->feed(dev->select(sampler));
      dev->select(sampler);
    } else {  // XC2_DEVICE_DECODE=0
      cache->reserve(kMemoryContext);
      model->forward(rows, {{1, vt}}, *cache, 1);
    }
    backend->synchronize();
    m_ctx = backend->memory_stats();
    kv_ctx_bytes = static_cast<uint64_t>(cache->capacity()) * static_cast<uint64_t>(2 * L * Hk * d) *
                   static_cast<uint64_t>(es);
  }

  // Batched decode over copies of one prefilled prompt.
  std::vector<std::pair<int, double>> batched;
  if (!o.decode_batches.empty()) {
    auto proto = model->new_cache();
    model->forward(assemble(model->encode_images({pixels})), {{1, vt}}, *proto, 0);
    for (int B : o.decode_batches) {
      std::cerr << "xc2 bench: batched decode, batch " << B << " ...\n";
      batched.push_back({B, batched_decode_tok_s(*model, *proto, B, o.decode_steps)});
    }
  }

  // Captioning as `xc2 caption --batch-size N` runs it: the batch through the ViT at once, each prompt
  // prefilled, then all decoded together.
  double caption_s = 0;
  if (o.caption_batch > 0 && o.caption_tokens > 2) {
    std::cerr << "xc2 bench: captioning " << o.caption_batch << " images (" << o.caption_tokens << " tokens each) ...\n";
    std::vector<std::vector<float>> batch;
    for (int i = 0; i < o.caption_batch; ++i) batch.push_back(make_pixels(100 + static_cast<uint64_t>(i)));
    auto t0 = Clock::now();
    Tensor imgs = model->encode_images(batch);
    std::vector<std::unique_ptr<model::KvCache>> caches;
    std::vector<model::KvCache*> ptrs;
    std::vector<int32_t> ids;
    for (int i = 0; i < o.caption_batch; ++i) {
      caches.push_back(model->new_cache());
      ptrs.push_back(caches.back().get());
      const std::vector<float> lg = model->forward(assemble(imgs.rows(i * vt, vt)), {{1, vt}}, *caches.back(), 1);
      ids.push_back(static_cast<int32_t>(std::max_element(lg.begin(), lg.end()) - lg.begin()));
    }
    for (int s = 1; s < o.caption_tokens; ++s) {
      const std::vector<float> lg = model->decode_batch(ids, ptrs);
      for (size_t b = 0; b < ids.size(); ++b) {
        const auto row = lg.begin() + static_cast<std::ptrdiff_t>(b * static_cast<size_t>(V));
        ids[b] = static_cast<int32_t>(std::max_element(row, row + V) - row);
      }
    }
    backend->synchronize();
    caption_s = ms_since(t0) / 1000.0;
  }

  const double decode_tok_s = 1000.0 / tok_ms;
  const double ctx = static_cast<double>(T) + o.decode_steps / 2.0;
  const double weight_bytes = static_cast<double>(L * layer_params + V * D + 2 * L * D + D) * es;
  const double kv_bytes = 2.0 * L * ctx * Hk * d * es;
  const double bytes_per_token = weight_bytes + kv_bytes;
  const double roofline_tok_s = copy_bw * 1e9 / bytes_per_token;
  const double prefill_flops = 2.0 * T * L * layer_params + 2.0 * vt * L * lora_params +
                               2.0 * static_cast<double>(T) * T * d * H * L + 2.0 * D * V;
  const int64_t Dv = c.vision.hidden_size, Iv = c.vision.intermediate_size, nv = vt + 1;
  const double vit_flops = 2.0 * nv * (4.0 * Dv * Dv + 2.0 * Dv * Iv) * c.vision.num_hidden_layers +
                           4.0 * nv * nv * Dv * c.vision.num_hidden_layers + 2.0 * vt * 3 * 14 * 14 * Dv +
                           2.0 * vt * (Dv * D + D * D);

  auto add = [&](const std::string& n, double v, const std::string& u, const std::string& note) {
    rep.rows.push_back({n, v, u, note});
  };
  add("copy bandwidth", copy_bw, "GB/s",
      "device-to-device, read + write" + (peak_bw > 0 ? "; theoretical peak " + fmt(peak_bw, 0) + " GB/s" : ""));
  add("load", load_ms / 1000.0, "s", "checkpoint to GPU, converted to " + std::string(dtype_name(dt)));
  add("ViT", vit_ms, "ms/img",
      std::to_string(S) + " px image + projector, " + fmt(vit_flops / (vit_ms * 1e9), 1) + " TFLOP/s");
  add("prefill", prefill_ms, "ms",
      std::to_string(T) + " positions (1 image + " + std::to_string(o.text_tokens + 1) + " text), " +
          fmt(prefill_flops / (prefill_ms * 1e9), 1) + " TFLOP/s");
  add("decode", decode_tok_s, "tok/s",
      "batch 1, " + std::string(graphs ? "CUDA graph" : "no graph") + "; " + fmt(bytes_per_token / 1e9, 3) +
          " GB per token; copy-bandwidth roofline " + fmt(roofline_tok_s, 1) + " tok/s = " +
          fmt(100.0 * decode_tok_s / roofline_tok_s, 0) + "%" +
          (peak_bw > 0 ? ", " + fmt(100.0 * decode_tok_s * bytes_per_token / (peak_bw * 1e9), 0) + "% of peak" : ""));
  for (const auto& [B, tok_s] : batched) {
    const double roof = B * copy_bw * 1e9 / (weight_bytes + B * kv_bytes);
    add("decode batch " + std::to_string(B), tok_s, "tok/s",
        "summed over " + std::to_string(B) + " sequences, no graph; " + fmt(tok_s / decode_tok_s) +
            "x batch 1; " + fmt(100.0 * tok_s / roof, 0) + "% of the batch-" + std::to_string(B) +
            " copy-bandwidth roofline");
  }
  if (m_ctx.peak > 0) {
    // On a card of 24 GiB: xc2's peak (the cuBLASLt workspace included), plus what the driver held before
    // xc2 allocated anything (the CUDA context, cuBLASLt's handle).
    const double gib = 1024.0 * 1024.0 * 1024.0;
    const uint64_t ctx_overhead = m_start.device_used > m_start.needed + m_start.cached
                                      ? m_start.device_used - m_start.needed - m_start.cached
                                      : 0;
    const double total = static_cast<double>(m_ctx.peak + ctx_overhead) / gib;
    auto g = [&](uint64_t bytes) { return fmt(static_cast<double>(bytes) / gib); };
    add("GPU memory", total, "GiB",
        "needed at a 4096-token context: peak " + g(m_ctx.peak) + " GiB held by xc2 (weights " +
            g(m_load.needed - m_start.needed) + ", KV cache " + g(kv_ctx_bytes) + ", the rest work buffers) + " +
            g(ctx_overhead) + " CUDA context; " + (total <= 24.0 ? "fits" : "does NOT fit") + " in 24 GiB; driver: " +
            g(m_ctx.device_used) + " of " + g(m_ctx.device_total) + " GiB used (allocator cache included)");
  }
  if (caption_s > 0)
    add("caption", o.caption_batch / caption_s, "img/s",
        "batch " + std::to_string(o.caption_batch) + ": ViT together, prefill one by one, " +
            std::to_string(o.caption_tokens) + " greedy tokens each decoded together");

  if (o.reference) {
    model.reset();
    backend.reset();
    for (const RefNumbers& rf : run_reference(o, dir, 0)) {
      if (!rf.ok) {
        add("reference", 0, "", "not run: " + rf.error);
        continue;
      }
      add("reference ViT (" + rf.dtype + ", cuda)", rf.vit_ms, "ms/img", "xc2 is " + fmt(rf.vit_ms / vit_ms) + "x");
      add("reference prefill (" + rf.dtype + ", cuda)", rf.prefill_ms, "ms",
          "xc2 is " + fmt(rf.prefill_ms / prefill_ms) + "x (target >= 1.5x)");
      add("reference decode (" + rf.dtype + ", cuda)", rf.decode_tok_s, "tok/s",
          "xc2 is " + fmt(decode_tok_s / rf.decode_tok_s) + "x (target >= 3x)");
    }
  }
  return rep;
}

}  // namespace

BenchReport run_bench(const BenchOptions& o) {
  XC2_CHECK(o.decoder_layers >= 1 && o.vision_layers >= 1, InvalidArgument, "bench needs at least one layer");
  XC2_CHECK(o.decode_steps >= 1 && o.repeats >= 1 && o.text_tokens >= 1, InvalidArgument,
            "bench: decode steps, repeats and text tokens must be >= 1");
  XC2_CHECK(o.device == "cpu" || o.device == "cuda", InvalidArgument, "bench: unknown device '", o.device, "'");
  if (o.device == "cuda") {  // before writing gigabytes of synthetic checkpoint
    XC2_CHECK(XC2_WITH_CUDA, Unsupported, "this xc2 was built without CUDA (rebuild with -DXC2_WITH_CUDA=ON)");
    XC2_CHECK(cuda_device_available(), Cuda, "bench --device cuda: no usable CUDA device (compute capability 8.0+)");
  }
  const std::string dir = o.model_dir.empty() ? ensure_synthetic(o) : o.model_dir;
  if (o.device == "cuda") return run_bench_cuda(o, dir);
  auto backend = make_cpu_backend(o.threads);
  const int threads = o.threads > 0 ? o.threads : hardware_threads();

  BenchReport rep;
  rep.machine = cpu_model() + ", " + std::to_string(threads) + " threads, GEMM " + kernels::cpu::gemm_isa();

  // Machine limits first, with the same number of threads, while memory is still free.
  ThreadPool pool(threads);
  std::cerr << "xc2 bench: measuring memory bandwidth and FMA peak ...\n";
  const double read_bw = kernels::cpu::measure_read_bandwidth_gbs(pool);
  const double copy_bw = kernels::cpu::measure_copy_bandwidth_gbs(pool);
  const double fma_peak = kernels::cpu::measure_fma_peak_gflops(pool);

  std::cerr << "xc2 bench: loading " << dir << " ...\n";
  auto model = model::XComposer2::load(dir, *backend);
  const io::ModelConfig& c = model->config();
  rep.model = dir + " (" + c.variant() + ", " + std::to_string(c.num_hidden_layers) + " decoder layers, " +
              std::to_string(c.vision.num_hidden_layers) + " ViT layers) on " + backend->name();
  const int64_t S = c.img_size, vt = c.visual_tokens(), D = c.hidden_size;

  // Parameter counts for FLOPs and bytes.
  const int64_t H = c.num_attention_heads, Hk = c.num_key_value_heads, d = c.head_dim(), I = c.intermediate_size;
  const int64_t layer_params = (H + 2 * Hk) * d * D + D * H * d + 3 * D * I;
  const io::TensorView* a0 = model->checkpoint().find("model.layers.0.attention.wqkv.Plora_A.weight");
  const int64_t r = a0 ? a0->shape[0] : 0;
  const int64_t lora_params = r * ((D + (H + 2 * Hk) * d) + (H * d + D) + 2 * (D + I) + (I + D));
  const int64_t L = c.num_hidden_layers, V = c.vocab_size;
  const size_t wsize = dtype_size(model->checkpoint().find("output.weight")->dtype);
  const int64_t Dv = c.vision.hidden_size, Iv = c.vision.intermediate_size, nv = vt + 1;
  const double vit_flops = 2.0 * nv * (4.0 * Dv * Dv + 2.0 * Dv * Iv) * c.vision.num_hidden_layers +
                           4.0 * nv * nv * Dv * c.vision.num_hidden_layers + 2.0 * vt * 3 * 14 * 14 * Dv +
                           2.0 * vt * (Dv * D + D * D);

  // Inputs: one random image, [BOS] + image rows + text tokens.
  std::vector<float> pixels(static_cast<size_t>(3 * S * S));
  uint64_t st = 42;
  for (float& v : pixels) {
    st = st * 6364136223846793005ull + 1442695040888963407ull;
    v = static_cast<float>((st >> 40) % 2000) / 1000.0f - 1.0f;
  }
  const std::vector<int32_t> text_ids = bench_text_ids(o.text_tokens, V);

  double vit_ms = 1e30, prefill_ms = 1e30, decode_ms = 1e30;
  int64_t T = 0;
  std::unique_ptr<model::KvCache> proto;  // the last run's cache, continued by the batched decode
  for (int rep_i = 0; rep_i < o.repeats; ++rep_i) {
    std::cerr << "xc2 bench: run " << rep_i + 1 << "/" << o.repeats << " ...\n";
    auto t0 = Clock::now();
    Tensor img = model->encode_images({pixels});
    vit_ms = std::min(vit_ms, ms_since(t0));

    Tensor bos = model->embed_tokens({1});
    Tensor txt = model->embed_tokens(text_ids);
    T = 1 + vt + o.text_tokens;
    Tensor rows = backend->empty({T, D});
    {
      Tensor r0 = rows.rows(0, 1), r1 = rows.rows(1, vt), r2 = rows.rows(1 + vt, o.text_tokens);
      backend->copy(bos, r0);
      backend->copy(img, r1);
      backend->copy(txt, r2);
    }
    auto cache = model->new_cache();
    t0 = Clock::now();
    std::vector<float> logits = model->forward(rows, {{1, vt}}, *cache, 1);
    prefill_ms = std::min(prefill_ms, ms_since(t0));

    t0 = Clock::now();
    int32_t next = static_cast<int32_t>(1000 % V);
    for (int s = 0; s < o.decode_steps; ++s) {
      Tensor row = model->embed_tokens({next});
      logits = model->forward(row, {}, *cache, 1);
      next = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    }
    decode_ms = std::min(decode_ms, ms_since(t0));
    proto = std::move(cache);
  }
  std::vector<std::pair<int, double>> batched;
  for (int B : o.decode_batches) {
    std::cerr << "xc2 bench: batched decode, batch " << B << " ...\n";
    batched.push_back({B, batched_decode_tok_s(*model, *proto, B, o.decode_steps)});
  }
  proto.reset();

  const double decode_tok_s = o.decode_steps * 1000.0 / decode_ms;
  const double ctx = static_cast<double>(T) + o.decode_steps / 2.0;
  const double weight_bytes = static_cast<double>(L * layer_params + V * D + 2 * L * D + D) * wsize + D * wsize;
  const double kv_bytes = 2.0 * L * ctx * Hk * d * 4;
  const double bytes_per_token = weight_bytes + kv_bytes;
  const double roofline_tok_s = read_bw * 1e9 / bytes_per_token;
  const double prefill_flops = 2.0 * T * L * layer_params + 2.0 * vt * L * lora_params +
                               2.0 * static_cast<double>(T) * T * d * H * L + 2.0 * D * V;
  const double prefill_gflops = prefill_flops / (prefill_ms * 1e6);
  const double vit_gflops = vit_flops / (vit_ms * 1e6);

  auto add = [&](const std::string& n, double v, const std::string& u, const std::string& note) {
    rep.rows.push_back({n, v, u, note});
  };
  add("read bandwidth", read_bw, "GB/s", "streaming read, " + std::to_string(threads) + " threads");
  add("copy bandwidth", copy_bw, "GB/s", "read + write");
  add("f32 FMA peak", fma_peak, "GFLOP/s", std::string("the GEMM's instructions (") + kernels::cpu::gemm_isa() + ")");
  add("ViT", 1000.0 / vit_ms, "img/s",
      fmt(vit_ms, 1) + " ms per " + std::to_string(S) + " px image, " + fmt(vit_gflops, 1) + " GFLOP/s = " +
          fmt(100.0 * vit_gflops / fma_peak, 0) + "% of FMA peak");
  add("prefill", T * 1000.0 / prefill_ms, "pos/s",
      std::to_string(T) + " positions (1 image + " + std::to_string(o.text_tokens + 1) + " text) in " +
          fmt(prefill_ms, 1) + " ms, " + fmt(prefill_gflops, 1) + " GFLOP/s = " +
          fmt(100.0 * prefill_gflops / fma_peak, 0) + "% of FMA peak");
  add("decode", decode_tok_s, "tok/s",
      fmt(bytes_per_token / 1e9, 3) + " GB read per token; roofline " + fmt(roofline_tok_s, 2) + " tok/s; " +
          fmt(100.0 * decode_tok_s / roofline_tok_s, 0) + "% of the read-bandwidth roofline");
  for (const auto& [B, tok_s] : batched) {
    const double roof = B * read_bw * 1e9 / (weight_bytes + B * kv_bytes);
    add("decode batch " + std::to_string(B), tok_s, "tok/s",
        "summed over " + std::to_string(B) + " sequences; " + fmt(tok_s / decode_tok_s) + "x batch 1; " +
            fmt(100.0 * tok_s / roof, 0) + "% of the batch-" + std::to_string(B) + " read-bandwidth roofline");
  }
  add("peak RSS", peak_rss_gib(), "GiB", "process maximum resident set");

  if (o.reference) {
    model.reset();
    backend.reset();
    const std::vector<RefNumbers> refs = run_reference(o, dir, threads);
    for (const RefNumbers& rf : refs) {
      if (!rf.ok) {
        add("reference", 0, "", "not run: " + rf.error);
        continue;
      }
      const double ref_prefill = T * 1000.0 / rf.prefill_ms;
      add("reference ViT (" + rf.dtype + ")", 1000.0 / rf.vit_ms, "img/s",
          "xc2 is " + fmt((1000.0 / vit_ms) / (1000.0 / rf.vit_ms)) + "x");
      add("reference prefill (" + rf.dtype + ")", ref_prefill, "pos/s",
          "xc2 is " + fmt((T * 1000.0 / prefill_ms) / ref_prefill) + "x");
      add("reference decode (" + rf.dtype + ")", rf.decode_tok_s, "tok/s",
          "xc2 is " + fmt(decode_tok_s / rf.decode_tok_s) + "x");
    }
  }
  return rep;
}

}  // namespace xc2
