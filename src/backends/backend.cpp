// Backend selection. The CUDA factory lives in cuda_backend.cpp when xc2 is built with CUDA.
#include "backends/backend.h"

#include "core/check.h"
#include "xc2/build_config.h"

namespace xc2 {

#if !XC2_WITH_CUDA
std::unique_ptr<Backend> make_cuda_backend(int) {
  XC2_THROW(Unsupported, "this xc2 was built without CUDA (rebuild with -DXC2_WITH_CUDA=ON)");
}
std::unique_ptr<Backend> make_cuda_backend(int, DType) {
  XC2_THROW(Unsupported, "this xc2 was built without CUDA (rebuild with -DXC2_WITH_CUDA=ON)");
}
bool cuda_device_available() { return false; }
#endif

// Device-decode defaults: backends without a device-resident decode path (the CPU) report Unsupported.
namespace {
[[noreturn]] void no_device_decode(const Backend& be, const char* op) {
  XC2_THROW(Unsupported, "backend '", be.name(), "' has no device-resident decode op ", op);
}
}  // namespace

IntBuffer Backend::ints(int64_t) { no_device_decode(*this, "ints"); }
void Backend::write_ints(IntBuffer&, const std::vector<int32_t>&) { no_device_decode(*this, "write_ints"); }
std::vector<int32_t> Backend::read_ints(const IntBuffer&, int64_t) { no_device_decode(*this, "read_ints"); }
void Backend::embedding_at(const Tensor&, const IntBuffer&, Tensor&) { no_device_decode(*this, "embedding_at"); }
void Backend::split_qkv_at(const Tensor&, int64_t, int64_t, int64_t, Tensor&, Tensor&, Tensor&, const IntBuffer&) {
  no_device_decode(*this, "split_qkv_at");
}
void Backend::rope_at(Tensor&, int64_t, int64_t, int64_t, const IntBuffer&, bool, double, int64_t) {
  no_device_decode(*this, "rope_at");
}
void Backend::attention_at(const Tensor&, const Tensor&, const Tensor&, int64_t, int64_t, int64_t, const IntBuffer&,
                           float, Tensor&) {
  no_device_decode(*this, "attention_at");
}
void Backend::select_greedy(const Tensor&, const IntBuffer&, float, IntBuffer&) {
  no_device_decode(*this, "select_greedy");
}
void Backend::select_candidates(const Tensor&, const IntBuffer&, float, float, int, IntBuffer&) {
  no_device_decode(*this, "select_candidates");
}
void Backend::mark_seen(IntBuffer&, const IntBuffer&) { no_device_decode(*this, "mark_seen"); }
void Backend::add_to(IntBuffer&, int32_t) { no_device_decode(*this, "add_to"); }
void Backend::graph_begin() { no_device_decode(*this, "graph_begin"); }
GraphHandle Backend::graph_end() { no_device_decode(*this, "graph_end"); }
void Backend::graph_launch(const GraphHandle&) { no_device_decode(*this, "graph_launch"); }

}  // namespace xc2
