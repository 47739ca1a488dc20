// safetensors writer and `xc2 convert`.
//   shard file = [u64 LE n][JSON header, space-padded so that 8 + n is a multiple of 8][tensor bytes]
//   header = {"__metadata__": {"format": "pt"}, name: {"dtype", "shape", "data_offsets": [b, e]}, ...}
//   Within a shard tensors are laid out by decreasing element size, then input order, back to back,
//   so every tensor starts aligned to its element size. Names and bytes are copied verbatim.
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <unordered_set>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "core/log.h"
#include "io/checkpoint.h"

namespace xc2::io {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string shard_name(size_t k, size_t n) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "model-%05zu-of-%05zu.safetensors", k + 1, n);
  return buf;
}

// Writes bytes to path + ".tmp" and renames it into place, so a failed write leaves no valid-looking file.
class AtomicFile {
 public:
  explicit AtomicFile(std::string path) : path_(std::move(path)), tmp_(path_ + ".tmp") {
    out_.open(tmp_, std::ios::binary | std::ios::trunc);
    if (!out_) fail();
  }
  ~AtomicFile() {
    if (!committed_) {
      out_.close();
      std::error_code ec;
      fs::remove(tmp_, ec);
    }
  }
  void write(const void* p, size_t n) {
    errno = 0;
    out_.write(static_cast<const char*>(p), static_cast<std::streamsize>(n));
    if (!out_) fail();
  }
  void commit() {
    errno = 0;
    out_.close();
    if (!out_) fail();
    std::error_code ec;
    fs::rename(tmp_, path_, ec);
    if (ec) XC2_THROW(Io, "cannot write '", path_, "': ", ec.message());
    committed_ = true;
  }

 private:
  // The message the CLI maps to a write failure: "cannot write 'PATH': <reason>".
  [[noreturn]] void fail() const {
    XC2_THROW(Io, "cannot write '", path_, "': ", std::strerror(errno != 0 ? errno : EIO));
  }
  std::string path_, tmp_;
  std::ofstream out_;
  bool committed_ = false;
};

bool is_weight_file(const std::string& name) {
  return ends_with(name, ".bin") || ends_with(name, ".bin.index.json") || ends_with(name, ".safetensors") ||
         ends_with(name, ".safetensors.index.json") || ends_with(name, ".tmp");
}

// nlohmann throws on invalid UTF-8 (a name from a hostile pickle); report it as our error.
std::string dump_json(const json& j, int indent) {
  try {
    return j.dump(indent);
  } catch (const json::exception&) {
    XC2_THROW(InvalidArgument, "write_safetensors_shards: a tensor name is not valid UTF-8");
  }
}

void write_shard(const std::vector<const TensorView*>& tensors, const std::string& path, const TensorBytes& bytes_of) {
  std::vector<const TensorView*> order = tensors;
  std::stable_sort(order.begin(), order.end(), [](const TensorView* a, const TensorView* b) {
    return dtype_size(a->dtype) > dtype_size(b->dtype);
  });
  json header = json::object();
  header["__metadata__"] = {{"format", "pt"}};
  uint64_t offset = 0;
  for (const TensorView* t : order) {
    header[t->name] = {{"dtype", dtype_name(t->dtype)},
                       {"shape", t->shape},
                       {"data_offsets", {offset, offset + t->nbytes}}};
    offset += t->nbytes;
  }
  std::string text = dump_json(header, -1);
  text.append((8 - text.size() % 8) % 8, ' ');
  uint8_t len[8];
  for (int k = 0; k < 8; ++k) len[k] = static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * k));

  AtomicFile f(path);
  f.write(len, 8);
  f.write(text.data(), text.size());
  for (const TensorView* t : order) {
    size_t written = 0;
    bytes_of(*t, [&](const void* data, size_t n) {
      XC2_CHECK(written + n <= t->nbytes, InvalidArgument, "write_safetensors_shards: more than ", t->nbytes,
                " bytes given for tensor '", t->name, "'");
      if (n > 0) f.write(data, n);
      written += n;
    });
    XC2_CHECK(written == t->nbytes, InvalidArgument, "write_safetensors_shards: ", written, " of ", t->nbytes,
              " bytes given for tensor '", t->name, "'");
  }
  f.commit();
}

}  // namespace

void write_safetensors_shards(const std::vector<TensorView>& tensors, const std::string& out_dir,
                              size_t max_shard_bytes) {
  for (const TensorView& t : tensors)
    XC2_CHECK(t.nbytes == 0 || t.data != nullptr, InvalidArgument, "write_safetensors_shards: tensor '", t.name,
              "' has no data");
  write_safetensors_shards(tensors, out_dir, max_shard_bytes, [](const TensorView& t, const WriteBytes& write) {
    write(t.data, t.nbytes);
  });
}

