// Error helpers. Every throw carries file:line so a message points at the check that fired.
//   XC2_THROW(code, a, b, ...)      throw xc2::Error(code, "a b ...")  (pieces streamed with <<)
//   XC2_CHECK(cond, code, ...)      throw unless cond
//   XC2_CHECK_EQ(a, b, code, ...)   throw unless a == b, printing both values
//   XC2_ASSERT(cond)                invariant; throws ErrorCode::Internal
#pragma once

#include <sstream>
#include <string>

#include "xc2/error.h"

namespace xc2::detail {

template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

[[noreturn]] void throw_error(ErrorCode code, const char* file, int line, const std::string& msg);

}  // namespace xc2::detail

#define XC2_THROW(code, ...) \
  ::xc2::detail::throw_error(::xc2::ErrorCode::code, __FILE__, __LINE__, ::xc2::detail::concat(__VA_ARGS__))

#define XC2_CHECK(cond, code, ...) \
  do {                             \
    if (!(cond)) XC2_THROW(code, __VA_ARGS__); \
  } while (0)

#define XC2_CHECK_EQ(a, b, code, ...)                                                       \
  do {                                                                                      \
    const auto& xc2_a_ = (a);                                                               \
    const auto& xc2_b_ = (b);                                                               \
    if (!(xc2_a_ == xc2_b_))                                                                \
      XC2_THROW(code, __VA_ARGS__, " (", #a, " = ", xc2_a_, ", ", #b, " = ", xc2_b_, ")"); \
  } while (0)

#define XC2_ASSERT(cond) \
  do {                   \
    if (!(cond)) XC2_THROW(Internal, "internal error: assertion failed: ", #cond); \
  } while (0)
