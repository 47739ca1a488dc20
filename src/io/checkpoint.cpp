// Checkpoint folders and files: picks the weight files of a Hugging Face model folder, opens every
// shard (safetensors or torch.save zip), and indexes the tensor views by name.
//   open_dir order: model.safetensors.index.json > model.safetensors > the only *.safetensors
//                   > pytorch_model.bin.index.json > pytorch_model.bin
//   sharded: every shard in the index's weight_map must exist and hold exactly the tensors the index
//   assigns to it; a name may appear in one shard only.
#include "io/checkpoint.h"

#include <sys/mman.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "io/bytes.h"
#include "io/safetensors.h"
#include "io/torch_bin.h"

namespace xc2::io {

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string TensorView::shape_str() const { return detail::shape_to_string(shape); }

struct CheckpointBuilder {
  Checkpoint ckpt;

  explicit CheckpointBuilder(CheckpointFormat format) { ckpt.format_ = format; }
  bool has(const std::string& name) const { return ckpt.index_.count(name) != 0; }

  void add_file(const std::string& path, LoadedFile&& f) {
    ckpt.files_.push_back(path);
    ckpt.maps_.push_back(std::move(f.map));
    for (TensorView& v : f.tensors) {
      const auto [it, inserted] = ckpt.index_.emplace(v.name, ckpt.tensors_.size());
      if (!inserted) {
        XC2_THROW(Io, "duplicate tensor '", v.name, "' in '", ckpt.tensors_[it->second].file, "' and '", v.file, "'");
      }
      ckpt.tensors_.push_back(std::move(v));
    }
  }

