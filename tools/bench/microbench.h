// Microbenchmarks of this machine's limits, the denominators of the GEMM roofline (library xc2_microbench,
// used by xc2_gemm_bench and `xc2 bench`). Every function uses all pool.size() threads (pass a ThreadPool(1)
// for one thread), touches its buffers first, and reports the best of `reps` timed runs. GB = 1e9 bytes,
// GFLOP = 1e9 flops.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

#include "core/thread_pool.h"
#include "cpu/gemm.h"

namespace xc2::bench {

// STREAM-like plain streaming read: each thread sums its contiguous share of a `bytes` buffer (choose it
// much larger than the last-level cache, e.g. 1 GiB) with vector loads, as 4 concurrent sequential
// streams (the quarters of its share). Returns bytes read / s.
double measure_read_bandwidth_gbs(ThreadPool& pool, size_t bytes = size_t{1} << 30, int reps = 5);
// The same read over a caller-owned buffer (already written; ideally 64-byte aligned), so it can be interleaved
// with other timings without allocating: n_floats is rounded down to a multiple of 64.
double measure_read_bandwidth_gbs(ThreadPool& pool, const float* buf, size_t n_floats, int reps);

// n floats, 4 KiB-aligned (a std::vector's data sits 16 bytes past a page: every 64-byte load of a read split
// across two lines), each thread first-touching (writing) the share measure_read_bandwidth_gbs() reads on it;
// null when out of memory.
std::unique_ptr<float, void (*)(void*)> aligned_floats(ThreadPool& pool, size_t n);

// The streaming read's buffer made (aligned_floats) once and read again on each gbs(): measure_read_bandwidth_gbs(
// pool, bytes, reps) without the allocation and first touch (about 2.6 s of page faults per GiB on the dev VM), so
// a roofline can be measured right next to the run it judges.
class ReadProbe {
 public:
  explicit ReadProbe(ThreadPool& pool, size_t bytes = size_t{1} << 30);
  double gbs(int reps = 5);

 private:
  ThreadPool& pool_;
  std::unique_ptr<float, void (*)(void*)> buf_;
  size_t n_ = 0;
};

// One pass over a list of buffers in order, each split across the threads, a barrier after each span marked so
// (one pool.run per group of spans, as a decode step runs its linears), each thread reading its share of a buffer
// as 2 sequential streams (its halves) with integer adds (any bit pattern; no floating-point assists). The bytes
// past the last whole 64-byte line of a buffer are not read (nor counted). Returns the bytes read / s of the pass.
struct ReadSpan {
  const void* data;
  size_t bytes;
  bool barrier_after = true;
};
double read_buffers_gbs(ThreadPool& pool, const std::vector<ReadSpan>& spans);

// memcpy of `bytes` from one buffer to another, split across threads; counts read + written bytes
// (2 * bytes / s, STREAM's "Copy" convention; write-allocate traffic, if any, is not counted).
double measure_copy_bandwidth_gbs(ThreadPool& pool, size_t bytes = size_t{1} << 29, int reps = 5);

// Peak f32 FMA rate with the instructions the GEMM micro-kernel uses for `isa` (Auto: what gemm() runs):
// AVX-512: vfmadd231ps zmm, 24 independent accumulator chains (the 12x32 tile); AVX2: ymm, 12 chains
// (the 6x16 tile); scalar: 4-wide, as the compiler emits. 1 FMA lane = 2 flops.
double measure_fma_peak_gflops(ThreadPool& pool, kernels::cpu::GemmIsa isa = kernels::cpu::GemmIsa::Auto,
                               int reps = 5);

}  // namespace xc2::bench
