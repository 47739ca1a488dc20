// Attention with grouped KV heads (model-spec §5): query head h uses KV head h / G, G = n_heads / n_kv_heads.
//   s_j = scale * (q . k_j) for visible j (j < n_kv; causal: j <= q_pos0 + i), softmax in f32, out = sum p_j v_j.
//
// Two kernels, both online-softmax (running max m, running sum l, rescaled accumulator):
//
// 1. attn_split_kernel<T, EPL> (any dtype, head_dim = 32 * EPL, EPL in {2, 4}): the decode kernel and the
//    f32 path. Grid (n_kv_heads, n_q, n_splits), 128 threads (4 warps). A block owns one KV head, one query
//    row and one slice of the keys; it holds the G query vectors of that KV head's group in registers (lane
//    l keeps dims [l * EPL, l * EPL + EPL)), so each K and V row is read once for all G heads. Warps take
//    keys round-robin; dot products finish with xor shuffles. The 4 warps merge in shared memory; with
//    one split the block writes the output, otherwise f32 partials (acc, m, l) that attn_combine_kernel
//    merges (one block per (query, head)). With pos_dev set, q_pos0 and n_kv are read on the device so a
//    captured decode step replays with a growing cache; the slice length is derived there too.
//
// 2. attn_prefill_wmma<T, D> (f16/bf16, D in {64, 128}): tiled flash-style prefill on tensor cores
//    (nvcuda::wmma 16x16x16, f32 accumulate). Grid (ceil(n_q / 64), n_heads), 128 threads; warp w owns
//    query rows [16w, 16w + 16) of the block's 64-row tile, its Q fragments stay in registers. Per 64-key
//    tile: K and V tiles -> shared memory (16-byte loads, zero rows past n_kv); S = Q K^T into shared f32;
//    two lanes per row do the masked online softmax in f32 and write P (rounded to T) and rescale the f32
//    output rows kept in shared memory; O += P V on tensor cores (accumulator loaded from and stored back
//    to shared memory, so rows can be rescaled without knowing the fragment layout). Causal blocks stop
//    at their last visible key; the heaviest (last) query tiles are scheduled first.
//    Shared memory (D = 128): K 17 KB + V 17 KB + S 17 KB + P 9 KB + O 33 KB = 93 KB: two blocks per H100 SM.
#if !XC2_CUDA_EMULATOR
#include <mma.h>
#endif

#include "cuda/common.cuh"
#include "cuda/cuda_kernels.h"

