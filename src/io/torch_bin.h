// PyTorch checkpoints as torch.save (>= 1.6) writes them: a stored zip archive holding
//   <prefix>/data.pkl       the pickled state dict (see pickle.h)
//   <prefix>/data/<key>     one raw little-endian storage per key
//   <prefix>/version, <prefix>/byteorder ("little"; "big" is rejected), ...
// Tensors become zero-copy views into the storages.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "io/pickle.h"
#include "io/safetensors.h"

namespace xc2::io {

// Parses the archive in [data, data + size) and returns its tensors in state-dict order.
// file_name (a base name) goes into every TensorView::file and every error message.
// Errors: Error{Io} for corrupt or truncated input; Error{Unsupported} for legacy (pre-1.6) files,
// big-endian archives, compressed entries, dtypes other than F32/F16/BF16, non-contiguous tensors
// and pickle globals outside the whitelist.
std::vector<TensorView> parse_torch_bin(const uint8_t* data, size_t size, const std::string& file_name,
                                        const PickleLimits& limits = {});

LoadedFile load_torch_bin(const std::string& path);

}  // namespace xc2::io
