// xc2::Error: the one exception type of the library. Each carries an ErrorCode that the CLI maps to
// an exit status (tools/xc2/main.cpp, README "Exit codes"): any error while loading the model folder
// exits 3; otherwise InvalidArgument, Unsupported, NotFound and Io exit 2 (bad input: an option, an
// image, a prompt), ShapeMismatch 3, Cuda and Internal 4. Library code never calls exit/abort/assert.
#pragma once

#include <stdexcept>
#include <string>

namespace xc2 {

enum class ErrorCode {
  InvalidArgument,  // bad option value, bad prompt, wrong number of images
  Unsupported,      // a feature or format xc2 does not handle
  NotFound,         // missing file or tensor
  ShapeMismatch,    // tensor shape/dtype not what the config implies
  Io,               // unreadable, truncated or corrupt file
  Cuda,             // CUDA runtime / cuBLAS failure
  Internal,         // a broken invariant (a bug)
};

const char* error_code_name(ErrorCode code);

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

}  // namespace xc2
