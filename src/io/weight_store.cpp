// Strict name -> tensor lookup for model construction: every fetch checks the shape the config
// implies, and check_all_used() rejects tensors that no one fetched or ignored.
#include "io/weight_store.h"

#include <string>
#include <utility>
#include <vector>

#include "core/check.h"
#include "io/bytes.h"

namespace xc2::io {

WeightStore::WeightStore(const Checkpoint& checkpoint, std::string model_dir)
    : checkpoint_(checkpoint), model_dir_(std::move(model_dir)) {}

const TensorView* WeightStore::find(const std::string& name, const std::vector<int64_t>& shape, bool int32) {
  const TensorView* t = checkpoint_.find(name);
  if (t == nullptr) return nullptr;
  if (t->shape != shape) {
    XC2_THROW(ShapeMismatch, "tensor '", name, "' in ", t->file, " has shape ", t->shape_str(), ", expected ",
              detail::shape_to_string(shape));
  }
  if ((t->dtype == DType::I32) != int32) {
    XC2_THROW(ShapeMismatch, "tensor '", name, "' in ", t->file, " has dtype ", dtype_name(t->dtype), ", expected ",
              int32 ? "I32" : "a float dtype (F32, F16 or BF16)");
  }
  used_.insert(name);
  return t;
}

const TensorView* WeightStore::get_optional(const std::string& name, const std::vector<int64_t>& shape) {
  return find(name, shape, false);
}

const TensorView* WeightStore::get_optional_int32(const std::string& name, const std::vector<int64_t>& shape) {
  return find(name, shape, true);
}

const TensorView& WeightStore::get(const std::string& name, const std::vector<int64_t>& shape) {
  return need(name, shape, false);
}

const TensorView& WeightStore::get_int32(const std::string& name, const std::vector<int64_t>& shape) {
  return need(name, shape, true);
}

const TensorView& WeightStore::need(const std::string& name, const std::vector<int64_t>& shape, bool int32) {
  const TensorView* t = find(name, shape, int32);
  if (t == nullptr) {
    XC2_THROW(NotFound, "tensor '", name, "' not found in '", model_dir_, "' (is this an InternLM-XComposer2 folder?)");
  }
  return *t;
}

void WeightStore::ignore(const std::string& name) { used_.insert(name); }

void WeightStore::check_all_used() const {
  std::vector<const TensorView*> unused;
  for (const TensorView& t : checkpoint_.tensors()) {
    if (!used_.count(t.name)) unused.push_back(&t);
  }
  if (unused.empty()) return;
  std::string list;
  for (size_t k = 0; k < unused.size() && k < 5; ++k) {
    if (k) list += ", ";
    list += "'" + unused[k]->name + "' " + unused[k]->shape_str();
  }
  if (unused.size() > 5) list += ", ... (" + std::to_string(unused.size() - 5) + " more)";
  XC2_THROW(ShapeMismatch, "'", model_dir_, "' holds ", unused.size(), " unexpected tensor",
            unused.size() == 1 ? "" : "s", " (a checkpoint for another model or variant?): ", list);
}

}  // namespace xc2::io
