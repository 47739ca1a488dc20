// Backend selection. The CUDA factory lives in cuda_backend.cpp when xc2 is built with CUDA.
#include "backends/backend.h"

#include "core/check.h"
#include "xc2/build_config.h"

namespace xc2 {

#if !XC2_WITH_CUDA
std::unique_ptr<Backend> make_cuda_backend(int) {
  XC2_THROW(Unsupported, "this xc2 was built without CUDA (rebuild with -DXC2_WITH_CUDA=ON)");
}
bool cuda_device_available() { return false; }
#endif

}  // namespace xc2
