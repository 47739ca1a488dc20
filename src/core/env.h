// Environment switches (XC2_CUDA_GRAPHS=0, XC2_DEBUG_ERRORS=1, ...), read one way everywhere, and what the
// machine has free.
#pragma once

#include <cstddef>

namespace xc2 {

// The flag `name`: unset or empty -> def; "0", "false" or "off" -> false; anything else -> true.
bool env_flag(const char* name, bool def);

// MemAvailable of /proc/meminfo in bytes (0 when unknown).
size_t mem_available_bytes();

}  // namespace xc2