namespace xc2::kernels::cuda {
namespace {

constexpr int kMaxGroup = 8;  // query heads per KV head handled by the split kernel
constexpr int kSplitWarps = 4;

template <typename T>
struct AttnArgs {
  const T* q;
  int64_t q_stride;
  const T* k;
  const T* v;
  int64_t kv_stride;
  T* out;
  int64_t out_stride;
  float* part_acc;  // [n_q, n_heads, n_splits, head_dim]
  float* part_ml;   // [n_q, n_heads, n_splits, 2]
  int n_q, n_kv, n_heads, n_kv_heads, group, q_pos0;
  const int32_t* pos_dev;
  int causal;
  float scale;
  int n_splits;
};

template <int EPL, typename T>
__device__ __forceinline__ void load_lane(const T* p, float (&dst)[EPL]) {
#pragma unroll
  for (int e = 0; e < EPL; ++e) dst[e] = to_f(p[e]);
}

// ---- split-KV kernel ----------------------------------------------------------------------------------

template <typename T, int EPL>
__global__ void __launch_bounds__(kSplitWarps * 32) attn_split_kernel(AttnArgs<T> a) {
  constexpr int D = EPL * 32;
  const int kvh = blockIdx.x, qi = blockIdx.y, split = blockIdx.z;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int G = a.group;
  int q_pos0 = a.q_pos0, n_kv = a.n_kv;
  if (a.pos_dev) {
    q_pos0 = *a.pos_dev;
    n_kv = min(q_pos0 + a.n_q, a.n_kv);  // a.n_kv: the cache's capacity (the host checks the position fits)
  }
  const int kv_end = a.causal ? min(n_kv, q_pos0 + qi + 1) : n_kv;
  const int chunk = (kv_end + a.n_splits - 1) / a.n_splits;
  const int j0 = split * chunk, j1 = min(kv_end, j0 + chunk);

  float qr[kMaxGroup][EPL], acc[kMaxGroup][EPL], m[kMaxGroup], l[kMaxGroup];
#pragma unroll
  for (int g = 0; g < kMaxGroup; ++g) {
    m[g] = -INFINITY;
    l[g] = 0;
#pragma unroll
    for (int e = 0; e < EPL; ++e) acc[g][e] = 0, qr[g][e] = 0;
    if (g < G) load_lane<EPL>(a.q + qi * a.q_stride + (kvh * G + g) * D + lane * EPL, qr[g]);
  }

  for (int j = j0 + warp; j < j1; j += kSplitWarps) {
    float kv[EPL], vv[EPL];
    load_lane<EPL>(a.k + j * a.kv_stride + kvh * D + lane * EPL, kv);
    load_lane<EPL>(a.v + j * a.kv_stride + kvh * D + lane * EPL, vv);
#pragma unroll
    for (int g = 0; g < kMaxGroup; ++g) {
      if (g >= G) continue;
      float s = 0;
#pragma unroll
      for (int e = 0; e < EPL; ++e) s += qr[g][e] * kv[e];
      s = warp_sum(s) * a.scale;
      const float m_new = fmaxf(m[g], s);
      const float alpha = expf(m[g] - m_new);  // m = -inf at first: 0
      const float p = expf(s - m_new);
      l[g] = l[g] * alpha + p;
#pragma unroll
      for (int e = 0; e < EPL; ++e) acc[g][e] = acc[g][e] * alpha + p * vv[e];
      m[g] = m_new;
    }
  }

  // Merge the warps: shared [warp][g] statistics and [warp][g][D] accumulators.
  __shared__ float sm_m[kSplitWarps][kMaxGroup], sm_l[kSplitWarps][kMaxGroup];
  __shared__ float sm_acc[kSplitWarps][kMaxGroup][D];
#pragma unroll
  for (int g = 0; g < kMaxGroup; ++g) {
    if (g >= G) continue;
    if (lane == 0) sm_m[warp][g] = m[g], sm_l[warp][g] = l[g];
#pragma unroll
    for (int e = 0; e < EPL; ++e) sm_acc[warp][g][lane * EPL + e] = acc[g][e];
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < G * D; idx += blockDim.x) {
    const int g = idx / D, d = idx % D, h = kvh * G + g;
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < kSplitWarps; ++w) M = fmaxf(M, sm_m[w][g]);
    float L = 0, A = 0;
    if (M != -INFINITY) {
#pragma unroll
      for (int w = 0; w < kSplitWarps; ++w) {
        const float f = expf(sm_m[w][g] - M);
        L += sm_l[w][g] * f;
        A += sm_acc[w][g][d] * f;
      }
    }
    if (a.n_splits == 1) {
      a.out[qi * a.out_stride + h * D + d] = from_f<T>(L > 0 ? A / L : 0.0f);
    } else {
      const int64_t slot = (static_cast<int64_t>(qi) * a.n_heads + h) * a.n_splits + split;
      a.part_acc[slot * D + d] = A;
      if (d == 0) a.part_ml[slot * 2] = M, a.part_ml[slot * 2 + 1] = L;
    }
  }
}

// One block per (query, head), head_dim threads.
template <typename T>
__global__ void attn_combine_kernel(AttnArgs<T> a, int head_dim) {
  const int qi = blockIdx.x / a.n_heads, h = blockIdx.x % a.n_heads, d = threadIdx.x;
  const int64_t slot0 = (static_cast<int64_t>(qi) * a.n_heads + h) * a.n_splits;
  float M = -INFINITY;
  for (int s = 0; s < a.n_splits; ++s) M = fmaxf(M, a.part_ml[(slot0 + s) * 2]);
  float L = 0, A = 0;
  if (M != -INFINITY) {
    for (int s = 0; s < a.n_splits; ++s) {
      const float ms = a.part_ml[(slot0 + s) * 2];
      if (ms == -INFINITY) continue;
      const float f = expf(ms - M);
      L += a.part_ml[(slot0 + s) * 2 + 1] * f;
      A += a.part_acc[(slot0 + s) * head_dim + d] * f;
    }
  }
  a.out[qi * a.out_stride + h * head_dim + d] = from_f<T>(L > 0 ? A / L : 0.0f);
}

// ---- tensor-core prefill ------------------------------------------------------------------------------

constexpr int kBq = 64, kBk = 64, kPrefillWarps = 4;

template <int D>
struct PrefillSmem {
  static constexpr int kLdKV = D + 8;      // T elements
  static constexpr int kLdS = kBk + 4;     // f32
  static constexpr int kLdP = kBk + 8;     // T elements
  static constexpr int kLdO = D + 4;       // f32
  static constexpr size_t align(size_t x) { return (x + 127) / 128 * 128; }
  static constexpr size_t kK = 0;
  static constexpr size_t kV = align(kK + size_t(kBk) * kLdKV * 2);
  static constexpr size_t kS = align(kV + size_t(kBk) * kLdKV * 2);
  static constexpr size_t kP = align(kS + size_t(kPrefillWarps) * 16 * kLdS * 4);
  static constexpr size_t kO = align(kP + size_t(kPrefillWarps) * 16 * kLdP * 2);
  static constexpr size_t kBytes = align(kO + size_t(kPrefillWarps) * 16 * kLdO * 4);
};

// Copies rows [r0, r0 + 64) of a [*, row_stride] matrix (head slice at col0, D wide) into shared memory
// with leading dimension ld; rows >= n_rows are zero. 16-byte vectors; 128 threads.
template <typename T, int D>
__device__ __forceinline__ void load_tile(T* dst, int ld, const T* src, int64_t row_stride, int r0, int n_rows) {
  constexpr int kVec = 8;  // T elements per 16 bytes
  constexpr int kPerRow = D / kVec;
  for (int idx = threadIdx.x; idx < 64 * kPerRow; idx += blockDim.x) {
    const int r = idx / kPerRow, c = (idx % kPerRow) * kVec;
    uint4 val = make_uint4(0, 0, 0, 0);
    if (r0 + r < n_rows) val = *reinterpret_cast<const uint4*>(src + static_cast<int64_t>(r0 + r) * row_stride + c);
    *reinterpret_cast<uint4*>(dst + r * ld + c) = val;
  }
}

template <typename T, int D>
__global__ void __launch_bounds__(kPrefillWarps * 32) attn_prefill_wmma(AttnArgs<T> a) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  using namespace nvcuda;
  using Smem = PrefillSmem<D>;
  XC2_DYNAMIC_SHARED(smem);
  T* sk = reinterpret_cast<T*>(smem + Smem::kK);
  T* sv = reinterpret_cast<T*>(smem + Smem::kV);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  float* ss = reinterpret_cast<float*>(smem + Smem::kS) + warp * 16 * Smem::kLdS;
  T* sp = reinterpret_cast<T*>(smem + Smem::kP) + warp * 16 * Smem::kLdP;
  float* so = reinterpret_cast<float*>(smem + Smem::kO) + warp * 16 * Smem::kLdO;

