// xc2::Error helpers and dtype names.
#include <cstdlib>
#include <cstring>

#include "core/check.h"
#include "core/env.h"
#include "xc2/dtype.h"
#include "xc2/error.h"

namespace xc2 {

const char* error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::InvalidArgument: return "invalid argument";
    case ErrorCode::Unsupported: return "unsupported";
    case ErrorCode::NotFound: return "not found";
    case ErrorCode::ShapeMismatch: return "shape mismatch";
    case ErrorCode::Io: return "i/o";
    case ErrorCode::Cuda: return "cuda";
    case ErrorCode::Internal: return "internal";
  }
  return "unknown";
}

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::I32: return 4;
  }
  return 0;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::I32: return "I32";
  }
  return "?";
}

const char* device_name(Device device) { return device == Device::Cuda ? "cuda" : "cpu"; }

namespace detail {

// The message users see is `msg`; file:line is appended only when XC2_DEBUG_ERRORS is set, so CLI
// errors stay one readable line while developers can still find the throw site.
void throw_error(ErrorCode code, const char* file, int line, const std::string& msg) {
  static const bool debug = env_flag("XC2_DEBUG_ERRORS", false);
  if (debug) {
    const char* base = std::strrchr(file, '/');
    throw Error(code, msg + " [" + (base ? base + 1 : file) + ":" + std::to_string(line) + "]");
  }
  throw Error(code, msg);
}

}  // namespace detail
}  // namespace xc2
