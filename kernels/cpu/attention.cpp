// Multi-head attention on the CPU, per head as two GEMMs around a row softmax:
//   S = Q_h . K_g^T          (gemm with the keys as the [n_kv, head_dim] "weight", row stride kv_stride)
//   S = softmax(S * scale)   (f32, masked to the causal prefix of each query)
//   O_h = S . V_g            (gemm against V_g transposed once per KV head into [head_dim, n_kv])
// Prefill: the threads split the (head, query block) units, each computed on one thread.
// Up to kAttentionRowsMaxQueries queries (decode steps) take a direct path instead: per KV head with its
// query heads together (keys and values read once per group, vector accumulators, the scores four keys at a time
// with software prefetch of the strided key rows) when head_dim is a multiple of 16 and the group size 1, 2, 4 or
// 8, else per head.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "core/check.h"
#include "cpu/cpu_kernels.h"
#include "cpu/gemm.h"
#include "cpu/vec16.h"

namespace xc2::kernels::cpu {
namespace {

// kernels::AttentionArgs with f32 pointers and positions resolved.
struct Args {
  const float* q;
  int64_t q_stride;
  const float* k;
  const float* v;
  int64_t kv_stride;
  float* out;
  int64_t out_stride;
  int64_t n_q, n_kv, n_heads, n_kv_heads, head_dim, q_pos0;
  bool causal;
  float scale;
};

// q . k in kLanes independent partial sums (one vector FMA per step instead of a chain of scalar adds,
// which strict IEEE order forbids the compiler to vectorise), then a fixed pairwise reduction.
constexpr int64_t kLanes = 16;
inline float dot(const float* q, const float* k, int64_t d) {
  float acc[kLanes] = {};
  int64_t c = 0;
  for (; c + kLanes <= d; c += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) acc[l] += q[c + l] * k[c + l];
  for (int64_t l = 0; c < d; ++c, ++l) acc[l] += q[c] * k[c];
  for (int64_t w = kLanes / 2; w > 0; w /= 2)
    for (int64_t l = 0; l < w; ++l) acc[l] += acc[l + w];
  return acc[0];
}

// V16, load16, exp16: cpu/vec16.h (16 floats in one zmm register where the target has them).
typedef float V8 __attribute__((vector_size(32)));
typedef float V4 __attribute__((vector_size(16)));
// The pairwise order of dot()'s reduction: lanes l and l + 8, then l and l + 4, l + 2, l + 1.
inline float hsum16(V16 v) {
  const V8 a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
               __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const V4 b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
  return (b[0] + b[2]) + (b[1] + b[3]);
}

typedef double D16 __attribute__((vector_size(128)));

// s[0, n_valid) <- softmax(s * scale), s[n_valid, n_total) <- 0. The sum in double, 16 lanes then pairwise.
XC2_MULTIVERSION
void softmax_row(float* s, int64_t n_valid, int64_t n_total, float scale) {
  float mx = -std::numeric_limits<float>::infinity();
  int64_t j = 0;
  if (n_valid >= 16) {
    V16 m = V16{} - std::numeric_limits<float>::infinity();
    for (; j + 16 <= n_valid; j += 16) {
      const V16 v = load16(s + j) * scale;
      std::memcpy(s + j, &v, sizeof(v));
      m = v > m ? v : m;
    }
    for (int l = 0; l < 16; ++l) mx = std::max(mx, m[l]);
  }
  for (; j < n_valid; ++j) {
    s[j] *= scale;
    mx = std::max(mx, s[j]);
  }
  D16 acc = {};
  j = 0;
  for (; j + 16 <= n_valid; j += 16) {
    const V16 e = exp16(load16(s + j) - mx);
    std::memcpy(s + j, &e, sizeof(e));
    acc += __builtin_convertvector(e, D16);
  }
  if (j < n_valid) {  // the tail through the same function, padded with -inf (exp: 0)
    V16 v = V16{} - std::numeric_limits<float>::infinity();
    for (int64_t l = 0; j + l < n_valid; ++l) v[l] = s[j + l] - mx;
    const V16 e = exp16(v);
    for (int64_t l = 0; j + l < n_valid; ++l) s[j + l] = e[l];
    acc += __builtin_convertvector(e, D16);
  }
  for (int w = 8; w > 0; w /= 2)
    for (int l = 0; l < w; ++l) acc[l] += acc[l + w];
  const float inv = static_cast<float>(1.0 / acc[0]);
  for (j = 0; j < n_valid; ++j) s[j] *= inv;
  for (j = n_valid; j < n_total; ++j) s[j] = 0.0f;
}

// Decode (a few queries): each head on its own, all heads in one pass over the pool. Scores are dot
// products with the keys in place, the output accumulates the value rows in place (no transposed copy
// of V, no GEMM set-up per head): one barrier per call instead of several per KV head.
XC2_MULTIVERSION
void attend_head_rows(const Args& a, int64_t h, float* s) {
  const int64_t d = a.head_dim;
  const int64_t g = h / (a.n_heads / a.n_kv_heads);
  for (int64_t i = 0; i < a.n_q; ++i) {
    const float* q = a.q + i * a.q_stride + h * d;
    const int64_t n_valid = a.causal ? std::min(a.n_kv, a.q_pos0 + i + 1) : a.n_kv;
    for (int64_t j = 0; j < n_valid; ++j) s[j] = dot(q, a.k + j * a.kv_stride + g * d, d);
    softmax_row(s, n_valid, n_valid, a.scale);
    float* o = a.out + i * a.out_stride + h * d;
    for (int64_t c = 0; c < d; ++c) o[c] = 0.0f;
    for (int64_t j = 0; j < n_valid; ++j) {
      const float* v = a.v + j * a.kv_stride + g * d;
      const float p = s[j];
      for (int64_t c = 0; c < d; ++c) o[c] += p * v[c];
    }
  }
}

// hsum16 of four vectors at once, in lanes: the same additions in the same pairs (lane l with l + 8, then l + 4,
// then (0 + 2) + (1 + 3)), so the same bits, with a fraction of the shuffles and no scalar extraction per sum.
// Always inlined, as score_keys.
__attribute__((always_inline)) inline V4 hsum16x4(V16 v0, V16 v1, V16 v2, V16 v3) {
  const V16 t0 = __builtin_shufflevector(v0, v1, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
                 __builtin_shufflevector(v0, v1, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
  const V16 t1 = __builtin_shufflevector(v2, v3, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
                 __builtin_shufflevector(v2, v3, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
  const V16 b = __builtin_shufflevector(t0, t1, 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27) +
                __builtin_shufflevector(t0, t1, 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
  const V16 c = b + __builtin_shufflevector(b, b, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
  const V16 e = c + __builtin_shufflevector(c, c, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
  return __builtin_shufflevector(e, e, 0, 4, 8, 12);
}

// The scores of R consecutive keys (the cache rows at k, k + kv_stride, ...; R = 4, or 2 for G = 8) for the G
// query heads at q, into s[h * n_kv + r]: each query chunk loaded once for the R keys, R * G independent 16-lane
// sums, reduced four at a time.
// Always inlined into the multiversioned caller (a separate function would be built for the baseline target).
template <int G, int R>
__attribute__((always_inline)) inline void score_keys(const float* q, const float* k, int64_t kv_stride, int64_t d,
                                                      float* s, int64_t n_kv) {
  V16 acc[R][G] = {};
  for (int64_t c = 0; c < d; c += kLanes) {
    V16 qc[G];
    for (int h = 0; h < G; ++h) qc[h] = load16(q + h * d + c);
    for (int r = 0; r < R; ++r) {
      const V16 kc = load16(k + r * kv_stride + c);
      for (int h = 0; h < G; ++h) acc[r][h] += qc[h] * kc;
    }
  }
  if constexpr (R == 4) {
    for (int h = 0; h < G; ++h) {
      const V4 o = hsum16x4(acc[0][h], acc[1][h], acc[2][h], acc[3][h]);
      std::memcpy(s + h * n_kv, &o, sizeof(o));
    }
  } else {
    for (int h = 0; h < G; h += 2) {
      const V4 o = hsum16x4(acc[0][h], acc[1][h], acc[0][h + 1], acc[1][h + 1]);
      s[h * n_kv] = o[0];
      s[h * n_kv + 1] = o[1];
      s[(h + 1) * n_kv] = o[2];
      s[(h + 1) * n_kv + 1] = o[3];
    }
  }
}

// Decode for one query and one KV head g with its G query heads (GQA), G a compile-time constant and head_dim a
// multiple of 16: each key and value row is read once for all G heads; the scores R keys at a time
// (score_keys), the G output rows in 64- or 16-column chunks of independent 16-lane sums in registers. Each score
// and output element is computed as for one head and one key on its own (the same bits). s: [G, n_kv] scratch.
template <int G>
XC2_MULTIVERSION void attend_group(const Args& a, int64_t g, int64_t i, float* s) {
  const int64_t d = a.head_dim, n_kv = a.n_kv;
  const float* q = a.q + i * a.q_stride + g * G * d;  // the G heads of group g are adjacent
  const int64_t n_valid = a.causal ? std::min(a.n_kv, a.q_pos0 + i + 1) : a.n_kv;
  // Key rows of one head are a whole cache row apart (usually another page): the keys kPrefetch rows ahead are
  // fetched in software (xc2_gemm_bench --suite attn). The value pass below runs faster without.
  constexpr int64_t kPrefetch = 12;
  constexpr int R = G <= 4 ? 4 : 2;
  int64_t j = 0;
  for (; j + R <= n_valid; j += R) {
    const float* k = a.k + j * a.kv_stride + g * d;
    if (j + kPrefetch + R <= n_valid)
      for (int r = 0; r < R; ++r)
        for (int64_t c = 0; c < d; c += kLanes) __builtin_prefetch(k + (kPrefetch + r) * a.kv_stride + c);
    score_keys<G, R>(q, k, a.kv_stride, d, s + j, n_kv);
  }
  for (; j < n_valid; ++j) {
    const float* k = a.k + j * a.kv_stride + g * d;
    V16 acc[G] = {};
    for (int64_t c = 0; c < d; c += kLanes) {
      const V16 kc = load16(k + c);
      for (int h = 0; h < G; ++h) acc[h] += load16(q + h * d + c) * kc;
    }
    for (int h = 0; h < G; ++h) s[h * n_kv + j] = hsum16(acc[h]);
  }
  for (int h = 0; h < G; ++h) softmax_row(s + h * n_kv, n_valid, n_valid, a.scale);
  float* out = a.out + i * a.out_stride + g * G * d;
  auto accumulate = [&](auto chunk) {
    constexpr int64_t C = decltype(chunk)::value;
    for (int64_t c0 = 0; c0 < d; c0 += C) {
      float acc[G][C] = {};
      for (int64_t jv = 0; jv < n_valid; ++jv) {
        const float* v = a.v + jv * a.kv_stride + g * d + c0;
        for (int h = 0; h < G; ++h) {
          const float p = s[h * n_kv + jv];
          for (int64_t l = 0; l < C; ++l) acc[h][l] += p * v[l];
        }
      }
      for (int h = 0; h < G; ++h)
        for (int64_t l = 0; l < C; ++l) out[h * d + c0 + l] = acc[h][l];
    }
  };
  // Chunks of 16 x 16 accumulator lanes (half the AVX-512 registers): 128 columns for G <= 2, 64 for 4.
  constexpr int64_t kWide = G <= 2 ? 128 : 256 / G;
  if (d % kWide == 0) accumulate(std::integral_constant<int64_t, kWide>{});
  else accumulate(std::integral_constant<int64_t, kLanes>{});
}

template <int G>
bool attend_groups(const Args& a, ThreadPool& pool) {
  if (a.n_heads != G * a.n_kv_heads || a.head_dim % kLanes != 0) return false;
  pool.parallel_for(a.n_kv_heads * a.n_q, [&](int64_t u0, int64_t u1) {
    std::vector<float> s(static_cast<size_t>(G * a.n_kv));
    for (int64_t u = u0; u < u1; ++u) attend_group<G>(a, u % a.n_kv_heads, u / a.n_kv_heads, s.data());
  });
  return true;
}

}  // namespace

void attention(const kernels::AttentionArgs& args, ThreadPool& pool) {
  XC2_CHECK(args.dtype == DType::F32, Internal, "CPU attention computes in f32, not ", dtype_name(args.dtype));
  const int64_t q_pos0 = args.pos_dev ? *args.pos_dev : args.q_pos0;
  const Args a{static_cast<const float*>(args.q),
               args.q_stride,
               static_cast<const float*>(args.k),
               static_cast<const float*>(args.v),
               args.kv_stride,
               static_cast<float*>(args.out),
               args.out_stride,
               args.n_q,
               args.pos_dev ? q_pos0 + args.n_q : args.n_kv,
               args.n_heads,
               args.n_kv_heads,
               args.head_dim,
               q_pos0,
               args.causal,
               args.scale};
  if (a.n_q == 0 || a.n_heads == 0) return;
  const int64_t group = a.n_heads / a.n_kv_heads;
  const int64_t d = a.head_dim;
  if (a.n_q <= kAttentionRowsMaxQueries) {
    if (attend_groups<1>(a, pool) || attend_groups<2>(a, pool) || attend_groups<4>(a, pool) ||
        attend_groups<8>(a, pool))
      return;
    pool.parallel_for(a.n_heads, [&](int64_t h0, int64_t h1) {
      std::vector<float> s(static_cast<size_t>(a.n_kv));
      for (int64_t h = h0; h < h1; ++h) attend_head_rows(a, h, s.data());
    });
    return;
  }
  // With causal masking the last query sees n_kv keys at most, earlier queries fewer: the queries go in blocks
  // of kQueryBlock, each block's scores and products only over the keys its last query sees (about half the
  // work of a prefill from position 0). The keys a query cannot see come out of softmax_row as zeros, so a
  // row's sums have the same terms whichever block it is in (the GEMM may order them differently for a short
  // last block: rounding-level differences, rel 2e-7 on the tiny test models).
  // The threads split the (head, query block) units, each unit's two GEMMs and softmax on one thread (a GEMM
  // computes every element in the same order whatever the thread count, so the bits are those of splitting each
  // product across the pool). Units go head by head, so a thread keeps one KV head's keys and values in cache
  // for its run of blocks. Against one parallel GEMM, softmax and GEMM per unit (three pool rounds each, 1056
  // per layer at 32 heads and 1290 positions): 0.63 -> 0.47 s of attention in a 5.5 s W4 image prefill (8 layers,
  // 2 threads).
  constexpr int64_t kQueryBlock = 128;
  const int64_t n_blocks = (a.n_q + kQueryBlock - 1) / kQueryBlock;
  // V_g^T for every KV head: [n_kv_heads][head_dim][n_kv], in blocks of kCols output rows (columns of V): each
  // cache row's kCols contiguous values go to kCols rows of vt, instead of one value per cache row and pass.
  std::vector<float> vt(static_cast<size_t>(a.n_kv_heads * d * a.n_kv));
  constexpr int64_t kCols = 16;
  const int64_t w_v = a.n_kv_heads * d;
  pool.parallel_for((w_v + kCols - 1) / kCols, [&](int64_t u0, int64_t u1) {
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t r0 = u * kCols, nr = std::min(kCols, w_v - r0);
      float* dst = vt.data() + r0 * a.n_kv;
      for (int64_t j = 0; j < a.n_kv; ++j) {
        const float* src = a.v + j * a.kv_stride + r0;  // columns r0.. of cache row j (heads are adjacent in a row)
        for (int64_t c = 0; c < nr; ++c) dst[c * a.n_kv + j] = src[c];
      }
    }
  });
  GemmOptions one;
  one.max_threads = 1;
  pool.parallel_for(a.n_heads * n_blocks, [&](int64_t u0, int64_t u1) {
    std::vector<float> scores(static_cast<size_t>(std::min(a.n_q, kQueryBlock) * a.n_kv));
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t h = u / n_blocks, b0 = (u % n_blocks) * kQueryBlock, g = h / group;
      const int64_t rows = std::min(kQueryBlock, a.n_q - b0);
      const int64_t keys = a.causal ? std::max<int64_t>(1, std::min(a.n_kv, a.q_pos0 + b0 + rows)) : a.n_kv;
      GemmArgs qk;
      qk.x = a.q + b0 * a.q_stride + h * d;
      qk.ldx = a.q_stride;
      qk.w = a.k + g * d;
      qk.w_dtype = DType::F32;
      qk.ldw = a.kv_stride;
      qk.y = scores.data();
      qk.ldy = a.n_kv;
      qk.m = rows;
      qk.n = keys;
      qk.k = d;
      gemm(qk, pool, one);
      for (int64_t i = 0; i < rows; ++i) {
        const int64_t n_valid = a.causal ? std::min(keys, a.q_pos0 + b0 + i + 1) : keys;
        softmax_row(scores.data() + i * a.n_kv, n_valid, keys, a.scale);
      }
      GemmArgs pv;
      pv.x = scores.data();
      pv.ldx = a.n_kv;
      pv.w = vt.data() + g * d * a.n_kv;
      pv.w_dtype = DType::F32;
      pv.ldw = a.n_kv;
      pv.y = a.out + b0 * a.out_stride + h * d;
      pv.ldy = a.out_stride;
      pv.m = rows;
      pv.n = d;
      pv.k = keys;
      gemm(pv, pool, one);
    }
  });
}

}  // namespace xc2::kernels::cpu