  const int n_qtiles = gridDim.x;
  const int qt = n_qtiles - 1 - blockIdx.x;  // heaviest causal tiles first
  const int h = blockIdx.y, kvh = h / a.group;
  const int q0 = qt * kBq;
  const T* qbase = a.q + static_cast<int64_t>(h) * D;
  const T* kbase = a.k + static_cast<int64_t>(kvh) * D;
  const T* vbase = a.v + static_cast<int64_t>(kvh) * D;

  // Q tile through the K buffer into registers.
  load_tile<T, D>(sk, Smem::kLdKV, qbase, a.q_stride, q0, a.n_q);
  __syncthreads();
  wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> qf[D / 16];
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) wmma::load_matrix_sync(qf[kk], sk + warp * 16 * Smem::kLdKV + kk * 16, Smem::kLdKV);
  for (int i = lane; i < 16 * Smem::kLdO; i += 32) so[i] = 0;

  // Softmax state: lane handles row r = lane / 2, columns [half * 32, half * 32 + 32).
  const int r = lane >> 1, half = lane & 1;
  const int qrow = q0 + warp * 16 + r;
  const int qpos = a.q_pos0 + qrow;
  float m_run = -INFINITY, l_run = 0;

  const int q_last = min(q0 + kBq, a.n_q) - 1;
  const int kv_stop = a.causal ? min(a.n_kv, a.q_pos0 + q_last + 1) : a.n_kv;

  for (int j0 = 0; j0 < kv_stop; j0 += kBk) {
    __syncthreads();  // everyone is done with the previous K/V tile (and the Q staging)
    load_tile<T, D>(sk, Smem::kLdKV, kbase, a.kv_stride, j0, a.n_kv);
    load_tile<T, D>(sv, Smem::kLdKV, vbase, a.kv_stride, j0, a.n_kv);
    __syncthreads();

    // S = Q K^T for this warp's 16 rows and 64 keys.
#pragma unroll
    for (int nb = 0; nb < kBk / 16; ++nb) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> c;
      wmma::fill_fragment(c, 0.0f);
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> kf;
        wmma::load_matrix_sync(kf, sk + nb * 16 * Smem::kLdKV + kk * 16, Smem::kLdKV);
        wmma::mma_sync(c, qf[kk], kf, c);
      }
      wmma::store_matrix_sync(ss + nb * 16, c, Smem::kLdS, wmma::mem_row_major);
    }
    __syncwarp();

    // Online softmax on rows, in f32.
    float sv_row[32];
    float mx = -INFINITY;
