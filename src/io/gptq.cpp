// GPTQ settings and tensor validation (io/gptq.h). Nothing here unpacks values: the backends repack the
// validated tensors into their own layouts (kernels/cpu/qgemm.h on the CPU).
#include "io/gptq.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <optional>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "core/mmap_file.h"

namespace xc2::io {
namespace {

using json = nlohmann::json;

bool get_bool(const json& j, const char* key, bool def, const std::string& src) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return def;
  if (!it->is_boolean()) XC2_THROW(Io, src, ": quantization setting \"", key, "\" is not a boolean");
  return it->get<bool>();
}

int64_t get_int(const json& j, const char* key, int64_t def, const std::string& src) {
  const auto it = j.find(key);
  if (it == j.end()) return def;
  if (!it->is_number_integer()) XC2_THROW(Io, src, ": quantization setting \"", key, "\" is not an integer");
  return it->get<int64_t>();
}

// Whether a GPTQModel "dynamic" rule's pattern (a Python regular expression applied with re.match: from the start
// of the module name) matches `name`, for the patterns module rules are written with: characters, "\\." and other
// escaped characters, "." (any character), ".*", a leading "^" and a trailing "$". nullopt for anything else
// (groups, alternatives, classes, other repeats). No regex engine: linear in the pattern, no recursion, so a hostile
// config cannot make it slow or exhaust the stack.
std::optional<bool> rule_matches(std::string pattern, const std::string& name) {
  if (!pattern.empty() && pattern[0] == '^') pattern.erase(0, 1);
  bool to_end = false;
  if (!pattern.empty() && pattern.back() == '$' && (pattern.size() < 2 || pattern[pattern.size() - 2] != '\\')) {
    pattern.pop_back();
    to_end = true;
  }
  const size_t n = name.size();
  std::vector<char> at(n + 1, 0), next(n + 1, 0);  // at[j]: the pattern so far can have consumed j characters
  at[0] = 1;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    std::fill(next.begin(), next.end(), 0);
    if (c == '.' && i + 1 < pattern.size() && pattern[i + 1] == '*') {
      for (size_t j = 0, seen = 0; j <= n; ++j) next[j] = static_cast<char>(seen = seen || at[j]);
      ++i;
    } else if (c == '.') {
      for (size_t j = 0; j < n; ++j) next[j + 1] = at[j];
    } else {
      char lit = c;
      if (c == '\\') {
        if (i + 1 == pattern.size()) return std::nullopt;
        lit = pattern[++i];
        if (std::isalnum(static_cast<unsigned char>(lit))) return std::nullopt;  // \d, \w, ...
      } else if (std::string("*+?()[]{}|^$").find(c) != std::string::npos) {
        return std::nullopt;
      }
      for (size_t j = 0; j < n; ++j) next[j + 1] = static_cast<char>(at[j] && name[j] == lit);
    }
    at.swap(next);
  }
  if (to_end) return at[n] != 0;
  for (char v : at)
    if (v) return true;
  return false;
}

GptqConfig from_json(const json& q, const std::string& src) {
  if (!q.is_object()) XC2_THROW(Io, src, ": the quantization settings are not a JSON object");
  const auto m = q.find("quant_method");
  if (m != q.end() && !(m->is_string() && m->get<std::string>() == "gptq"))
    XC2_THROW(Unsupported, src, ": quant_method ", m->dump(), " is not supported (xc2 reads GPTQ only)");
  const auto f = q.find("checkpoint_format");
  if (f != q.end() && !(f->is_string() && f->get<std::string>() == "gptq"))
    XC2_THROW(Unsupported, src, ": checkpoint_format ", f->dump(), " is not supported (xc2 reads \"gptq\")");
  GptqConfig c;
  c.source = src;
  const int64_t bits = get_int(q, "bits", -1, src);
  if (bits != 4 && bits != 8) XC2_THROW(Unsupported, src, ": bits ", bits, " is not supported (xc2 reads 4 and 8)");
  c.bits = static_cast<int>(bits);
  c.group_size = get_int(q, "group_size", 128, src);
  if (c.group_size == 0 || c.group_size < -1)
    XC2_THROW(Io, src, ": group_size ", c.group_size, " is invalid (a positive size, or -1 for per channel)");
  c.desc_act = get_bool(q, "desc_act", false, src);
  c.sym = get_bool(q, "sym", true, src);
  c.lm_head = get_bool(q, "lm_head", false, src);
  c.head_bits = c.bits;
  c.head_group_size = c.group_size;
  const auto dyn = q.find("dynamic");
  if (dyn != q.end() && !dyn->is_null()) {
    if (!dyn->is_object()) XC2_THROW(Io, src, ": quantization setting \"dynamic\" is not an object");
    // GPTQModel's per-module rules: "+:regex" (or a bare regex) overrides settings of the modules it matches
    // from their start, "-:regex" leaves them 16-bit. xc2 reads the rules that match the output head.
    for (const auto& [key, rule] : dyn->items()) {
      const bool skip = key.rfind("-:", 0) == 0;
      const std::string pattern = (skip || key.rfind("+:", 0) == 0) ? key.substr(2) : key;
      const std::optional<bool> match = rule_matches(pattern, "output");
      if (!match)
        XC2_THROW(Unsupported, src, ": \"dynamic\" rule \"", key,
                  "\": xc2 reads rules made of module names with '.', '.*', '\\.', '^' and '$' only");
      if (!*match) {
        // Rules for other modules (per-layer bits of the decoder linears) are not read: refuse rather than
        // load tensors with settings they were not written with.
        if (!skip && rule.is_object() && (rule.contains("bits") || rule.contains("group_size")))
          XC2_THROW(Unsupported, src, ": \"dynamic\" rule \"", key,
                    "\" changes the bits or group size of other modules than the output head (not supported)");
        continue;
      }
      if (skip) {
        c.lm_head = false;
        continue;
      }
      if (!rule.is_object()) XC2_THROW(Io, src, ": \"dynamic\" rule \"", key, "\" is not an object");
      c.head_bits = static_cast<int>(get_int(rule, "bits", c.bits, src));
      c.head_group_size = get_int(rule, "group_size", c.group_size, src);
    }
  }
  if (c.lm_head) {
    if (c.head_bits != 4 && c.head_bits != 8)
      XC2_THROW(Unsupported, src, ": bits ", c.head_bits, " for the output head is not supported (xc2 reads 4 and 8)");
    if (c.head_group_size == 0 || c.head_group_size < -1)
      XC2_THROW(Io, src, ": group_size ", c.head_group_size, " of the output head is invalid");
  }
  return c;
}

