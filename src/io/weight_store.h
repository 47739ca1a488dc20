// Strict, name-based access to a checkpoint's tensors, used to build the model.
//   get(name, shape) -> the tensor, or Error{NotFound} naming tensor and folder,
//                       or Error{ShapeMismatch}: "tensor 'X' in FILE has shape [a, b], expected [c, d]"
//   check_all_used() -> Error{ShapeMismatch} listing tensors nobody asked for (another model's folder)
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "io/checkpoint.h"

namespace xc2::io {

class WeightStore {
 public:
  WeightStore(const Checkpoint& checkpoint, std::string model_dir);

  // Float tensors (F32, F16, BF16); an I32 tensor is a ShapeMismatch. The int32 variants want I32 (GPTQ).
  const TensorView& get(const std::string& name, const std::vector<int64_t>& shape);
  const TensorView* get_optional(const std::string& name, const std::vector<int64_t>& shape);
  const TensorView& get_int32(const std::string& name, const std::vector<int64_t>& shape);
  const TensorView* get_optional_int32(const std::string& name, const std::vector<int64_t>& shape);
  // Marks a tensor as known but unused (e.g. vit post_layernorm), so check_all_used accepts it.
  void ignore(const std::string& name);
  // Throws if the checkpoint holds tensors that were neither fetched nor ignored.
  void check_all_used() const;

  const Checkpoint& checkpoint() const { return checkpoint_; }

 private:
  const Checkpoint& checkpoint_;
  std::string model_dir_;
  std::set<std::string> used_;
  const TensorView* find(const std::string& name, const std::vector<int64_t>& shape, bool int32);
  const TensorView& need(const std::string& name, const std::vector<int64_t>& shape, bool int32);
};

}  // namespace xc2::io
