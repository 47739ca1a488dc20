// Round-to-nearest GPTQ quantization of a model folder (model/quantize.h).
#include "model/quantize.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <set>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "core/half.h"
#include "core/mmap_file.h"
#include "io/config.h"
#include "io/gptq.h"
#include "model/weight_names.h"

namespace xc2::model {
namespace {

constexpr const char* kLinears[] = {"attention.wqkv", "attention.wo", "feed_forward.w1", "feed_forward.w3",
                                    "feed_forward.w2"};

float widen(const io::TensorView& t, int64_t i) { return float_at(t.data, t.dtype, i); }

}  // namespace

GptqPacked rtn_quantize(const io::TensorView& w, int bits, int64_t group_size, bool sym) {
  XC2_CHECK(bits == 4 || bits == 8, InvalidArgument, "--bits ", bits, ": xc2 quantizes to 4 or 8 bits");
  XC2_CHECK(group_size == -1 || group_size > 0, InvalidArgument, "--group-size ", group_size, " is invalid");
  XC2_CHECK(w.shape.size() == 2, ShapeMismatch, "tensor '", w.name, "' is not a matrix");
  XC2_CHECK(w.dtype != DType::I32, ShapeMismatch, "tensor '", w.name, "' has dtype I32, expected a float weight");
  const int64_t n = w.shape[0], k = w.shape[1], p = 32 / bits, gs = group_size == -1 ? k : group_size;
  XC2_CHECK(k % p == 0, ShapeMismatch, "tensor '", w.name, "': input dimension ", k, " is not a multiple of ", p);
  const int maxq = (1 << bits) - 1;
  GptqPacked out;
  out.groups = io::gptq_groups(k, group_size);
  const int64_t zw = (n + p - 1) / p;
  out.qweight.assign(static_cast<size_t>(k / p * n), 0);
  out.qzeros.assign(static_cast<size_t>(out.groups * zw), 0);
  out.scales.resize(static_cast<size_t>(out.groups * n));
  out.g_idx.resize(static_cast<size_t>(k));
  for (int64_t c = 0; c < k; ++c) out.g_idx[static_cast<size_t>(c)] = static_cast<int32_t>(c / gs);
  std::vector<float> row(static_cast<size_t>(k));
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < k; ++c) row[static_cast<size_t>(c)] = widen(w, r * k + c);
    for (int64_t g = 0; g < out.groups; ++g) {
      const int64_t c0 = g * gs, c1 = std::min(k, c0 + gs);
      float xmin = 0.0f, xmax = 0.0f;
      for (int64_t c = c0; c < c1; ++c) {
        xmin = std::min(xmin, row[static_cast<size_t>(c)]);
        xmax = std::max(xmax, row[static_cast<size_t>(c)]);
      }
      if (sym) {
        xmax = std::max(-xmin, xmax);
        if (xmin < 0) xmin = -xmax;
      }
      if (xmin == 0.0f && xmax == 0.0f) {
        xmin = -1.0f;
        xmax = 1.0f;
      }
      uint16_t s16 = f32_to_f16((xmax - xmin) / static_cast<float>(maxq));
      if ((s16 & 0x7fffu) == 0) s16 = 1;  // 2^-24
      const float s = f16_to_f32(s16);
      const int z = sym ? (1 << (bits - 1)) : static_cast<int>(std::clamp(std::nearbyint(-xmin / s), 1.0f, static_cast<float>(maxq)));
      out.scales[static_cast<size_t>(g * n + r)] = s16;
      out.qzeros[static_cast<size_t>(g * zw + r / p)] |= static_cast<int32_t>(static_cast<uint32_t>(z - 1) << ((r % p) * bits));
      for (int64_t c = c0; c < c1; ++c) {
        const float qf = std::nearbyint(row[static_cast<size_t>(c)] / s);
        const int64_t q = std::clamp<int64_t>(static_cast<int64_t>(qf) + z, 0, maxq);
        out.qweight[static_cast<size_t>((c / p) * n + r)] |=
            static_cast<int32_t>(static_cast<uint32_t>(q) << ((c % p) * bits));
      }
    }
  }
  return out;
}