json parse_or_throw(const std::string& text, const std::string& src) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded()) XC2_THROW(Io, src, ": not valid JSON");
  return j;
}

}  // namespace

int64_t gptq_groups(int64_t k, int64_t group_size) { return group_size == -1 ? 1 : (k + group_size - 1) / group_size; }

std::optional<GptqConfig> parse_gptq_config(const std::string& config_json_text, const std::string& quantize_config_text,
                                            const std::string& source) {
  if (!config_json_text.empty()) {
    const json j = parse_or_throw(config_json_text, source + "/config.json");
    const auto q = j.is_object() ? j.find("quantization_config") : j.end();
    if (j.is_object() && q != j.end() && !q->is_null()) return from_json(*q, source + "/config.json");
  }
  if (!quantize_config_text.empty())
    return from_json(parse_or_throw(quantize_config_text, source + "/quantize_config.json"),
                     source + "/quantize_config.json");
  return std::nullopt;
}

std::optional<GptqConfig> read_gptq_config(const std::string& model_dir) {
  const std::string cfg = path_join(model_dir, "config.json"), qc = path_join(model_dir, "quantize_config.json");
  return parse_gptq_config(file_exists(cfg) ? read_file(cfg) : std::string(),
                           file_exists(qc) ? read_file(qc) : std::string(), model_dir);
}

bool has_gptq_linear(const Checkpoint& ckpt, const std::string& base) {
  return ckpt.find(base + ".qweight") != nullptr || ckpt.find(base + ".linear.qweight") != nullptr;
}

GptqLinearViews get_gptq_linear(WeightStore& ws, const std::string& linear, int64_t n, int64_t k,
                                const GptqConfig& cfg) {
  // The official 4-bit releases name the quantized module `<linear>.linear` (upstream's AutoGPTQ class lists
  // "attention.wqkv.linear", ... as its inside_layer_modules); xc2 quantize and GPTQ tools run on the 16-bit
  // folders name it `<linear>`. Either is read.
  const std::string base = ws.checkpoint().find(linear + ".qweight") == nullptr &&
                                   ws.checkpoint().find(linear + ".linear.qweight") != nullptr
                               ? linear + ".linear"
                               : linear;
  GptqLinearViews v;
  v.base = base;
  v.n = n;
  v.k = k;
  v.bits = cfg.bits;
  v.group_size = cfg.group_size;
  v.groups = gptq_groups(k, cfg.group_size);
  const int64_t per_word = 32 / cfg.bits;
  XC2_CHECK(k % per_word == 0, ShapeMismatch, "tensor '", base, ".qweight': the input dimension ", k,
            " is not a multiple of ", per_word, " (", cfg.bits, "-bit values per int32)");
  const std::string qw = base + ".qweight", qz = base + ".qzeros", sc = base + ".scales";
  const TensorView* sv = ws.checkpoint().find(sc);
  if (ws.checkpoint().find(qw) == nullptr || ws.checkpoint().find(qz) == nullptr || sv == nullptr) {
    const std::string missing = ws.checkpoint().find(qw) == nullptr ? qw : ws.checkpoint().find(qz) == nullptr ? qz : sc;
    XC2_THROW(NotFound, "tensor '", missing, "' not found: the GPTQ checkpoint (", cfg.source,
              ") must hold qweight, qzeros and scales for every quantized linear");
  }
  v.qweight = &ws.get_int32(qw, {k / per_word, n});
  v.qzeros = &ws.get_int32(qz, {v.groups, (n + per_word - 1) / per_word});
  v.scales = &ws.get(sc, {v.groups, n});
  v.g_idx = ws.get_optional_int32(base + ".g_idx", {k});
  v.bias = ws.get_optional(base + ".bias", {n});
  if (v.g_idx) {
    const char* g_bytes = static_cast<const char*>(v.g_idx->data);
    for (int64_t i = 0; i < k; ++i) {
      int32_t g;
      std::memcpy(&g, g_bytes + 4 * i, 4);
      XC2_CHECK(g >= 0 && g < v.groups, ShapeMismatch, "tensor '", base, ".g_idx' in ", v.g_idx->file,
                ": entry ", i, " is ", g, ", outside the ", v.groups, " groups of group_size ", cfg.group_size);
    }
  }
  return v;
}

}  // namespace xc2::io