  Checkpoint finish(const std::string& what) {
    if (ckpt.tensors_.empty()) XC2_THROW(Io, "'", what, "' holds no tensors");
    return std::move(ckpt);
  }
};

namespace {

using json = nlohmann::json;

LoadedFile load_any(const std::string& path, CheckpointFormat format) {
  return format == CheckpointFormat::Safetensors ? load_safetensors(path) : load_torch_bin(path);
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// weight_map of a Hugging Face shard index: tensor name -> shard base name.
std::map<std::string, std::string> read_weight_map(const std::string& index_path) {
  const std::string text = read_file(index_path);
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  const std::string where = "'" + index_path + "'";
  if (j.is_discarded()) XC2_THROW(Io, where, ": not valid JSON");
  if (!j.is_object()) XC2_THROW(Io, where, ": expected a JSON object");
  const auto wm = j.find("weight_map");
  if (wm == j.end() || !wm->is_object()) XC2_THROW(Io, where, ": no \"weight_map\" object");
  std::map<std::string, std::string> out;
  for (const auto& item : wm->items()) {
    if (!item.value().is_string()) XC2_THROW(Io, where, ": weight_map entry '", item.key(), "' is not a string");
    const std::string& shard = item.value().get_ref<const std::string&>();
    if (shard.empty() || shard == "." || shard == ".." || shard.find('/') != std::string::npos ||
        shard.find('\\') != std::string::npos) {
      XC2_THROW(Io, where, ": weight_map entry '", item.key(), "' names an invalid shard file '", shard, "'");
    }
    out.emplace(item.key(), shard);
  }
  if (out.empty()) XC2_THROW(Io, where, ": weight_map is empty");
  return out;
}

Checkpoint open_sharded(const std::string& dir, const std::string& index_name, CheckpointFormat format) {
  const std::string index_path = path_join(dir, index_name);
  const std::map<std::string, std::string> weight_map = read_weight_map(index_path);
  std::set<std::string> shards;
  for (const auto& kv : weight_map) shards.insert(kv.second);
  for (const std::string& shard : shards) {
    if (!file_exists(path_join(dir, shard))) {
      XC2_THROW(NotFound, "'", index_path, "' lists shard '", shard, "', which does not exist");
    }
  }
  CheckpointBuilder b(format);
  for (const std::string& shard : shards) {
    const std::string path = path_join(dir, shard);
    LoadedFile f = load_any(path, format);
    for (const TensorView& v : f.tensors) {
      if (const TensorView* prev = b.ckpt.find(v.name)) {
        XC2_THROW(Io, "duplicate tensor '", v.name, "' in '", prev->file, "' and '", shard, "'");
      }
      const auto it = weight_map.find(v.name);
      if (it == weight_map.end()) {
        XC2_THROW(Io, "'", shard, "': tensor '", v.name, "' is not listed in '", index_name, "'");
      }
      if (it->second != shard) {
        XC2_THROW(Io, "'", shard, "': tensor '", v.name, "' is listed under '", it->second, "' in '", index_name, "'");
      }
    }
    b.add_file(path, std::move(f));
  }
  for (const auto& kv : weight_map) {
    if (!b.has(kv.first)) {
      XC2_THROW(Io, "tensor '", kv.first, "' listed in '", index_path, "' is missing from its shard '", kv.second, "'");
    }
  }
  return b.finish(dir);
}

CheckpointFormat detect_format(const MappedFile& f) {
  const uint8_t* d = f.data();
  const size_t n = f.size();
  // safetensors first: its 8-byte little-endian header length can itself start with 0x80 0x02
  // (a 640-byte header), which would look like a legacy pickle, or with "PK" (19280 bytes). Byte 8
  // of a zip (the low byte of the compression method) or of a pickle is never '{'.
  if (n >= 9 && d[8] == '{') return CheckpointFormat::Safetensors;
  if (n >= 2 && d[0] == 'P' && d[1] == 'K') return CheckpointFormat::TorchBin;
  if (n >= 2 && d[0] == 0x80 && d[1] <= 5) return CheckpointFormat::TorchBin;  // legacy torch.save (rejected there)
  const std::string& p = f.path();
  if (ends_with(p, ".safetensors")) return CheckpointFormat::Safetensors;  // for a precise error message
  if (ends_with(p, ".bin") || ends_with(p, ".pt") || ends_with(p, ".pth")) return CheckpointFormat::TorchBin;
  XC2_THROW(Io, "'", p, "' is neither a safetensors file nor a torch.save zip archive");
}

}  // namespace

Checkpoint Checkpoint::open_file(const std::string& path) {
  LoadedFile f;
  f.map = MappedFile::open(path);
  const CheckpointFormat format = detect_format(*f.map);
  const std::string base = path_basename(path);
  f.tensors = format == CheckpointFormat::Safetensors ? parse_safetensors(f.map->data(), f.map->size(), base)
                                                      : parse_torch_bin(f.map->data(), f.map->size(), base);
  CheckpointBuilder b(format);
  b.add_file(path, std::move(f));
  return b.finish(path);
}

Checkpoint Checkpoint::open_dir(const std::string& dir) {
  if (!is_directory(dir)) {
    if (file_exists(dir)) XC2_THROW(InvalidArgument, "'", dir, "' is a file, expected a model folder");
    XC2_THROW(NotFound, "model folder '", dir, "' does not exist");
  }
  if (file_exists(path_join(dir, "model.safetensors.index.json"))) {
    return open_sharded(dir, "model.safetensors.index.json", CheckpointFormat::Safetensors);
  }
  if (file_exists(path_join(dir, "model.safetensors"))) return open_file(path_join(dir, "model.safetensors"));

  std::vector<std::string> st_files;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    std::error_code ec2;
    if (ends_with(name, ".safetensors") && e.is_regular_file(ec2)) st_files.push_back(name);
  }
  if (ec) XC2_THROW(Io, "cannot list model folder '", dir, "': ", ec.message());
  std::sort(st_files.begin(), st_files.end());
  if (st_files.size() == 1) return open_file(path_join(dir, st_files[0]));
  if (st_files.size() > 1) {
    XC2_THROW(Io, "'", dir, "' holds ", st_files.size(), " .safetensors files ('", st_files[0], "', '", st_files[1],
              "', ...) but no model.safetensors.index.json to tie them together");
  }

  if (file_exists(path_join(dir, "pytorch_model.bin.index.json"))) {
    return open_sharded(dir, "pytorch_model.bin.index.json", CheckpointFormat::TorchBin);
  }
  if (file_exists(path_join(dir, "pytorch_model.bin"))) return open_file(path_join(dir, "pytorch_model.bin"));
  XC2_THROW(NotFound, "no model.safetensors, model.safetensors.index.json, pytorch_model.bin or "
            "pytorch_model.bin.index.json in '", dir, "'");
}

const TensorView* Checkpoint::find(const std::string& name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

size_t Checkpoint::total_bytes() const {
  size_t n = 0;
  for (const TensorView& v : tensors_) n += v.nbytes;
  return n;
}

void Checkpoint::release_resident_pages() const {
  for (const auto& m : maps_)
    if (m && m->size() > 0) ::madvise(const_cast<uint8_t*>(m->data()), m->size(), MADV_DONTNEED);
}

}  // namespace xc2::io
