// What the engine API leaves out, for benchmarks (`xc2 bench`): the device behind an Engine, its memory
// bandwidth and memory use, and the bytes a decode step reads. Reached through Engine::diagnostics():
//
//   auto engine = xc2::Engine::load({"models/xc2-shapes", "cuda"});
//   xc2::EngineDiagnostics diag = engine->diagnostics();   // valid while the engine lives
//   diag.reset_memory_peak();
//   engine->generate(request, options);
//   const uint64_t peak = diag.memory().peak;
#pragma once

#include <cstdint>
#include <string>

namespace xc2 {

class Engine;

// Device memory in bytes (all 0 on the CPU). needed: what xc2's tensors and recorded graphs hold now; peak:
// its maximum since load or reset_memory_peak(); cached: held by xc2's allocator on top, free for reuse;
// device_used / device_total: the whole device as the driver reports it (CUDA context and other processes
// included).
struct DeviceMemory {
  uint64_t needed = 0, peak = 0, cached = 0, device_used = 0, device_total = 0;
};

class EngineDiagnostics {
 public:
  std::string backend_name() const;  // "cpu (avx512, 2 threads, ...)", "cuda (NVIDIA H100 ...)"
  // Device-to-device copy of a large buffer, (bytes read + bytes written) per second in GB/s; 0 where the
  // backend does not measure it (the CPU: see tools/bench/microbench.h).
  double measure_copy_bandwidth_gbs();
  double peak_bandwidth_gbs() const;  // theoretical memory bandwidth in GB/s; 0 where unknown
  DeviceMemory memory() const;
  void reset_memory_peak();
  void synchronize();  // waits for the work queued on the device (before reading a clock)
  // Bytes one batch-1 decode step reads: the weights (decoder linears, packed when quantized, and norms, final
  // norm, output head, one embedding row, as the backend stores them) and, per cached position, the KV cache.
  uint64_t weight_bytes_per_token() const;
  uint64_t kv_bytes_per_position() const;
  // Whether generate() decodes by replaying a recorded graph (CUDA, unless XC2_DEVICE_DECODE=0 or
  // XC2_CUDA_GRAPHS=0).
  bool decode_uses_graphs();

 private:
  friend class Engine;
  explicit EngineDiagnostics(Engine& engine) : engine_(&engine) {}
  Engine* engine_;
};

// Whether a usable CUDA device (compute capability 8.0+) is present; false when built without CUDA.
bool cuda_device_available();

}  // namespace xc2