void quantize_checkpoint(const std::string& model_dir, const std::string& out_dir, const QuantizeOptions& opts,
                         const std::function<void(size_t, size_t, const std::string&)>& progress) {
  XC2_CHECK(!io::read_gptq_config(model_dir), InvalidArgument, "'", model_dir,
            "' is already quantized (it has GPTQ settings); quantize a 16-bit folder");
  const io::ModelConfig cfg = io::ModelConfig::load(path_join(model_dir, "config.json"));
  const io::Checkpoint ckpt = io::Checkpoint::open_dir(model_dir);
  std::set<std::string> targets;
  for (int i = 0; i < cfg.num_hidden_layers; ++i)
    for (const char* lin : kLinears) targets.insert(names::plora_base(i, lin) + ".weight");
  XC2_CHECK(opts.head_bits == 0 || opts.head_bits == 4 || opts.head_bits == 8, InvalidArgument, "--head-bits ",
            opts.head_bits, ": xc2 quantizes the output head to 4 or 8 bits");
  if (opts.head_bits) targets.insert(names::output());
  auto bits_of = [&](const std::string& name) { return name == names::output() ? opts.head_bits : opts.bits; };

  // The output's tensors: the source's, the five linears of every layer replaced by their four GPTQ tensors
  // (no data yet). The writer asks for each tensor's bytes in its own order; a linear is quantized when one of
  // its tensors is first asked for and kept until another linear's is (the writer orders a shard's tensors by
  // dtype size, so a linear may be quantized twice): memory is one linear's GPTQ tensors and the f32 row.
  std::vector<io::TensorView> views;
  std::map<std::string, const io::TensorView*> source_of;  // GPTQ tensor -> the weight it comes from
  XC2_CHECK(opts.bits == 4 || opts.bits == 8, InvalidArgument, "--bits ", opts.bits, ": xc2 quantizes to 4 or 8 bits");
  XC2_CHECK(opts.group_size == -1 || opts.group_size > 0, InvalidArgument, "--group-size ", opts.group_size,
            " is invalid");
  for (const io::TensorView& t : ckpt.tensors()) {
    if (!targets.count(t.name)) {
      views.push_back(t);
      continue;
    }
    const int64_t p = 32 / bits_of(t.name);
    XC2_CHECK(t.shape.size() == 2, ShapeMismatch, "tensor '", t.name, "' is not a matrix");
    XC2_CHECK(t.shape[1] % p == 0, ShapeMismatch, "tensor '", t.name, "': input dimension ", t.shape[1],
              " is not a multiple of ", p);
    const std::string base = t.name.substr(0, t.name.size() - 7);
    const int64_t n = t.shape[0], k = t.shape[1], groups = io::gptq_groups(k, opts.group_size);
    const std::pair<const char*, std::pair<DType, std::vector<int64_t>>> outs[] = {
        {".qweight", {DType::I32, {k / p, n}}},
        {".qzeros", {DType::I32, {groups, (n + p - 1) / p}}},
        {".scales", {DType::F16, {groups, n}}},
        {".g_idx", {DType::I32, {k}}}};
    for (const auto& [suffix, spec] : outs) {
      io::TensorView v;
      v.name = base + suffix;
      v.dtype = spec.first;
      v.shape = spec.second;
      v.nbytes = static_cast<size_t>(v.numel()) * dtype_size(v.dtype);
      v.file = "(quantized)";
      views.push_back(std::move(v));
      source_of[base + suffix] = &t;
    }
    targets.erase(t.name);
  }
  XC2_CHECK(targets.empty(), NotFound, "tensor '", *targets.begin(), "' not found in '", model_dir, "'");

  const size_t total = ckpt.tensors().size();
  std::set<const io::TensorView*> done;
  const io::TensorView* cached = nullptr;
  GptqPacked packed;
  auto report = [&](const io::TensorView* src) {
    if (done.insert(src).second && progress) progress(done.size(), total, src->name);
  };
  io::write_safetensors_shards(views, out_dir, static_cast<size_t>(opts.max_shard_bytes),
                               [&](const io::TensorView& t, const io::WriteBytes& write) {
    const auto it = source_of.find(t.name);
    if (it == source_of.end()) {
      write(t.data, t.nbytes);
      report(&t);
      return;
    }
    if (cached != it->second) {
      packed = rtn_quantize(*it->second, bits_of(it->second->name), opts.group_size, opts.sym);
      cached = it->second;
    }
    const std::string suffix = t.name.substr(t.name.rfind('.'));
    if (suffix == ".qweight") write(packed.qweight.data(), packed.qweight.size() * 4);
    else if (suffix == ".qzeros") write(packed.qzeros.data(), packed.qzeros.size() * 4);
    else if (suffix == ".scales") write(packed.scales.data(), packed.scales.size() * 2);
    else write(packed.g_idx.data(), packed.g_idx.size() * 4);
    report(it->second);
  });
  io::copy_non_weight_files(model_dir, out_dir);

  nlohmann::ordered_json j = nlohmann::ordered_json::parse(read_file(path_join(model_dir, "config.json")));
  nlohmann::ordered_json q;
  q["bits"] = opts.bits;
  q["group_size"] = opts.group_size;
  q["desc_act"] = false;
  q["sym"] = opts.sym;
  q["true_sequential"] = true;
  if (opts.head_bits) {
    q["lm_head"] = true;
    // GPTQModel's per-module override: the head's bits where they differ from the decoder's.
    if (opts.head_bits != opts.bits) q["dynamic"]["+:^output$"]["bits"] = opts.head_bits;
  }
  q["quant_method"] = "gptq";
  q["checkpoint_format"] = "gptq";
  q["quantizer"] = "xc2 quantize (round to nearest)";
  j["quantization_config"] = q;
  const std::string path = path_join(out_dir, "config.json");
  errno = 0;
  std::ofstream f(path, std::ios::trunc);
  f << j.dump(2) << "\n";
  f.close();  // a full disk may only show when the buffer is flushed
  XC2_CHECK(static_cast<bool>(f), Io, "cannot write '", path, "': ", std::strerror(errno != 0 ? errno : EIO));
}

}  // namespace xc2::model
