// The CUDA emulator's cuBLASLt (see cuda_emu.h): the calls xc2's LtGemm makes, with cuBLASLt's documented meaning.
//   Layouts are column-major (rows, cols, ld); op(X) = X or X^T by TRANSA / TRANSB; D = alpha * op(A) op(B) +
//   beta * C (+ bias[row] with the BIAS epilogue), f32 accumulation over k in order, the result rounded to D's type
//   (to nearest even). A, B, C and D of one type (F32, F16 or BF16), CUBLAS_COMPUTE_32F, scale type F32.
//   cublasLtMatmulAlgoGetHeuristic checks the shapes (op(A) rows = D rows, op(B) cols = D cols, inner dimensions
//   equal, ld >= rows) and finds one algorithm, or none with XC2_CUDA_EMU_LT=none.
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cuda_emu.h"

namespace {

// Matrix layout data[]: 0 type, 1 rows, 2 cols, 3 ld.  Matmul desc data[]: 0 compute type, 1 scale type, 2 transa,
// 3 transb, 4 epilogue, 5 bias pointer.
struct Layout {
  cudaDataType_t type;
  uint64_t rows, cols;
  int64_t ld;
};
Layout layout(cublasLtMatrixLayout_t l) {
  return {static_cast<cudaDataType_t>(l->data[0]), l->data[1], l->data[2], static_cast<int64_t>(l->data[3])};
}

float load(const void* p, cudaDataType_t t, int64_t i) {
  switch (t) {
    case CUDA_R_32F: return static_cast<const float*>(p)[i];
    case CUDA_R_16F: return __half2float(static_cast<const __half*>(p)[i]);
    case CUDA_R_16BF: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    default: return NAN;
  }
}
void store(void* p, cudaDataType_t t, int64_t i, float v) {
  switch (t) {
    case CUDA_R_32F: static_cast<float*>(p)[i] = v; break;
    case CUDA_R_16F: static_cast<__half*>(p)[i] = __float2half_rn(v); break;
    case CUDA_R_16BF: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v); break;
    default: break;
  }
}
bool supported(cudaDataType_t t) { return t == CUDA_R_32F || t == CUDA_R_16F || t == CUDA_R_16BF; }

// op(X) dimensions.
uint64_t op_rows(const Layout& l, int64_t op) { return op == CUBLAS_OP_N ? l.rows : l.cols; }
uint64_t op_cols(const Layout& l, int64_t op) { return op == CUBLAS_OP_N ? l.cols : l.rows; }

bool shapes_ok(cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c,
               cublasLtMatrixLayout_t dd) {
  const Layout A = layout(a), B = layout(b), C = layout(c), D = layout(dd);
  const int64_t ta = static_cast<int64_t>(d->data[2]), tb = static_cast<int64_t>(d->data[3]);
  for (const Layout* l : {&A, &B, &C, &D})
    if (!supported(l->type) || l->ld < static_cast<int64_t>(l->rows) || l->ld < 1) return false;
  if (A.type != B.type || A.type != C.type || A.type != D.type) return false;
  if (d->data[0] != CUBLAS_COMPUTE_32F || d->data[1] != CUDA_R_32F) return false;
  return op_rows(A, ta) == D.rows && op_cols(B, tb) == D.cols && op_cols(A, ta) == op_rows(B, tb) &&
         C.rows == D.rows && C.cols == D.cols;
}

}  // namespace