void write_safetensors_shards(const std::vector<TensorView>& tensors, const std::string& out_dir,
                              size_t max_shard_bytes, const TensorBytes& bytes_of) {
  std::unordered_set<std::string> names;
  for (const TensorView& t : tensors) {
    XC2_CHECK(!t.name.empty(), InvalidArgument, "write_safetensors_shards: a tensor has an empty name");
    XC2_CHECK(names.insert(t.name).second, InvalidArgument, "write_safetensors_shards: duplicate tensor '", t.name, "'");
    XC2_CHECK(t.name != "__metadata__", InvalidArgument, "write_safetensors_shards: reserved tensor name '__metadata__'");
    XC2_CHECK(t.numel() >= 0 && static_cast<size_t>(t.numel()) * dtype_size(t.dtype) == t.nbytes, InvalidArgument,
              "write_safetensors_shards: tensor '", t.name, "' has ", t.nbytes, " bytes for ", dtype_name(t.dtype), " ",
              t.shape_str());
  }

  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec || !is_directory(out_dir)) XC2_THROW(Io, "cannot create output folder '", out_dir, "'", ec ? ": " + ec.message() : "");
  for (const auto& e : fs::directory_iterator(out_dir, ec)) {
    const std::string name = e.path().filename().string();
    if (ends_with(name, ".safetensors") || name == "model.safetensors.index.json") {
      XC2_THROW(InvalidArgument, "output folder '", out_dir, "' already holds '", name,
                "'; write the converted checkpoint into an empty folder");
    }
  }

  // Greedy split in input order: a new shard starts when the next tensor would overflow the limit.
  std::vector<std::vector<const TensorView*>> shards(1);
  size_t shard_bytes = 0;
  for (const TensorView& t : tensors) {
    if (max_shard_bytes > 0 && !shards.back().empty() && shard_bytes + t.nbytes > max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(&t);
    shard_bytes += t.nbytes;
  }

  const size_t n = shards.size();
  if (n == 1) {
    write_shard(shards[0], path_join(out_dir, "model.safetensors"), bytes_of);
    return;
  }
  json weight_map = json::object();
  uint64_t total = 0;
  for (size_t k = 0; k < n; ++k) {
    const std::string name = shard_name(k, n);
    XC2_LOG_INFO("writing " << name << " (" << shards[k].size() << " tensors)");
    write_shard(shards[k], path_join(out_dir, name), bytes_of);
    for (const TensorView* t : shards[k]) {
      weight_map[t->name] = name;
      total += t->nbytes;
    }
  }
  const json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  const std::string text = dump_json(index, 2) + "\n";
  AtomicFile f(path_join(out_dir, "model.safetensors.index.json"));
  f.write(text.data(), text.size());
  f.commit();
}

void convert_checkpoint(const std::string& model_dir, const std::string& out_dir, size_t max_shard_bytes) {
  if (!is_directory(model_dir)) XC2_THROW(NotFound, "model folder '", model_dir, "' does not exist");
  std::error_code ec1, ec2;
  const fs::path src = fs::weakly_canonical(model_dir, ec1);
  const fs::path dst = fs::weakly_canonical(out_dir, ec2);
  if ((!ec1 && !ec2 && src == dst) || (fs::exists(out_dir, ec2) && fs::equivalent(model_dir, out_dir, ec1))) {
    XC2_THROW(InvalidArgument, "refusing to convert '", model_dir, "' into itself; choose another output folder");
  }

  const Checkpoint ckpt = Checkpoint::open_dir(model_dir);
  write_safetensors_shards(ckpt.tensors(), out_dir, max_shard_bytes);
  copy_non_weight_files(model_dir, out_dir);
}

void copy_non_weight_files(const std::string& model_dir, const std::string& out_dir) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(model_dir, ec)) {
    const std::string name = e.path().filename().string();
    std::error_code ec3;
    if (!e.is_regular_file(ec3) || is_weight_file(name)) continue;
    fs::copy_file(e.path(), fs::path(out_dir) / name, fs::copy_options::overwrite_existing, ec3);
    if (ec3) XC2_THROW(Io, "cannot write '", (fs::path(out_dir) / name).string(), "': ", ec3.message());
  }
  if (ec) XC2_THROW(Io, "cannot list '", model_dir, "': ", ec.message());
}

}  // namespace xc2::io
