// torch.save zip archive -> tensor views. For each top-level dict entry whose value is a tensor:
//   storage bytes = <prefix>/data/<key>, at least storage_numel * elem_size;
//   view = storage + storage_offset * elem_size, nbytes = numel * elem_size, with
//   storage_offset + numel <= storage_numel and row-major contiguous strides (size-1 dims exempt).
// Non-tensor entries (e.g. `_metadata`) are skipped; several tensors may share one storage.
#include "io/torch_bin.h"

#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/check.h"
#include "io/bytes.h"
#include "io/zip_archive.h"

namespace xc2::io {
namespace {

bool storage_dtype(const std::string& type, DType* out) {
  if (type == "FloatStorage") {
    *out = DType::F32;
  } else if (type == "HalfStorage") {
    *out = DType::F16;
  } else if (type == "BFloat16Storage") {
    *out = DType::BF16;
  } else if (type == "IntStorage") {
    *out = DType::I32;  // GPTQ qweight, qzeros, g_idx
  } else {
    return false;
  }
  return true;
}

bool is_contiguous(const std::vector<int64_t>& shape, const std::vector<int64_t>& stride) {
  int64_t expected = 1;
  for (size_t d = shape.size(); d-- > 0;) {
    if (shape[d] != 1 && stride[d] != expected) return false;
    expected *= shape[d];
  }
  return true;
}

}  // namespace

std::vector<TensorView> parse_torch_bin(const uint8_t* data, size_t size, const std::string& file_name,
                                        const PickleLimits& limits) {
  const std::string where = "'" + file_name + "'";
  if (size >= 2 && data[0] == 0x80 && data[1] <= 5) {
    XC2_THROW(Unsupported, where, ": legacy (pre-1.6, non-zip) torch.save format is not supported; re-save it with "
              "torch>=1.6 (_use_new_zipfile_serialization=True)");
  }
  const ZipArchive zip = ZipArchive::parse(data, size, file_name);

  // <prefix>/data.pkl, where the prefix is one path component ("archive", the file stem, ...).
  const ZipEntry* pkl = nullptr;
  for (const ZipEntry& e : zip.entries()) {
    const std::string& n = e.name;
    const size_t slash = n.find('/');
    if (slash == std::string::npos || slash == 0 || n.compare(slash, std::string::npos, "/data.pkl") != 0) continue;
    if (pkl != nullptr) XC2_THROW(Io, where, ": the archive holds two pickles, '", pkl->name, "' and '", n, "'");
    pkl = &e;
  }
  if (pkl == nullptr) {
    for (const ZipEntry& e : zip.entries()) {
      if (e.name.size() >= 13 && e.name.compare(e.name.size() - 13, 13, "constants.pkl") == 0) {
        XC2_THROW(Unsupported, where, ": TorchScript archives are not supported (expected a torch.save state dict)");
      }
    }
    XC2_THROW(Io, where, ": zip archive has no <prefix>/data.pkl entry: not a torch.save checkpoint");
  }
  const std::string prefix = pkl->name.substr(0, pkl->name.size() - 9);  // strip "/data.pkl"

  if (const ZipEntry* bo = zip.find(prefix + "/byteorder")) {
    if (bo->size > 16) XC2_THROW(Io, where, ": '", bo->name, "' is ", bo->size, " bytes long");
    const uint8_t* p = zip.data(*bo, /*verify_crc=*/true);
    const std::string order(reinterpret_cast<const char*>(p), static_cast<size_t>(bo->size));
    if (order == "big") XC2_THROW(Unsupported, where, ": big-endian torch.save archives are not supported");
    if (order != "little") XC2_THROW(Io, where, ": unknown byte order '", order, "' in '", bo->name, "'");
  }

  const uint8_t* pkl_data = zip.data(*pkl, /*verify_crc=*/true);
  const PickleResult pr = unpickle(pkl_data, static_cast<size_t>(pkl->size), where + ": " + pkl->name, limits);
  const std::vector<PyValue>& vals = pr.values;
  const PyValue& root = vals[pr.root];
  if (root.kind != PyKind::Dict) {
    XC2_THROW(Io, where, ": the pickled object is a ", py_kind_name(root.kind), ", expected a dict of tensors (a state dict)");
  }

  std::vector<TensorView> out;
  std::unordered_set<std::string> names;
  std::unordered_map<std::string, DType> storage_types;  // key -> dtype, to catch inconsistent reuse
  std::string first_skipped;
  for (size_t k = 0; k + 1 < root.items.size(); k += 2) {
    const PyValue& key = vals[root.items[k]];
    const PyValue& t = vals[root.items[k + 1]];
    if (t.kind != PyKind::Tensor) {
      if (first_skipped.empty() && key.kind == PyKind::Str) first_skipped = key.s + "' (a " + py_kind_name(t.kind) + ")";
      continue;
    }
    if (key.kind != PyKind::Str) XC2_THROW(Io, where, ": a tensor is stored under a ", py_kind_name(key.kind), " key");
    const std::string& name = key.s;
    const std::string tw = where + ": tensor '" + name + "'";
    if (!names.insert(name).second) XC2_THROW(Io, where, ": duplicate tensor name '", name, "'");

    const PyValue& st = vals[t.items.at(0)];
    TensorView v;
    v.name = name;
    v.file = file_name;
    v.shape = t.shape;
    if (!storage_dtype(st.s, &v.dtype)) {
      XC2_THROW(Unsupported, tw, " is stored as torch.", st.s, "; xc2 reads only float32, float16 and bfloat16 tensors");
    }
    const auto [it, inserted] = storage_types.emplace(st.s2, v.dtype);
    if (!inserted && it->second != v.dtype) XC2_THROW(Io, tw, ": storage '", st.s2, "' is used with two dtypes");

    const ZipEntry* se = zip.find(prefix + "/data/" + st.s2);
    if (se == nullptr) XC2_THROW(Io, tw, ": its storage '", prefix, "/data/", st.s2, "' is missing from the archive");
    const uint8_t* storage = zip.data(*se);
    const uint64_t elem = dtype_size(v.dtype);
    uint64_t storage_bytes = 0;
    if (!detail::mul_ok(static_cast<uint64_t>(st.i), elem, &storage_bytes) || storage_bytes > se->size) {
      XC2_THROW(Io, tw, ": storage '", st.s2, "' holds ", se->size, " bytes, fewer than its ", st.i, " elements of ",
                elem, " bytes");
    }
    int64_t numel = 0;
    if (!detail::shape_numel(v.shape, &numel)) {
      XC2_THROW(Io, tw, " has an invalid shape ", detail::shape_to_string(v.shape));
    }
    if (numel > 0 && !is_contiguous(v.shape, t.stride)) {
      XC2_THROW(Unsupported, tw, " is non-contiguous (shape ", detail::shape_to_string(v.shape), ", stride ",
                detail::shape_to_string(t.stride), "); save it after .contiguous()");
    }
    uint64_t end = 0;
    if (t.i < 0 || !detail::add_ok(static_cast<uint64_t>(t.i), static_cast<uint64_t>(numel), &end) ||
        (numel > 0 && end > static_cast<uint64_t>(st.i))) {
      XC2_THROW(Io, tw, ": offset ", t.i, " + ", numel, " elements exceed its storage '", st.s2, "' of ", st.i,
                " elements");
    }
    v.nbytes = static_cast<size_t>(static_cast<uint64_t>(numel) * elem);
    v.data = numel > 0 ? storage + static_cast<uint64_t>(t.i) * elem : storage;
    out.push_back(std::move(v));
  }
  if (out.empty() && !first_skipped.empty()) {
    XC2_THROW(Io, where, ": the state dict holds no tensors at its top level (first entry '", first_skipped,
              "); nested checkpoints are not supported");
  }
  return out;
}

LoadedFile load_torch_bin(const std::string& path) {
  LoadedFile f;
  f.map = MappedFile::open(path);
  f.tensors = parse_torch_bin(f.map->data(), f.map->size(), path_basename(path));
  return f;
}

}  // namespace xc2::io
