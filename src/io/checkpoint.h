// Checkpoint folders as Hugging Face publishes them, read natively and zero-copy (mmap):
//   model.safetensors | model.safetensors.index.json + shards
//   pytorch_model.bin | pytorch_model.bin.index.json + shards   (torch.save zip archives)
// Every tensor is a view into a mapped file; nothing is copied or converted at load time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/mmap_file.h"
#include "xc2/dtype.h"

namespace xc2::io {

struct TensorView {
  std::string name;            // verbatim checkpoint name, e.g. "model.layers.0.attention.wqkv.weight"
  DType dtype = DType::F32;
  std::vector<int64_t> shape;  // row-major, contiguous
  const void* data = nullptr;  // into a MappedFile owned by the Checkpoint
  size_t nbytes = 0;           // numel() * dtype_size(dtype)
  std::string file;            // base name of the file holding it (for messages)

  int64_t numel() const;
  std::string shape_str() const;  // "[6144, 4096]"
};

enum class CheckpointFormat { Safetensors, TorchBin };

class Checkpoint {
 public:
  // Opens a model folder. Prefers safetensors (index, else model.safetensors, else the only
  // *.safetensors file) over PyTorch (.bin index, else pytorch_model.bin). Errors name the folder
  // and list what was looked for.
  static Checkpoint open_dir(const std::string& dir);
  // Opens one file of either format (detected from its bytes, not its name).
  static Checkpoint open_file(const std::string& path);

  CheckpointFormat format() const { return format_; }
  const std::vector<TensorView>& tensors() const { return tensors_; }
  const TensorView* find(const std::string& name) const;  // nullptr if absent
  const std::vector<std::string>& files() const { return files_; }  // paths of the data files
  size_t total_bytes() const;
  // Drops this process's page-table entries for the mapped data files (MADV_DONTNEED on each whole mapping):
  // once the weights a backend uses have been copied out, the pages that reading them mapped (with large page
  // cache folios, a whole folio around every small tensor read) leave the resident set. The page cache keeps
  // them; a later read of a view faults its pages back in.
  void release_resident_pages() const;

 private:
  CheckpointFormat format_ = CheckpointFormat::Safetensors;
  std::vector<std::shared_ptr<MappedFile>> maps_;
  std::vector<std::string> files_;
  std::vector<TensorView> tensors_;
  std::unordered_map<std::string, size_t> index_;

  friend struct CheckpointBuilder;
};

// Writes tensors as safetensors shards (model-0000k-of-0000n.safetensors, each at most
// max_shard_bytes unless one tensor is larger) plus model.safetensors.index.json when n > 1, or a
// single model.safetensors when everything fits in one shard. Names and bytes are kept verbatim.
// max_shard_bytes == 0 means one shard. Creates out_dir; refuses (Error{InvalidArgument}) a folder
// that already holds *.safetensors or model.safetensors.index.json, so stale shards never mix in.
void write_safetensors_shards(const std::vector<TensorView>& tensors, const std::string& out_dir,
                              size_t max_shard_bytes);
// The same with each tensor's bytes produced while its file is written, so a checkpoint larger than memory
// can be written: `bytes_of(t, write)` calls write(data, n) until exactly t.nbytes bytes have been passed
// (TensorView::data is not read and may be null).
using WriteBytes = std::function<void(const void* data, size_t n)>;
using TensorBytes = std::function<void(const TensorView& tensor, const WriteBytes& write)>;
void write_safetensors_shards(const std::vector<TensorView>& tensors, const std::string& out_dir,
                              size_t max_shard_bytes, const TensorBytes& bytes_of);

// `xc2 convert`: reads a model folder in either format and writes it as safetensors into out_dir,
// copying the non-weight files (config.json, tokenizer.model, *.json, *.py, ...) alongside
// (not *.bin, *.safetensors or their index files; not subfolders). Refuses out_dir == model_dir.
void convert_checkpoint(const std::string& model_dir, const std::string& out_dir, size_t max_shard_bytes);
// The copy step of convert_checkpoint: every regular file of model_dir but the weights and their indexes.
void copy_non_weight_files(const std::string& model_dir, const std::string& out_dir);

}  // namespace xc2::io
