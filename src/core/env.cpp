#include "core/env.h"

#include <cstdlib>
#include <cstring>

namespace xc2 {

bool env_flag(const char* name, bool def) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == 0) return def;
  return !(std::strcmp(v, "0") == 0 || std::strcmp(v, "false") == 0 || std::strcmp(v, "off") == 0);
}

}  // namespace xc2
