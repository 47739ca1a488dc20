// The CUDA emulator: xc2's CUDA backend and kernels (kernels/cuda, src/backends/cuda_backend.cpp) built with the host
// compiler and run on the CPU, so that the `cuda`-labelled tests exercise that code on machines without a GPU
// (-DXC2_CUDA_EMULATOR=ON; tools/run_tests.sh runs it in CI). It checks the code's logic (indexing, layouts, the
// order of operations, the launch configurations, the cuBLASLt descriptors, the graph capture), not its speed, and
// not what only the hardware decides (memory model, scheduling, instruction rounding); a GPU run stays the proof.
//
// What it models:
//   - a kernel launch: every block in turn (x fastest), each thread of a block a fiber on its own 64 KiB stack
//     (guard page below) switched by a few instructions; __syncthreads() waits for every thread of the block that
//     has not exited, __syncwarp() / __shfl_xor_sync() for the warp's lanes (all 32 must be alive and named in the
//     mask; a partial mask is not modelled: every warp barrier waits for all the warp's live lanes, which is what
//     xc2's kernels use). A barrier that can never complete (threads of a block waiting at different kinds of
//     barrier, a shuffle with an exited lane) is a kernel fault: reported on stderr, and the launch's error
//     (cudaErrorLaunchFailure) is returned by the next synchronising call, as on a GPU. The threads of a block
//     run in a shuffled order (fixed seed), so code that reads another thread's shared-memory writes without a
//     barrier sees stale values;
//   - launch limits: at most 1024 threads per block, grid y and z at most 65535, dynamic shared memory above 48 KiB
//     only after cudaFuncSetAttribute(MaxDynamicSharedMemorySize) and never above 227 KiB (H100): otherwise the
//     launch fails with cudaErrorInvalidConfiguration / cudaErrorInvalidValue, reported by cudaGetLastError();
//   - memory: cudaMalloc'd blocks are host memory of exactly the size asked for (so that a sanitizer build,
//     -DXC2_SANITIZE=ON, catches kernels' accesses past a buffer; the fiber switches are declared to
//     AddressSanitizer), filled with 0xFF bytes (NaN as floats; blocks up to 16 MiB) so that reading what was
//     never written shows; cudaMemcpy* check that their pointers lie in device or host
//     memory as `kind` says; kernels' pointer arguments must be null, device memory or cudaMallocHost memory;
//   - streams run in order at once; a capture (cudaStreamBeginCapture) records the launches, copies and memsets
//     and runs nothing; cudaGraphLaunch replays them; synchronising a capturing stream fails and invalidates it;
//   - cuBLASLt: cublasLtMatmul over column-major layouts with TRANSA / TRANSB, f32 accumulation in k order, alpha,
//     beta, the BIAS epilogue, F32 / F16 / BF16 (tests/cuda_emu/cublaslt.cpp); XC2_CUDA_EMU_LT=none makes the
//     heuristic find no algorithm (the backend's fallback kernel then runs);
//   - nvcuda::wmma 16x16x16 fragments (load, fill, mma, store; f32 accumulation), each warp-synchronous.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

namespace xc2emu {

// Whether p lies in memory a kernel may read (device memory, cudaMallocHost memory) or is null.
bool device_accessible(const void* p);
// Records a kernel fault or launch error (the launch's error code and a message on stderr).
void launch_error(cudaError_t e, const char* what);

// Runs `body` as the grid's threads now, or records it when `stream` is capturing. Returns false (after
// launch_error) for a configuration the device refuses.
void launch_closure(const void* kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                    std::function<void()> body);

// Host work in stream order (the emulated cuBLASLt's matmul): now, or recorded when `stream` is capturing.
void enqueue_host_work(cudaStream_t stream, std::function<void()> op);

template <typename T>
inline bool arg_ok(const T& a) {
  if constexpr (std::is_pointer_v<T>) return device_accessible(static_cast<const void*>(a));
  return true;
}

template <typename... P, typename... A>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "kernel launched with the wrong number of arguments");
  std::tuple<std::decay_t<P>...> t(std::forward<A>(args)...);  // copied at launch, as the driver does
  bool ok = true;
  std::apply([&](const auto&... a) { ((ok = ok && arg_ok(a)), ...); }, t);
  if (!ok) {
    launch_error(cudaErrorInvalidValue, "a kernel argument points to memory the device cannot access (host memory?)");
    return;
  }
  launch_closure(reinterpret_cast<const void*>(kernel), grid, block, smem, stream,
                 [kernel, t]() mutable { std::apply(kernel, t); });
}

// ---- device side (used through cuda_emu_device.h) ----------------------------------------------------------
uint3 thread_idx();
uint3 block_idx();
dim3 block_dim();
dim3 grid_dim();
unsigned char* dynamic_smem();
void sync_block();
void sync_warp(unsigned mask);
// All lanes of the warp exchange 8 bytes: returns lane src's value (a warp-synchronous step).
uint64_t exchange(unsigned mask, uint64_t mine, int src_lane);
int lane_id();

}  // namespace xc2emu
