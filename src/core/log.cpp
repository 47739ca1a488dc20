#include "core/log.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <mutex>

namespace xc2 {
namespace {

LogLevel initial_level() {
  const char* v = std::getenv("XC2_LOG_LEVEL");
  if (v == nullptr) return LogLevel::Warn;
  if (!std::strcmp(v, "debug")) return LogLevel::Debug;
  if (!std::strcmp(v, "info")) return LogLevel::Info;
  if (!std::strcmp(v, "error")) return LogLevel::Error;
  if (!std::strcmp(v, "quiet")) return LogLevel::Quiet;
  return LogLevel::Warn;
}

std::atomic<int>& level_ref() {
  static std::atomic<int> level{static_cast<int>(initial_level())};
  return level;
}

}  // namespace

void set_log_level(LogLevel level) { level_ref().store(static_cast<int>(level)); }
LogLevel log_level() { return static_cast<LogLevel>(level_ref().load()); }

void log_message(LogLevel level, const std::string& msg) {
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  const char* tag = level == LogLevel::Warn ? "xc2: warning: " : level == LogLevel::Error ? "xc2: error: " : "xc2: ";
  std::cerr << tag << msg << '\n';
}

}  // namespace xc2
