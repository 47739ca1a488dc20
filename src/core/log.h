// Logging to stderr. Level from the CLI (-v/-q) or XC2_LOG_LEVEL (debug, info, warn, error, quiet).
#pragma once

#include <sstream>
#include <string>

namespace xc2 {

enum class LogLevel { Debug = 0, Info = 1, Warn = 2, Error = 3, Quiet = 4 };

void set_log_level(LogLevel level);
LogLevel log_level();
void log_message(LogLevel level, const std::string& msg);

}  // namespace xc2

#define XC2_LOG_AT(level, ...)                                                        \
  do {                                                                                \
    if (::xc2::log_level() <= ::xc2::LogLevel::level) {                               \
      std::ostringstream xc2_os_;                                                     \
      xc2_os_ << __VA_ARGS__;                                                         \
      ::xc2::log_message(::xc2::LogLevel::level, xc2_os_.str());                      \
    }                                                                                 \
  } while (0)
#define XC2_LOG_DEBUG(...) XC2_LOG_AT(Debug, __VA_ARGS__)
#define XC2_LOG_INFO(...) XC2_LOG_AT(Info, __VA_ARGS__)
#define XC2_LOG_WARN(...) XC2_LOG_AT(Warn, __VA_ARGS__)
