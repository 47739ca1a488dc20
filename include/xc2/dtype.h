// Element types and devices.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace xc2 {

// I32 appears only in checkpoints (GPTQ qweight, qzeros, g_idx); tensors and kernels are F32, F16 or BF16.
enum class DType : uint8_t { F32, F16, BF16, I32 };

enum class Device : uint8_t { Cpu, Cuda };

size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);   // "F32", "F16", "BF16", "I32" (safetensors spelling)
const char* device_name(Device device);  // "cpu", "cuda"

}  // namespace xc2
