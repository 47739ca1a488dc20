// safetensors header validation and zero-copy tensor views.
//   n = u64 LE at byte 0; 0 < n <= min(size - 8, 100 MB); header = JSON object at [8, 8 + n);
//   data section = [8 + n, size); each tensor: begin <= end <= data size, end - begin = numel * dtype_size,
//   no two non-empty tensors overlap, no duplicate names (or duplicate keys anywhere in the header).
#include "io/safetensors.h"

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "io/bytes.h"

namespace xc2::io {
namespace {

using json = nlohmann::json;

// dtype strings of the safetensors format that xc2 does not read (Unsupported, not corrupt).
bool is_known_unsupported_dtype(const std::string& s) {
  static const char* const kKnown[] = {"F64",    "I64",    "I32",     "I16",     "I8",      "U64",
                                       "U32",    "U16",    "U8",      "BOOL",    "F8_E4M3", "F8_E5M2",
                                       "F8_E8M0", "F4",    "F6_E2M3", "F6_E3M2", "C64",     "F8_E4M3FNUZ",
                                       "F8_E5M2FNUZ"};
  for (const char* k : kKnown) {
    if (s == k) return true;
  }
  return false;
}

// Reads a JSON integer >= 0 that fits in int64; false otherwise.
bool get_nonneg_int(const json& j, int64_t* out) {
  if (j.is_number_unsigned()) {
    const uint64_t v = j.get<uint64_t>();
    if (v > static_cast<uint64_t>(INT64_MAX)) return false;
    *out = static_cast<int64_t>(v);
    return true;
  }
  if (j.is_number_integer()) {
    const int64_t v = j.get<int64_t>();
    if (v < 0) return false;
    *out = v;
    return true;
  }
  return false;
}

std::string json_snippet(const json& j) {
  std::string s = j.dump();
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

struct Entry {
  TensorView view;
  uint64_t begin = 0, end = 0;
};

}  // namespace

std::vector<TensorView> parse_safetensors(const uint8_t* data, size_t size, const std::string& file_name) {
  const std::string where = "'" + file_name + "'";
  if (size < 8) XC2_THROW(Io, where, ": not a safetensors file (", size, " bytes, smaller than the 8-byte header length)");
  const uint64_t n = detail::rd_u64(data);
  if (n > size - 8) {
    XC2_THROW(Io, where, ": safetensors header length ", n, " exceeds the file (", size,
              " bytes): truncated or not a safetensors file");
  }
  if (n > kMaxSafetensorsHeaderBytes) {
    XC2_THROW(Io, where, ": safetensors header length ", n, " exceeds the ", kMaxSafetensorsHeaderBytes, "-byte limit");
  }
  if (n < 2) XC2_THROW(Io, where, ": safetensors header of ", n, " bytes is too short to hold a JSON object");

  // Parse, recording duplicate keys (nlohmann keeps the last one silently).
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  int duplicate_depth = 0;
  auto callback = [&](int depth, json::parse_event_t event, json& parsed) -> bool {
    if (event == json::parse_event_t::object_start) {
      open_objects.emplace_back();
    } else if (event == json::parse_event_t::object_end) {
      if (!open_objects.empty()) open_objects.pop_back();
    } else if (event == json::parse_event_t::key && !open_objects.empty() && parsed.is_string()) {
      if (!open_objects.back().insert(parsed.get<std::string>()).second && duplicate.empty()) {
        duplicate = parsed.get<std::string>();
        duplicate_depth = depth;
      }
    }
    return true;
  };
  const char* hbegin = reinterpret_cast<const char*>(data + 8);
  const json header = json::parse(hbegin, hbegin + n, callback, /*allow_exceptions=*/false);
  if (header.is_discarded()) XC2_THROW(Io, where, ": safetensors header is not valid JSON");
  if (!header.is_object()) XC2_THROW(Io, where, ": safetensors header is a JSON ", header.type_name(), ", expected an object");
  if (!duplicate.empty()) {
    if (duplicate_depth == 1) XC2_THROW(Io, where, ": duplicate tensor name '", duplicate, "' in the safetensors header");
    XC2_THROW(Io, where, ": duplicate key '", duplicate, "' in the safetensors header");
  }

  const uint64_t data_size = size - 8 - n;
  const uint8_t* data_section = data + 8 + n;
  std::vector<Entry> entries;
  entries.reserve(header.size());
  for (const auto& item : header.items()) {
    const std::string& name = item.key();
    const json& info = item.value();
    if (name == "__metadata__") {
      if (!info.is_object()) XC2_THROW(Io, where, ": __metadata__ is a JSON ", info.type_name(), ", expected an object");
      for (const auto& m : info.items()) {
        if (!m.value().is_string()) XC2_THROW(Io, where, ": __metadata__ value '", m.key(), "' is not a string");
      }
      continue;
    }
    const std::string tw = where + ": tensor '" + name + "'";
    if (name.empty()) XC2_THROW(Io, where, ": tensor with an empty name");
    if (!info.is_object()) XC2_THROW(Io, tw, " is a JSON ", info.type_name(), ", expected an object");
    const auto dt = info.find("dtype");
    const auto sh = info.find("shape");
    const auto off = info.find("data_offsets");
    if (dt == info.end() || sh == info.end() || off == info.end()) {
      XC2_THROW(Io, tw, " lacks ", dt == info.end() ? "dtype" : sh == info.end() ? "shape" : "data_offsets");
    }

    Entry e;
    TensorView& v = e.view;
    v.name = name;
    v.file = file_name;
    if (!dt->is_string()) XC2_THROW(Io, tw, " has a non-string dtype ", json_snippet(*dt));
    const std::string& dts = dt->get_ref<const std::string&>();
    if (dts == "F32") {
      v.dtype = DType::F32;
    } else if (dts == "F16") {
      v.dtype = DType::F16;
    } else if (dts == "BF16") {
      v.dtype = DType::BF16;
    } else if (dts == "I32") {
      v.dtype = DType::I32;  // GPTQ qweight, qzeros, g_idx
    } else if (is_known_unsupported_dtype(dts)) {
      XC2_THROW(Unsupported, tw, " has unsupported dtype ", dts, " (xc2 reads F32, F16, BF16 and I32)");
    } else {
      XC2_THROW(Io, tw, " has unknown dtype ", json_snippet(*dt));
    }

    if (!sh->is_array()) XC2_THROW(Io, tw, " has a non-array shape ", json_snippet(*sh));
    for (const json& d : *sh) {
      int64_t dim = 0;
      if (!get_nonneg_int(d, &dim)) XC2_THROW(Io, tw, " has an invalid shape ", json_snippet(*sh), " (dims must be integers >= 0)");
      v.shape.push_back(dim);
    }
    int64_t numel = 0;
    uint64_t nbytes = 0;
    if (!detail::shape_numel(v.shape, &numel) ||
        !detail::mul_ok(static_cast<uint64_t>(numel), dtype_size(v.dtype), &nbytes)) {
      XC2_THROW(Io, tw, " has shape ", detail::shape_to_string(v.shape), " whose size overflows");
    }

    int64_t b = 0, en = 0;
    if (!off->is_array() || off->size() != 2 || !get_nonneg_int((*off)[0], &b) || !get_nonneg_int((*off)[1], &en)) {
      XC2_THROW(Io, tw, " has invalid data_offsets ", json_snippet(*off), " (expected [begin, end], integers >= 0)");
    }
    e.begin = static_cast<uint64_t>(b);
    e.end = static_cast<uint64_t>(en);
    if (e.begin > e.end) XC2_THROW(Io, tw, " has data_offsets [", e.begin, ", ", e.end, "] with begin > end");
    if (e.end > data_size) {
      XC2_THROW(Io, tw, " data_offsets [", e.begin, ", ", e.end, "] exceed the data section (", data_size, " bytes)");
    }
    if (e.end - e.begin != nbytes) {
      XC2_THROW(Io, tw, " data_offsets [", e.begin, ", ", e.end, "] hold ", e.end - e.begin, " bytes, but ", dts, " ",
                detail::shape_to_string(v.shape), " needs ", nbytes);
    }
    v.nbytes = static_cast<size_t>(nbytes);
    v.data = data_section + e.begin;
    entries.push_back(std::move(e));
  }

  std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  // Overlap check over the non-empty ranges, in offset order.
  const Entry* prev = nullptr;
  for (const Entry& e : entries) {
    if (e.begin == e.end) continue;
    if (prev != nullptr && e.begin < prev->end) {
      XC2_THROW(Io, where, ": tensors '", prev->view.name, "' [", prev->begin, ", ", prev->end, ") and '", e.view.name,
                "' [", e.begin, ", ", e.end, ") overlap");
    }
    prev = &e;
  }

  std::vector<TensorView> out;
  out.reserve(entries.size());
  for (Entry& e : entries) out.push_back(std::move(e.view));
  return out;
}

LoadedFile load_safetensors(const std::string& path) {
  LoadedFile f;
  f.map = MappedFile::open(path);
  f.tensors = parse_safetensors(f.map->data(), f.map->size(), path_basename(path));
  return f;
}

}  // namespace xc2::io
