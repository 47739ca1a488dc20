// safetensors reader (one file; sharding is handled by checkpoint.cpp):
//   [u64 LE n][n bytes of JSON header][data section]
//   header = {"__metadata__": {str: str}?, name: {"dtype": "BF16", "shape": [...], "data_offsets": [b, e]}, ...}
//   tensor bytes = data[b, e), with e - b = numel * dtype_size; views point into the caller's buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/mmap_file.h"
#include "io/checkpoint.h"

namespace xc2::io {

constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;  // same limit as the Rust safetensors crate

// Validates the whole header and returns zero-copy views into data, sorted by data offset.
// file_name (a base name) goes into every TensorView::file and every error message.
// Errors: Error{Io} for corrupt or truncated input, Error{Unsupported} for a known dtype other than
// F32/F16/BF16.
std::vector<TensorView> parse_safetensors(const uint8_t* data, size_t size, const std::string& file_name);

struct LoadedFile {
  std::shared_ptr<MappedFile> map;
  std::vector<TensorView> tensors;  // views into *map
};

LoadedFile load_safetensors(const std::string& path);

}  // namespace xc2::io
