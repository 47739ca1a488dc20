// xc2::Error: the one exception type of the library. Each carries an ErrorCode that the CLI maps to
// an exit status (see README, "Exit codes"). Library code never calls exit/abort/assert.
#pragma once

#include <stdexcept>
#include <string>

namespace xc2 {

enum class ErrorCode {
  InvalidArgument,  // bad option value, bad prompt, wrong number of images        -> exit 2
  Unsupported,      // a feature or format xc2 does not handle                     -> exit 2
  NotFound,         // missing file or tensor                                      -> exit 3
  ShapeMismatch,    // tensor shape/dtype not what the config implies              -> exit 3
  Io,               // unreadable, truncated or corrupt file                       -> exit 3
  Cuda,             // CUDA runtime / cuBLAS failure                               -> exit 4
  Internal,         // a broken invariant (a bug)                                  -> exit 4
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
