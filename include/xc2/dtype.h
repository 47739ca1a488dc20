// Element types and devices.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace xc2 {

enum class DType : uint8_t { F32, F16, BF16 };

enum class Device : uint8_t { Cpu, Cuda };

size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);   // "F32", "F16", "BF16" (safetensors spelling)
const char* device_name(Device device);  // "cpu", "cuda"

}  // namespace xc2
