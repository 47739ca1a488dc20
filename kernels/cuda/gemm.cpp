// LtGemm (kernels/cuda/gemm.h): cuBLASLt plans cached per shape.
#include "cuda/gemm.h"

#include "core/check.h"
#include "core/log.h"
#include "cuda/cuda_kernels.h"

namespace xc2::kernels::cuda {
namespace {

#define XC2_LT_CHECK(expr)                                                                              \
  do {                                                                                                  \
    const cublasStatus_t xc2_st_ = (expr);                                                              \
    if (xc2_st_ != CUBLAS_STATUS_SUCCESS)                                                               \
      XC2_THROW(Cuda, "cuBLASLt call failed: ", #expr, ": ", cublasLtGetStatusName(xc2_st_), ": ",     \
                cublasLtGetStatusString(xc2_st_));                                                      \
  } while (0)

cudaDataType_t cuda_type(DType d) {
  switch (d) {
    case DType::F32: return CUDA_R_32F;
    case DType::F16: return CUDA_R_16F;
    case DType::BF16: return CUDA_R_16BF;
    case DType::I32: break;
  }
  return CUDA_R_32F;
}

int alignment(const void* p, int64_t ld_bytes) {
  const uintptr_t v = reinterpret_cast<uintptr_t>(p) | static_cast<uintptr_t>(ld_bytes);
  for (int a = 16; a > 1; a /= 2)
    if ((v & static_cast<uintptr_t>(a - 1)) == 0) return a;
  return 1;
}

}  // namespace

LtGemm::LtGemm() { XC2_LT_CHECK(cublasLtCreate(&handle_)); }

LtGemm::~LtGemm() {
  for (auto& [key, p] : plans_) {
    if (p.a) cublasLtMatrixLayoutDestroy(p.a);
    if (p.b) cublasLtMatrixLayoutDestroy(p.b);
    if (p.c) cublasLtMatrixLayoutDestroy(p.c);
    if (p.desc) cublasLtMatmulDescDestroy(p.desc);
  }
  if (handle_) cublasLtDestroy(handle_);
}

LtGemm::Plan& LtGemm::plan(const Key& key, const void* bias) {
  auto it = plans_.find(key);
  if (it != plans_.end()) return it->second;
  const auto [m, n, k, dt_i, has_bias, al_x, al_w, al_y] = key;
  const cudaDataType_t t = cuda_type(static_cast<DType>(dt_i));
  Plan p;
  XC2_LT_CHECK(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t op_t = CUBLAS_OP_T, op_n = CUBLAS_OP_N;
  XC2_LT_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_t, sizeof(op_t)));
  XC2_LT_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_n, sizeof(op_n)));
  XC2_LT_CHECK(cublasLtMatrixLayoutCreate(&p.a, t, static_cast<uint64_t>(k), static_cast<uint64_t>(n), k));
  XC2_LT_CHECK(cublasLtMatrixLayoutCreate(&p.b, t, static_cast<uint64_t>(k), static_cast<uint64_t>(m), k));
  XC2_LT_CHECK(cublasLtMatrixLayoutCreate(&p.c, t, static_cast<uint64_t>(n), static_cast<uint64_t>(m), n));

  cublasLtMatmulPreference_t pref = nullptr;
  XC2_LT_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = workspace_bytes_;
  XC2_LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  const uint32_t ax = static_cast<uint32_t>(al_x), aw = static_cast<uint32_t>(al_w), ay = static_cast<uint32_t>(al_y);
  XC2_LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aw, sizeof(aw)));
  XC2_LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ax, sizeof(ax)));
  XC2_LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ay, sizeof(ay)));
  XC2_LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ay, sizeof(ay)));

  auto heuristic = [&](cublasLtMatmulHeuristicResult_t& r) {
    int found = 0;
    const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(handle_, p.desc, p.a, p.b, p.c, p.c, pref, 1, &r, &found);
    return st == CUBLAS_STATUS_SUCCESS && found > 0;
  };
  cublasLtMatmulHeuristicResult_t res{};
  bool ok = false;
  if (has_bias) {
    const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    XC2_LT_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
    XC2_LT_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
    ok = heuristic(res);
    p.bias_epilogue = ok;
    if (!ok) {
      const cublasLtEpilogue_t none = CUBLASLT_EPILOGUE_DEFAULT;
      XC2_LT_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &none, sizeof(none)));
    }
  }
  if (!ok) ok = heuristic(res);
  cublasLtMatmulPreferenceDestroy(pref);
  if (!ok) {
    cublasLtMatrixLayoutDestroy(p.a);
    cublasLtMatrixLayoutDestroy(p.b);
    cublasLtMatrixLayoutDestroy(p.c);
    cublasLtMatmulDescDestroy(p.desc);
    p = Plan{};
    p.simple = true;
    XC2_LOG_DEBUG("cuBLASLt has no algorithm for linear m=" << m << " n=" << n << " k=" << k << " dtype "
                  << dtype_name(static_cast<DType>(dt_i)) << " (alignments x " << al_x << ", w " << al_w << ", y "
                  << al_y << "): the plain kernel computes it");
    return plans_.emplace(key, p).first->second;
  }
  p.algo = res.algo;
  return plans_.emplace(key, p).first->second;
}

void LtGemm::linear(const void* x, const void* w, const void* bias, void* y, int64_t m, int64_t n, int64_t k,
                    bool accumulate, DType dtype, cudaStream_t stream) {
  if (m <= 0 || n <= 0) return;
  const int64_t es = static_cast<int64_t>(dtype_size(dtype));
  if (k == 0) {  // y = (accumulate ? y : 0) + bias
    if (!accumulate) {
      const cudaError_t e = cudaMemsetAsync(y, 0, static_cast<size_t>(m * n * es), stream);
      if (e != cudaSuccess) XC2_THROW(Cuda, "cudaMemsetAsync: ", cudaGetErrorString(e));
    }
    if (bias) add_bias_rows(y, bias, m, n, dtype, stream);
    return;
  }
  const Key key{m, n, k, static_cast<int>(dtype), bias != nullptr, alignment(x, k * es), alignment(w, k * es),
                alignment(y, n * es)};
  Plan& p = plan(key, bias);
  if (p.simple) {
    linear_simple(x, w, bias, y, m, n, k, accumulate, dtype, stream);
    return;
  }
  if (bias && p.bias_epilogue)
    XC2_LT_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  XC2_LT_CHECK(cublasLtMatmul(handle_, p.desc, &alpha, w, p.a, x, p.b, &beta, y, p.c, y, p.c, &p.algo, workspace_,
                              workspace_bytes_, stream));
  if (bias && !p.bias_epilogue) add_bias_rows(y, bias, m, n, dtype, stream);
}

}  // namespace xc2::kernels::cuda
