// Tensor: a shape, a dtype, a device and a pointer to contiguous row-major memory.
// Everything in xc2 is row-major: for shape [a, b, c] the element (i, j, l) is at (i*b + j)*c + l.
// A Tensor either owns its memory (through `owner`) or views memory someone else keeps alive
// (a mapped checkpoint, a KV cache). Copies are shallow.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "xc2/dtype.h"

namespace xc2 {

struct Tensor {
  DType dtype = DType::F32;
  Device device = Device::Cpu;
  std::vector<int64_t> shape;
  void* data = nullptr;
  std::shared_ptr<void> owner;

  bool defined() const { return data != nullptr || numel() == 0; }
  int64_t numel() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  int64_t dim(int i) const;  // negative i counts from the end
  int rank() const { return static_cast<int>(shape.size()); }
  int64_t rows() const { return shape.empty() ? 1 : shape[0]; }
  int64_t row_numel() const;  // product of shape[1:]
  std::string shape_str() const;

  // Rows [begin, begin + count) along the first axis (a view sharing the owner).
  Tensor rows(int64_t begin, int64_t count) const;
  // Same memory, another shape with the same element count.
  Tensor reshape(const std::vector<int64_t>& new_shape) const;

  template <typename T>
  T* ptr() const {
    return static_cast<T*>(data);
  }

  // A new CPU tensor (64-byte aligned, uninitialised).
  static Tensor empty_cpu(const std::vector<int64_t>& shape, DType dtype = DType::F32);
  // A non-owning view.
  static Tensor view(void* data, const std::vector<int64_t>& shape, DType dtype, Device device = Device::Cpu);
};

}  // namespace xc2