extern "C" {

cublasStatus_t cublasLtCreate(cublasLtHandle_t* h) {
  *h = reinterpret_cast<cublasLtHandle_t>(new int(1));
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t h) {
  delete reinterpret_cast<int*>(h);
  return CUBLAS_STATUS_SUCCESS;
}
const char* cublasLtGetStatusName(cublasStatus_t s) {
  return s == CUBLAS_STATUS_SUCCESS ? "CUBLAS_STATUS_SUCCESS" : "CUBLAS_STATUS_ERROR (xc2 CUDA emulator)";
}
const char* cublasLtGetStatusString(cublasStatus_t s) {
  return s == CUBLAS_STATUS_SUCCESS ? "success" : "the emulated cuBLASLt refused the call";
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* l, cudaDataType type, uint64_t rows, uint64_t cols,
                                          int64_t ld) {
  *l = new cublasLtMatrixLayoutOpaque_t{};
  (*l)->data[0] = static_cast<uint64_t>(type);
  (*l)->data[1] = rows;
  (*l)->data[2] = cols;
  (*l)->data[3] = static_cast<uint64_t>(ld);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(const cublasLtMatrixLayout_t l) {
  delete l;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* d, cublasComputeType_t compute, cudaDataType_t scale) {
  *d = new cublasLtMatmulDescOpaque_t{};
  (*d)->data[0] = static_cast<uint64_t>(compute);
  (*d)->data[1] = static_cast<uint64_t>(scale);
  (*d)->data[2] = CUBLAS_OP_N;
  (*d)->data[3] = CUBLAS_OP_N;
  (*d)->data[4] = CUBLASLT_EPILOGUE_DEFAULT;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(const cublasLtMatmulDesc_t d) {
  delete d;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr,
                                              const void* buf, size_t size) {
  switch (attr) {
    case CUBLASLT_MATMUL_DESC_TRANSA:
    case CUBLASLT_MATMUL_DESC_TRANSB: {
      if (size != sizeof(int32_t)) return CUBLAS_STATUS_INVALID_VALUE;
      int32_t op;
      std::memcpy(&op, buf, 4);
      if (op != CUBLAS_OP_N && op != CUBLAS_OP_T) return CUBLAS_STATUS_NOT_SUPPORTED;
      d->data[attr == CUBLASLT_MATMUL_DESC_TRANSA ? 2 : 3] = static_cast<uint64_t>(op);
      return CUBLAS_STATUS_SUCCESS;
    }
    case CUBLASLT_MATMUL_DESC_EPILOGUE: {
      if (size != sizeof(uint32_t)) return CUBLAS_STATUS_INVALID_VALUE;
      uint32_t e;
      std::memcpy(&e, buf, 4);
      if (e != CUBLASLT_EPILOGUE_DEFAULT && e != CUBLASLT_EPILOGUE_BIAS) return CUBLAS_STATUS_NOT_SUPPORTED;
      d->data[4] = e;
      return CUBLAS_STATUS_SUCCESS;
    }
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: {
      if (size != sizeof(void*)) return CUBLAS_STATUS_INVALID_VALUE;
      std::memcpy(&d->data[5], buf, sizeof(void*));
      return CUBLAS_STATUS_SUCCESS;
    }
    default: return CUBLAS_STATUS_NOT_SUPPORTED;
  }
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* p) {
  *p = new cublasLtMatmulPreferenceOpaque_t{};
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(const cublasLtMatmulPreference_t p) {
  delete p;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t, cublasLtMatmulPreferenceAttributes_t,
                                                    const void*, size_t) {
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t a,
                                              cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c,
                                              cublasLtMatrixLayout_t dd, cublasLtMatmulPreference_t, int requested,
                                              cublasLtMatmulHeuristicResult_t results[], int* found) {
  *found = 0;
  if (requested < 1) return CUBLAS_STATUS_INVALID_VALUE;
  if (!shapes_ok(d, a, b, c, dd)) return CUBLAS_STATUS_NOT_SUPPORTED;
  const char* env = std::getenv("XC2_CUDA_EMU_LT");
  if (env && std::string(env) == "none") return CUBLAS_STATUS_NOT_SUPPORTED;
  std::memset(&results[0], 0, sizeof(results[0]));
  results[0].algo.data[0] = 0x78633265u;  // any value: one algorithm
  results[0].state = CUBLAS_STATUS_SUCCESS;
  results[0].wavesCount = 1.0f;
  *found = 1;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t desc, const void* alpha, const void* A,
                              cublasLtMatrixLayout_t adesc, const void* B, cublasLtMatrixLayout_t bdesc,
                              const void* beta, const void* C, cublasLtMatrixLayout_t cdesc, void* D,
                              cublasLtMatrixLayout_t ddesc, const cublasLtMatmulAlgo_t* algo, void*, size_t,
                              cudaStream_t stream) {
  if (!algo || !shapes_ok(desc, adesc, bdesc, cdesc, ddesc)) return CUBLAS_STATUS_INVALID_VALUE;
  if (!xc2emu::device_accessible(A) || !xc2emu::device_accessible(B) || !xc2emu::device_accessible(C) ||
      !xc2emu::device_accessible(D))
    return CUBLAS_STATUS_INVALID_VALUE;
  const Layout la = layout(adesc), lb = layout(bdesc), lc = layout(cdesc), ld = layout(ddesc);
  const int64_t ta = static_cast<int64_t>(desc->data[2]), tb = static_cast<int64_t>(desc->data[3]);
  const bool bias_epi = desc->data[4] == CUBLASLT_EPILOGUE_BIAS;
  const void* bias = nullptr;
  std::memcpy(&bias, &desc->data[5], sizeof(void*));
  if (bias_epi && (!bias || !xc2emu::device_accessible(bias))) return CUBLAS_STATUS_INVALID_VALUE;
  float al, be;
  std::memcpy(&al, alpha, 4);  // CUBLASLT_POINTER_MODE_HOST: read at the call
  std::memcpy(&be, beta, 4);
  // Enqueued like any stream work (recorded when the stream is capturing).
  cudaStream_t s = stream;
  auto run = [=]() {
    const int64_t M = static_cast<int64_t>(ld.rows), N = static_cast<int64_t>(ld.cols);
    const int64_t K = static_cast<int64_t>(op_cols(la, ta));
    std::vector<float> opa(static_cast<size_t>(M * K)), opb(static_cast<size_t>(K * N));
    for (int64_t i = 0; i < M; ++i)
      for (int64_t l = 0; l < K; ++l)
        opa[static_cast<size_t>(i * K + l)] = load(A, la.type, ta == CUBLAS_OP_N ? i + l * la.ld : l + i * la.ld);
    for (int64_t l = 0; l < K; ++l)
      for (int64_t j = 0; j < N; ++j)
        opb[static_cast<size_t>(j * K + l)] = load(B, lb.type, tb == CUBLAS_OP_N ? l + j * lb.ld : j + l * lb.ld);
    for (int64_t j = 0; j < N; ++j)
      for (int64_t i = 0; i < M; ++i) {
        float acc = 0.0f;
        const float* pa = &opa[static_cast<size_t>(i * K)];
        const float* pb = &opb[static_cast<size_t>(j * K)];
        for (int64_t l = 0; l < K; ++l) acc = std::fma(pa[l], pb[l], acc);
        float v = al * acc;
        if (be != 0.0f) v += be * load(C, lc.type, i + j * lc.ld);
        if (bias_epi) v += load(bias, ld.type, i);
        store(D, ld.type, i + j * ld.ld, v);
      }
  };
  xc2emu::enqueue_host_work(s, run);
  return CUBLAS_STATUS_SUCCESS;
}

}  // extern "C"
