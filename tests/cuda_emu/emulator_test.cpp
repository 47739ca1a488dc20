// The CUDA emulator's own checks (built only with -DXC2_CUDA_EMULATOR=ON, label `cuda`): that it runs kernels as a
// GPU would where xc2's kernels depend on it (block and warp barriers, shuffles, shared memory, dynamic shared memory
// limits, graph capture and replay, cuBLASLt's column-major meaning) and that it reports the faults it is there to
// find (a barrier that cannot complete, a shuffle with an exited lane, a missing barrier before reading another
// thread's shared-memory write, copies with the wrong kind, host pointers given to a kernel).
#include <cublasLt.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include "cuda_emu_device.h"

namespace {

using ::xc2emu::launch;

// ---- kernels ----

__global__ void block_reverse(const int* in, int* out) {
  __shared__ int buf[256];
  const int t = threadIdx.x;
  buf[t] = in[blockIdx.x * blockDim.x + t];
  __syncthreads();
  out[blockIdx.x * blockDim.x + t] = buf[blockDim.x - 1 - t];
}

// The same without the barrier: the race a GPU may or may not show; the emulator's shuffled order shows it.
__global__ void block_reverse_racy(const int* in, int* out) {
  __shared__ int buf[256];
  const int t = threadIdx.x;
  buf[t] = in[blockIdx.x * blockDim.x + t];
  out[blockIdx.x * blockDim.x + t] = buf[blockDim.x - 1 - t];
}

__global__ void warp_sums(const float* in, float* out) {
  float v = in[blockIdx.x * blockDim.x + threadIdx.x];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if ((threadIdx.x & 31) == 0) out[(blockIdx.x * blockDim.x + threadIdx.x) / 32] = v;
}

// Half a warp waits for the block while the other half waits for the whole warp: neither can complete.
__global__ void divergent_syncthreads(int* out) {
  if (threadIdx.x < 16) __syncthreads();
  else __syncwarp();
  out[threadIdx.x] = 1;
}

__global__ void shuffle_after_exit(float* out) {
  if (threadIdx.x == 5) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
}

__global__ void dynamic_smem_sum(const float* in, float* out) {
  float* s = reinterpret_cast<float*>(::xc2emu::dynamic_smem());
  s[threadIdx.x] = in[threadIdx.x];
  __syncthreads();
  if (threadIdx.x == 0) {
    float t = 0;
    for (unsigned i = 0; i < blockDim.x; ++i) t += s[i];
    *out = t;
  }
}

__global__ void add_one(float* x, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] += 1.0f;
}

// ---- helpers ----

template <typename T>
T* device_copy(const std::vector<T>& h) {
  void* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, h.size() * sizeof(T)), cudaSuccess);
  EXPECT_EQ(cudaMemcpyAsync(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice, nullptr), cudaSuccess);
  return static_cast<T*>(p);
}
template <typename T>
std::vector<T> host_copy(const T* d, size_t n) {
  std::vector<T> h(n);
  EXPECT_EQ(cudaMemcpyAsync(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost, nullptr), cudaSuccess);
  EXPECT_EQ(cudaStreamSynchronize(nullptr), cudaSuccess);
  return h;
}

// A kernel fault is sticky in the emulator as on a GPU, so the fault tests run in a child process.
#define EXPECT_FAULT(stmt, msg)                                                              \
  EXPECT_EXIT(                                                                               \
      {                                                                                      \
        stmt;                                                                                \
        std::exit(cudaStreamSynchronize(nullptr) == cudaSuccess ? 0 : 7);                    \
      },                                                                                     \
      ::testing::ExitedWithCode(7), msg)

TEST(CudaEmulator, BarriersAndSharedMemory) {
  std::vector<int> in(512);
  std::iota(in.begin(), in.end(), 0);
  int* din = device_copy(in);
  int* dout = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&dout), 512 * sizeof(int)), cudaSuccess);
  launch(block_reverse, dim3(2), dim3(256), 0, nullptr, din, dout);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  const std::vector<int> out = host_copy(dout, 512);
  for (int i = 0; i < 512; ++i) EXPECT_EQ(out[i], (i / 256) * 256 + 255 - i % 256) << i;

  launch(block_reverse_racy, dim3(2), dim3(256), 0, nullptr, din, dout);
  const std::vector<int> racy = host_copy(dout, 512);
  int wrong = 0;
  for (int i = 0; i < 512; ++i) wrong += racy[i] != out[i];
  EXPECT_GT(wrong, 0) << "reading another thread's shared write without a barrier went unnoticed";
  cudaFree(din);
  cudaFree(dout);
}

