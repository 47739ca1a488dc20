#include "core/env.h"

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

namespace xc2 {

bool env_flag(const char* name, bool def) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == 0) return def;
  return !(std::strcmp(v, "0") == 0 || std::strcmp(v, "false") == 0 || std::strcmp(v, "off") == 0);
}

size_t mem_available_bytes() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  size_t kb = 0;
  std::string unit;
  while (f >> key >> kb >> unit)
    if (key == "MemAvailable:") return kb * 1024;
  return 0;
}

}  // namespace xc2
