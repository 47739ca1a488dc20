// Shared by the libFuzzer harnesses (tests/fuzz): run a parser on one input; xc2::Error is the expected way to
// refuse bad input, anything else (another exception, a crash, a sanitizer report) is a bug.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "xc2/error.h"

namespace xc2::fuzz {

template <typename F>
void expect_only_xc2_errors(F&& f) {
  try {
    f();
  } catch (const Error&) {
  }
}

inline std::string as_string(const uint8_t* data, size_t size) {
  return std::string(reinterpret_cast<const char*>(data), size);
}

}  // namespace xc2::fuzz