TEST(CudaEmulator, WarpShuffles) {
  std::vector<float> in(128);
  for (int i = 0; i < 128; ++i) in[i] = static_cast<float>(i);
  float* din = device_copy(in);
  float* dout = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&dout), 4 * sizeof(float)), cudaSuccess);
  launch(warp_sums, dim3(1), dim3(128), 0, nullptr, din, dout);
  const std::vector<float> out = host_copy(dout, 4);
  for (int w = 0; w < 4; ++w) EXPECT_EQ(out[w], static_cast<float>(32 * 32 * w + 31 * 32 / 2)) << w;
  cudaFree(din);
  cudaFree(dout);
}

TEST(CudaEmulatorDeathTest, BarrierThatCannotCompleteIsAFault) {
  int* d = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&d), 32 * sizeof(int)), cudaSuccess);
  EXPECT_FAULT(launch(divergent_syncthreads, dim3(1), dim3(32), 0, nullptr, d), "deadlock");
}

TEST(CudaEmulatorDeathTest, ShuffleWithAnExitedLaneIsAFault) {
  float* d = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&d), 32 * sizeof(float)), cudaSuccess);
  EXPECT_FAULT(launch(shuffle_after_exit, dim3(1), dim3(32), 0, nullptr, d), "lane 5, which has exited");
}

#if defined(__SANITIZE_ADDRESS__)
// In a sanitizer build (-DXC2_SANITIZE=ON) device memory is exactly what was asked for: a kernel writing past the
// end of its buffer is caught where it happens.
TEST(CudaEmulatorDeathTest, AddressSanitizerCatchesAKernelOverrun) {
  float* d = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&d), 100 * sizeof(float)), cudaSuccess);
  EXPECT_DEATH(launch(add_one, dim3(1), dim3(128), 0, nullptr, d, 101), "heap-buffer-overflow");
  cudaFree(d);
}
#endif

TEST(CudaEmulator, LaunchLimits) {
  float* d = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&d), 1024 * sizeof(float)), cudaSuccess);
  launch(add_one, dim3(1), dim3(2048), 0, nullptr, d, 1024);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // read and cleared
  // Dynamic shared memory above 48 KiB needs the opt-in, and never above 227 KiB.
  std::vector<float> ones(256, 1.0f);
  float* din = device_copy(ones);
  launch(dynamic_smem_sum, dim3(1), dim3(256), 64 << 10, nullptr, din, d);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  EXPECT_EQ(cudaFuncSetAttribute(dynamic_smem_sum, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 << 10),
            cudaSuccess);
  launch(dynamic_smem_sum, dim3(1), dim3(256), 64 << 10, nullptr, din, d);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_EQ(host_copy(d, 1)[0], 256.0f);
  EXPECT_NE(cudaFuncSetAttribute(dynamic_smem_sum, cudaFuncAttributeMaxDynamicSharedMemorySize, 228 << 10),
            cudaSuccess);
  (void)cudaGetLastError();
  cudaFree(din);
  cudaFree(d);
}

TEST(CudaEmulator, MemoryKindsAreChecked) {
  std::vector<float> host(16, 2.0f);
  float* d = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&d), 16 * sizeof(float)), cudaSuccess);
  // Reversed direction, and a copy running past the allocation.
  EXPECT_EQ(cudaMemcpyAsync(host.data(), d, 64, cudaMemcpyHostToDevice, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpyAsync(d, host.data(), 128, cudaMemcpyHostToDevice, nullptr), cudaErrorInvalidValue);
  (void)cudaGetLastError();
  // A kernel given a host pointer.
  launch(add_one, dim3(1), dim3(16), 0, nullptr, host.data(), 16);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  EXPECT_EQ(host[0], 2.0f);
  // Unwritten device memory reads as NaN.
  EXPECT_TRUE(std::isnan(host_copy(d, 1)[0]));
  cudaFree(d);
}

