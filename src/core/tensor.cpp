#include "core/tensor.h"

#include <cstdlib>
#include <cstring>
#include <sstream>

#include "core/check.h"

namespace xc2 {

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

int64_t Tensor::dim(int i) const {
  const int r = rank();
  if (i < 0) i += r;
  XC2_CHECK(i >= 0 && i < r, Internal, "tensor dim ", i, " out of range for shape ", shape_str());
  return shape[static_cast<size_t>(i)];
}

int64_t Tensor::row_numel() const {
  int64_t n = 1;
  for (size_t i = 1; i < shape.size(); ++i) n *= shape[i];
  return n;
}

std::string Tensor::shape_str() const {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << ']';
  return os.str();
}

Tensor Tensor::rows(int64_t begin, int64_t count) const {
  XC2_CHECK(!shape.empty() && begin >= 0 && count >= 0 && begin + count <= shape[0], Internal,
            "row range [", begin, ", ", begin + count, ") out of bounds for shape ", shape_str());
  Tensor t = *this;
  t.shape[0] = count;
  t.data = static_cast<char*>(data) + static_cast<size_t>(begin * row_numel()) * dtype_size(dtype);
  return t;
}

Tensor Tensor::reshape(const std::vector<int64_t>& new_shape) const {
  Tensor t = *this;
  t.shape = new_shape;
  XC2_CHECK(t.numel() == numel(), Internal, "cannot reshape ", shape_str(), " to ", t.shape_str());
  return t;
}

Tensor Tensor::empty_cpu(const std::vector<int64_t>& shape, DType dtype) {
  Tensor t;
  t.dtype = dtype;
  t.device = Device::Cpu;
  t.shape = shape;
  for (int64_t d : shape) XC2_CHECK(d >= 0, Internal, "negative tensor dimension in ", t.shape_str());
  const size_t bytes = t.nbytes();
  const size_t alloc = ((bytes + 63) / 64) * 64;
  void* p = alloc ? std::aligned_alloc(64, alloc) : nullptr;
  XC2_CHECK(alloc == 0 || p != nullptr, Internal, "out of memory allocating ", bytes, " bytes for a tensor ",
            t.shape_str());
  t.data = p;
  t.owner = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  return t;
}

Tensor Tensor::view(void* data, const std::vector<int64_t>& shape, DType dtype, Device device) {
  Tensor t;
  t.data = data;
  t.shape = shape;
  t.dtype = dtype;
  t.device = device;
  return t;
}

}  // namespace xc2