#pragma unroll
    for (int c = 0; c < 32; ++c) {
      const int j = j0 + half * 32 + c;
      const bool ok = j < a.n_kv && (!a.causal || j <= qpos) && qrow < a.n_q;
      const float s = ok ? ss[r * Smem::kLdS + half * 32 + c] * a.scale : -INFINITY;
      sv_row[c] = s;
      mx = fmaxf(mx, s);
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    const float m_new = fmaxf(m_run, mx);
    float alpha = 1.0f, sum = 0;
    if (m_new != -INFINITY) {
      alpha = expf(m_run - m_new);
#pragma unroll
      for (int c = 0; c < 32; ++c) {
        const float p = expf(sv_row[c] - m_new);
        sum += p;
        sp[r * Smem::kLdP + half * 32 + c] = from_f<T>(p);
      }
    } else {
#pragma unroll
      for (int c = 0; c < 32; ++c) sp[r * Smem::kLdP + half * 32 + c] = from_f<T>(0.0f);
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    l_run = l_run * alpha + sum;
    m_run = m_new;
    for (int c = half * (D / 2); c < (half + 1) * (D / 2); ++c) so[r * Smem::kLdO + c] *= alpha;
    __syncwarp();

    // O += P V.
#pragma unroll
    for (int nb = 0; nb < D / 16; ++nb) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> o;
      wmma::load_matrix_sync(o, so + nb * 16, Smem::kLdO, wmma::mem_row_major);
#pragma unroll
      for (int kk = 0; kk < kBk / 16; ++kk) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> pf;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> vf;
        wmma::load_matrix_sync(pf, sp + kk * 16, Smem::kLdP);
        wmma::load_matrix_sync(vf, sv + kk * 16 * Smem::kLdKV + nb * 16, Smem::kLdKV);
        wmma::mma_sync(o, pf, vf, o);
      }
      wmma::store_matrix_sync(so + nb * 16, o, Smem::kLdO, wmma::mem_row_major);
    }
    __syncwarp();
  }

  if (qrow < a.n_q) {
    const float inv = l_run > 0 ? 1.0f / l_run : 0.0f;
    T* orow = a.out + static_cast<int64_t>(qrow) * a.out_stride + h * D;
    for (int c = half * (D / 2); c < (half + 1) * (D / 2); ++c) orow[c] = from_f<T>(so[r * Smem::kLdO + c] * inv);
  }
#endif
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

template <typename T, int D>
void launch_prefill(const AttnArgs<T>& a, cudaStream_t stream) {
  using Smem = PrefillSmem<D>;
  static_assert(Smem::kBytes <= 227 * 1024, "prefill tile does not fit in shared memory");
  // Idempotent and cheap; done per launch so no static state is needed.
  const cudaError_t e = cudaFuncSetAttribute(attn_prefill_wmma<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             static_cast<int>(Smem::kBytes));
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    XC2_THROW(Cuda, "CUDA attention: cannot opt in to ", Smem::kBytes, " bytes of shared memory per block (head_dim ",
              D, "): ", cudaGetErrorString(e));
  }
  const dim3 grid(static_cast<unsigned>(ceil_div(a.n_q, kBq)), static_cast<unsigned>(a.n_heads));
  launch_kernel(attn_prefill_wmma<T, D>, grid, kPrefillWarps * 32, Smem::kBytes, stream, a);
}

template <typename T, int EPL>
void launch_split(const AttnArgs<T>& a, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(a.n_kv_heads), static_cast<unsigned>(a.n_q), static_cast<unsigned>(a.n_splits));
  launch_kernel(attn_split_kernel<T, EPL>, grid, kSplitWarps * 32, 0, stream, a);
  if (a.n_splits > 1) {
    launch_kernel(attn_combine_kernel<T>, static_cast<unsigned>(a.n_q * a.n_heads), EPL * 32, 0, stream, a, EPL * 32);
  }
}