TEST(CudaEmulator, CaptureRecordsAndReplays) {
  cudaStream_t s = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  std::vector<float> zeros(100, 0.0f);
  float* d = device_copy(zeros);
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed), cudaSuccess);
  launch(add_one, dim3(4), dim3(32), 0, s, d, 100);
  EXPECT_EQ(host_copy(d, 1)[0], 0.0f);  // recorded, not run (the copy on the default stream is not captured)
  EXPECT_EQ(cudaStreamSynchronize(s), cudaErrorStreamCaptureUnsupported);
  cudaGraph_t g = nullptr;
  EXPECT_EQ(cudaStreamEndCapture(s, &g), cudaErrorStreamCaptureInvalidated);  // the synchronise invalidated it
  (void)cudaGetLastError();

  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed), cudaSuccess);
  launch(add_one, dim3(4), dim3(32), 0, s, d, 100);
  ASSERT_EQ(cudaStreamEndCapture(s, &g), cudaSuccess);
  cudaGraphExec_t e = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&e, g, 0), cudaSuccess);
  for (int i = 0; i < 3; ++i) ASSERT_EQ(cudaGraphLaunch(e, s), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  for (float v : host_copy(d, 100)) EXPECT_EQ(v, 3.0f);
  cudaGraphExecDestroy(e);
  cudaGraphDestroy(g);
  cudaStreamDestroy(s);
  cudaFree(d);
}

// D = A^T B in column-major terms, as LtGemm uses it: w [n, k] row-major is the column-major k x n matrix A.
TEST(CudaEmulator, CublasLtColumnMajorTransAAndBias) {
  const int m = 3, n = 4, k = 5;
  std::vector<float> x(m * k), w(n * k), bias(n), y(m * n, 1.0f);
  for (int i = 0; i < m * k; ++i) x[i] = static_cast<float>(i % 7) - 3;
  for (int i = 0; i < n * k; ++i) w[i] = static_cast<float>(i % 5) - 1;
  for (int i = 0; i < n; ++i) bias[i] = 0.5f * static_cast<float>(i);
  float *dx = device_copy(x), *dw = device_copy(w), *db = device_copy(bias), *dy = device_copy(y);
  cublasLtHandle_t h = nullptr;
  ASSERT_EQ(cublasLtCreate(&h), CUBLAS_STATUS_SUCCESS);
  cublasLtMatmulDesc_t desc = nullptr;
  ASSERT_EQ(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), CUBLAS_STATUS_SUCCESS);
  const cublasOperation_t t = CUBLAS_OP_T;
  const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
  const void* bp = db;
  ASSERT_EQ(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof(t)), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)),
            CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof(bp)),
            CUBLAS_STATUS_SUCCESS);
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr, bad = nullptr;
  ASSERT_EQ(cublasLtMatrixLayoutCreate(&a, CUDA_R_32F, k, n, k), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cublasLtMatrixLayoutCreate(&b, CUDA_R_32F, k, m, k), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cublasLtMatrixLayoutCreate(&c, CUDA_R_32F, n, m, n), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cublasLtMatrixLayoutCreate(&bad, CUDA_R_32F, m, n, m), CUBLAS_STATUS_SUCCESS);
  cublasLtMatmulPreference_t pref = nullptr;
  ASSERT_EQ(cublasLtMatmulPreferenceCreate(&pref), CUBLAS_STATUS_SUCCESS);
  cublasLtMatmulHeuristicResult_t r{};
  int found = 0;
  EXPECT_NE(cublasLtMatmulAlgoGetHeuristic(h, desc, a, b, bad, bad, pref, 1, &r, &found), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(found, 0);  // D of the wrong shape
  ASSERT_EQ(cublasLtMatmulAlgoGetHeuristic(h, desc, a, b, c, c, pref, 1, &r, &found), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(found, 1);
  const float alpha = 2.0f, beta = 1.0f;
  ASSERT_EQ(cublasLtMatmul(h, desc, &alpha, dw, a, dx, b, &beta, dy, c, dy, c, &r.algo, nullptr, 0, nullptr),
            CUBLAS_STATUS_SUCCESS);
  const std::vector<float> got = host_copy(dy, static_cast<size_t>(m * n));
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      float s = 0;
      for (int l = 0; l < k; ++l) s += x[i * k + l] * w[j * k + l];
      EXPECT_EQ(got[i * n + j], 2.0f * s + 1.0f + bias[j]) << i << "," << j;
    }
  cublasLtMatmulPreferenceDestroy(pref);
  for (auto l : {a, b, c, bad}) cublasLtMatrixLayoutDestroy(l);
  cublasLtMatmulDescDestroy(desc);
  cublasLtDestroy(h);
  for (float* p : {dx, dw, db, dy}) cudaFree(p);
}

}  // namespace