bool use_tensor_cores(const AttentionArgs& p, const AttentionLaunch& l) {
  return l.allow_tensor_cores && p.dtype != DType::F32 && p.pos_dev == nullptr && p.n_q >= 16 &&
         (p.head_dim == 64 || p.head_dim == 128) && aligned16(p.q) && aligned16(p.k) && aligned16(p.v) &&
         p.q_stride % 8 == 0 && p.kv_stride % 8 == 0;
}

}  // namespace

bool attention_supported(int64_t head_dim) { return head_dim == 64 || head_dim == 128; }

int attention_splits(const AttentionArgs& p, const AttentionLaunch& l) {
  if (use_tensor_cores(p, l)) return 1;
  if (l.n_splits > 0) return l.n_splits;
  // Enough blocks for two waves of the SMs, each slice at least 32 keys.
  const int64_t blocks = std::max<int64_t>(1, p.n_kv_heads * p.n_q);
  const int64_t want = ceil_div(2 * static_cast<int64_t>(l.num_sms), blocks);
  const int64_t most = std::max<int64_t>(1, ceil_div(p.n_kv, 32));
  return static_cast<int>(std::clamp<int64_t>(want, 1, std::min<int64_t>(most, 64)));
}

size_t attention_workspace_bytes(const AttentionArgs& p, const AttentionLaunch& l) {
  const int s = attention_splits(p, l);
  if (s <= 1) return 0;
  return static_cast<size_t>(p.n_q * p.n_heads * s) * (static_cast<size_t>(p.head_dim) + 2) * sizeof(float);
}

void attention(const AttentionArgs& p, const AttentionLaunch& l, cudaStream_t stream) {
  if (p.n_q <= 0) return;
  XC2_CHECK(attention_supported(p.head_dim), Unsupported, "CUDA attention: head_dim ", p.head_dim,
            " is not supported (64 and 128 are)");
  XC2_CHECK(p.n_kv_heads > 0 && p.n_heads % p.n_kv_heads == 0 && p.n_heads / p.n_kv_heads <= kMaxGroup, Unsupported,
            "CUDA attention: ", p.n_heads, " query heads over ", p.n_kv_heads, " KV heads (at most ", kMaxGroup,
            " per KV head)");
  XC2_CHECK(p.n_q < (int64_t(1) << 31) && p.n_kv < (int64_t(1) << 31), InvalidArgument, "CUDA attention: too long");
  const int splits = attention_splits(p, l);
  XC2_CHECK(use_tensor_cores(p, l) || p.n_q <= 65535, Unsupported, "CUDA attention: ", p.n_q,
            " query rows in one call without the tensor-core kernel (at most 65535: the grid's y dimension)");
  XC2_CUDA_DISPATCH(p.dtype, T, {
    AttnArgs<T> a{};
    a.q = static_cast<const T*>(p.q);
    a.q_stride = p.q_stride;
    a.k = static_cast<const T*>(p.k);
    a.v = static_cast<const T*>(p.v);
    a.kv_stride = p.kv_stride;
    a.out = static_cast<T*>(p.out);
    a.out_stride = p.out_stride;
    a.n_q = static_cast<int>(p.n_q);
    a.n_kv = static_cast<int>(p.n_kv);
    a.n_heads = static_cast<int>(p.n_heads);
    a.n_kv_heads = static_cast<int>(p.n_kv_heads);
    a.group = static_cast<int>(p.n_heads / p.n_kv_heads);
    a.q_pos0 = static_cast<int>(p.q_pos0);
    a.pos_dev = p.pos_dev;
    a.causal = p.causal ? 1 : 0;
    a.scale = p.scale;
    a.n_splits = splits;
    if (splits > 1) {
      XC2_CHECK(l.workspace != nullptr, Internal, "CUDA attention: no workspace for ", splits, " splits");
      a.part_acc = static_cast<float*>(l.workspace);
      a.part_ml = a.part_acc + p.n_q * p.n_heads * splits * p.head_dim;
    }
    if (use_tensor_cores(p, l)) {
      if constexpr (std::is_same_v<T, float>) {
        XC2_THROW(Internal, "tensor-core attention asked for f32");
      } else {
        if (p.head_dim == 64) launch_prefill<T, 64>(a, stream);
        else launch_prefill<T, 128>(a, stream);
      }
    } else {
      if (p.head_dim == 64) launch_split<T, 2>(a, stream);
      else launch_split<T, 4>(a, stream);
    }
  });
  launch_check("attention");
}

}  // namespace xc2::kernels::cuda
