// GPTQ repacking and the quantized linears (kernels/cpu/qgemm.h): the drivers and the scalar kernels.
#include "cpu/qgemm.h"

#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <string>

#include "core/check.h"
#include "core/half.h"
#include "core/log.h"
#include "cpu/cpu_kernels.h"
#include "cpu/gemm.h"
#include "cpu/qgemm_internal.h"

namespace xc2::kernels::cpu {
namespace {

inline int32_t load_i32(const void* base, int64_t idx) {
  int32_t v;
  std::memcpy(&v, static_cast<const char*>(base) + 4 * idx, 4);
  return v;
}

// One int8 x of qlinear_int8 and what its kernels read besides (kept between calls).
struct Int8X {
  std::vector<float> xp;        // x with its columns reordered (act-order)
  std::vector<int8_t> xq;       // int8 x
  std::vector<float> xs;        // its block scales
  std::vector<int32_t> xsum;    // per row and block: the sum of the block's int8 values
  std::vector<float> zs;        // per row and segment
};

// Per-thread buffers of the drivers (kept between calls).
struct QScratch {
  std::vector<float> xp;        // qlinear(): x with its columns reordered (act-order)
  Int8X main;                   // qlinear_int8(): x
  std::vector<Int8X> extra;     // and the x of each fused product
};
thread_local QScratch tls_q;

const detail::QKernels* q_kernels_for(GemmIsa isa) {
  const GemmIsa r = gemm_resolve_isa(isa);
  if (r == GemmIsa::Avx512)
    if (const detail::QKernels* k = detail::q_avx512_kernels()) return k;
  if (r == GemmIsa::Avx2)
    if (const detail::QKernels* k = detail::q_avx2_kernels()) return k;
  return detail::q_scalar_kernels();
}

// x with its columns in the matrix's order (act-order checkpoints), else x itself.
const float* reorder_x(const float* x, int64_t* ldx, const QuantMatrix& w, int64_t m, std::vector<float>& buf) {
  if (w.perm.empty()) return x;
  buf.resize(static_cast<size_t>(m * w.k));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < w.k; ++j) buf[static_cast<size_t>(i * w.k + j)] = x[i * *ldx + w.perm[static_cast<size_t>(j)]];
  *ldx = w.k;
  return buf.data();
}

struct PackCtx {
  const QuantMatrix* w;
  detail::QPackFn pack;
};

void fill_source(const void* ctx, int64_t row0, int64_t rows, int64_t k0, int64_t klen, float* dst, int64_t ld) {
  dequantize(*static_cast<const PackCtx*>(ctx)->w, row0, rows, k0, klen, dst, ld);
}

void pack_source(const void* ctx, int64_t row0, int64_t rows, int64_t k0, int64_t klen, float* wp, int nr) {
  const auto* c = static_cast<const PackCtx*>(ctx);
  c->pack(*c->w, row0, rows, k0, klen, wp, nr);
}

// ---- scalar kernels ----------------------------------------------------------------------------------

}  // namespace

void detail::quantize_x_scalar(const float* x, int64_t ldx, int64_t i0, int64_t i1, int64_t k, int bits, int8_t* q,
                               float* scale, int32_t* sum) {
  const int64_t nb = k / 32;
  for (int64_t i = i0; i < i1; ++i) {
    for (int64_t b = 0; b < nb; ++b) {
      const float* xr = x + i * ldx + b * 32;
      float amax = 0;
      for (int c = 0; c < 32; ++c) amax = std::max(amax, std::fabs(xr[c]));
      const float sc = amax / 127.0f;
      const float inv = amax > 0 ? 127.0f / amax : 0.0f;
      int8_t* out = q + i * k + b * 32;
      int32_t s = 0;
      for (int c = 0; c < 32; ++c) {
        const int32_t v = static_cast<int32_t>(std::nearbyint(xr[c] * inv));
        const int32_t qv = std::max(-127, std::min(127, v));
        s += qv;
        const int pos = bits == 4 ? (c / 8) * 8 + (c % 2) * 4 + (c % 8) / 2 : c;
        out[pos] = static_cast<int8_t>(qv);
      }
      scale[i * nb + b] = sc;
      sum[i * nb + b] = s;
    }
  }
}

namespace {

detail::QQuantizeXFn quantize_x_fn(bool simd) {
  if (simd)
    if (const detail::QQuantizeXFn f = detail::q_avx512_quantize_x()) return f;
  return detail::quantize_x_scalar;
}

void rows_scalar(const QuantMatrix& w, const float* x, int64_t ldx, int64_t m, float* y, int64_t ldy, int64_t t0,
                 int64_t t1, bool accumulate) {
  const int p = w.p();
  const uint32_t mask = (1u << w.bits) - 1u;
  for (int64_t t = t0; t < t1; ++t) {
    for (int64_t l = 0; l < 16; ++l) {
      const int64_t r = t * 16 + l;
      if (r >= w.n) break;
      for (int64_t i = 0; i < m; ++i) {
        float total = 0, acc = 0;
        int32_t g_cur = w.group.empty() ? 0 : w.group[0];
        for (int64_t c = 0; c < w.k; ++c) {
          const int32_t g = w.group[static_cast<size_t>(c)];
          if (g != g_cur) {
            total += w.scale[w.gz(g_cur, r)] * acc;
            acc = 0;
            g_cur = g;
          }
          const uint32_t word = w.q[static_cast<size_t>((t * w.kw + c / p) * 16 + l)];
          const int32_t v = static_cast<int32_t>((word >> ((c % p) * w.bits)) & mask);
          const int32_t z = w.zero_m1[w.gz(g, r)] + 1;
          acc += x[i * ldx + c] * static_cast<float>(v - z);
        }
        total += w.scale[w.gz(g_cur, r)] * acc;
        if (!w.bias.empty()) total += w.bias[static_cast<size_t>(r)];
        float& out = y[i * ldy + r];
        out = accumulate ? out + total : total;
      }
    }
  }
}

void pack_scalar(const QuantMatrix& w, int64_t row0, int64_t rows, int64_t k0, int64_t klen, float* wp, int nr) {
  const int64_t panels = (rows + nr - 1) / nr;
  for (int64_t pi = 0; pi < panels; ++pi) {
    float* dst = wp + pi * klen * nr;
    for (int64_t kk = 0; kk < klen; ++kk)
      for (int64_t j = 0; j < nr; ++j) {
        const int64_t r = pi * nr + j;
        dst[kk * nr + j] = r < rows && row0 + r < w.n ? w.at(row0 + r, k0 + kk) : 0.0f;
      }
  }
}

const detail::QKernels kScalar = {rows_scalar, pack_scalar, nullptr};

}  // namespace

namespace detail {
const QKernels* q_scalar_kernels() { return &kScalar; }
}  // namespace detail

WordArray WordArray::uninitialized(size_t n) {
  WordArray a;
  if (n == 0) return a;
  const size_t bytes = n * sizeof(uint32_t);
  const size_t huge = size_t{2} << 20;
  const size_t align = bytes >= huge ? huge : 64;
  void* mem = std::aligned_alloc(align, (bytes + align - 1) / align * align);
  XC2_CHECK(mem != nullptr, Internal, "out of memory for ", bytes, " bytes of quantized weights");
  if (align == huge) madvise(mem, (bytes + align - 1) / align * align, MADV_HUGEPAGE);  // a hint; failure is harmless
  a.p_ = static_cast<uint32_t*>(mem);
  a.n_ = n;
  return a;
}

WordArray::WordArray(size_t n) : WordArray(uninitialized(n)) {
  if (n_) std::memset(p_, 0, n_ * sizeof(uint32_t));
}

WordArray::WordArray(const WordArray& o) : WordArray(o.n_) {
  if (n_) std::memcpy(p_, o.p_, n_ * sizeof(uint32_t));
}

WordArray& WordArray::operator=(const WordArray& o) {
  if (this != &o) *this = WordArray(o);
  return *this;
}

WordArray& WordArray::operator=(WordArray&& o) noexcept {
  if (this != &o) {
    std::free(p_);
    p_ = o.p_;
    n_ = o.n_;
    o.p_ = nullptr;
    o.n_ = 0;
  }
  return *this;
}

WordArray::~WordArray() { std::free(p_); }

size_t QuantMatrix::bytes() const {
  return q.size() * 4 + scale.size() * 4 + zero_m1.size() + group.size() * 4 + perm.size() * 4 + bias.size() * 4;
}

float QuantMatrix::at(int64_t r, int64_t j) const {
  const uint32_t word = q[static_cast<size_t>(((r / 16) * kw + j / p()) * 16 + r % 16)];
  const int32_t v = static_cast<int32_t>((word >> ((j % p()) * bits)) & ((1u << bits) - 1u));
  const int32_t g = group[static_cast<size_t>(j)];
  const int32_t z = zero_m1[gz(g, r)] + 1;
  return static_cast<float>(v - z) * scale[gz(g, r)];
}

namespace {

// Everything of repack_gptq() but the values, scales, zeros and bias: shape, column order, groups, word runs and
// the int8 path's segments. Reads t.g_idx only.
QuantMatrix gptq_layout(const GptqTensors& t) {
  XC2_CHECK(t.bits == 4 || t.bits == 8, Internal, "repack_gptq: bits ", t.bits);
  const int p = 32 / t.bits;
  XC2_CHECK(t.k % p == 0 && t.n > 0 && t.groups > 0, Internal, "repack_gptq: bad shape");
  QuantMatrix w;
  w.bits = t.bits;
  w.n = t.n;
  w.k = t.k;
  w.groups = t.groups;
  w.n_pad = (t.n + 15) / 16 * 16;
  w.kw = t.k / p;
  const int64_t gs = t.group_size == -1 ? t.k : t.group_size;

  // Group of every input column; columns reordered so that the groups are contiguous (stable).
  std::vector<int32_t> g_in(static_cast<size_t>(t.k));
  for (int64_t c = 0; c < t.k; ++c)
    g_in[static_cast<size_t>(c)] = t.g_idx ? load_i32(t.g_idx, c) : static_cast<int32_t>(c / gs);
  std::vector<int32_t> perm(static_cast<size_t>(t.k));
  std::iota(perm.begin(), perm.end(), 0);
  std::stable_sort(perm.begin(), perm.end(),
                   [&](int32_t a, int32_t b) { return g_in[static_cast<size_t>(a)] < g_in[static_cast<size_t>(b)]; });
  bool identity = true;
  for (int64_t j = 0; j < t.k; ++j) identity = identity && perm[static_cast<size_t>(j)] == j;
  w.group.resize(static_cast<size_t>(t.k));
  bool uniform = true;
  for (int64_t j = 0; j < t.k; ++j) {
    w.group[static_cast<size_t>(j)] = g_in[static_cast<size_t>(perm[static_cast<size_t>(j)])];
    uniform = uniform && w.group[static_cast<size_t>(j)] == j / gs;
  }
  w.uniform_group = uniform ? gs : 0;
  if (!identity) w.perm = std::move(perm);
  // Word runs of one group (only when no group boundary falls inside a word).
  bool aligned = true;
  for (int64_t j = 0; j < t.k; ++j)
    aligned = aligned && w.group[static_cast<size_t>(j)] == w.group[static_cast<size_t>(j - j % p)];
  if (aligned) {
    for (int64_t r = 0; r < w.kw; ++r) {
      const int32_t g = w.group[static_cast<size_t>(r * p)];
      if (r == 0 || g != w.run_group.back()) {
        w.run_start.push_back(static_cast<int32_t>(r));
        w.run_group.push_back(g);
      }
    }
    w.run_start.push_back(static_cast<int32_t>(w.kw));
  }
  // The int8 path's segments, when every run starts on a 32-column block. Chunks of up to 16384 columns: on the
  // 7B shapes (xc2_gemm_bench --suite quant, 1 thread, AVX-512 VNNI) chunks of 4096 made w2 (k = 14336) 15-25%
  // slower than whole rows.
  constexpr int32_t kKcBlocks = 512;
  const int32_t wpb = 32 / p;  // words per block
  bool blocks_aligned = !w.run_start.empty() && t.k % 32 == 0;
  for (size_t ri = 0; blocks_aligned && ri + 1 < w.run_start.size(); ++ri)
    blocks_aligned = w.run_start[ri] % wpb == 0;
  if (blocks_aligned) {
    for (size_t ri = 0; ri + 1 < w.run_start.size(); ++ri) {
      int32_t b = w.run_start[ri] / wpb;
      const int32_t b_end = w.run_start[ri + 1] / wpb;
      while (b < b_end) {
        const int32_t cut = std::min(b_end, (b / kKcBlocks + 1) * kKcBlocks);
        w.segments.push_back({b, cut, w.run_group[ri]});
        b = cut;
      }
    }
    w.chunk_start.push_back(0);
    for (size_t i = 1; i < w.segments.size(); ++i)
      if (w.segments[i].b0 / kKcBlocks != w.segments[i - 1].b0 / kKcBlocks)
        w.chunk_start.push_back(static_cast<int64_t>(i));
    w.chunk_start.push_back(static_cast<int64_t>(w.segments.size()));
  }
  return w;
}

}  // namespace

QuantMatrix repack_gptq(const GptqTensors& t, ThreadPool* pool) {
  QuantMatrix w = gptq_layout(t);
  const int p = 32 / t.bits;
  const uint32_t mask = (1u << t.bits) - 1u;
  // Values: qweight [k / p, n] -> q [n_pad / 16][kw][16] in the reordered column order, tile by tile (each tile
  // written whole by one thread), a band of kBand tiles at a time: for every word row the band's columns are one
  // contiguous read of the GPTQ tensor.
  w.q = WordArray::uninitialized(static_cast<size_t>(w.n_pad * w.kw));
  std::vector<int32_t> src_col(static_cast<size_t>(t.k));  // reordered position of input column c
  for (int64_t j = 0; j < t.k; ++j)
    src_col[static_cast<size_t>(w.perm.empty() ? j : w.perm[static_cast<size_t>(j)])] = static_cast<int32_t>(j);
  constexpr int64_t kBand = 16;
  const int64_t tiles = w.n_pad / 16;
  const auto bands = [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t tt0 = b * kBand, tt1 = std::min(tiles, tt0 + kBand);
      uint32_t* band = w.q.data() + tt0 * w.kw * 16;
      // Padding rows are zero; act-order words are assembled from several GPTQ words.
      if (!w.perm.empty() || tt1 * 16 > t.n)
        std::memset(band, 0, static_cast<size_t>((tt1 - tt0) * w.kw * 16) * sizeof(uint32_t));
      const int64_t n0 = tt0 * 16, n1 = std::min(t.n, tt1 * 16);
      if (w.perm.empty()) {  // each tile's 16 words of a word row are 16 adjacent GPTQ words
        for (int64_t r = 0; r < w.kw; ++r) {
          const char* src = static_cast<const char*>(t.qweight) + static_cast<size_t>(r * t.n + n0) * 4;
          for (int64_t c = n0; c < n1; c += 16) {
            uint32_t* dst = band + ((c - n0) / 16) * w.kw * 16 + r * 16;
            if (n1 - c >= 16) std::memcpy(dst, src + (c - n0) * 4, 64);  // a whole tile line: a fixed-size copy
            else std::memcpy(dst, src + (c - n0) * 4, static_cast<size_t>(n1 - c) * 4);
          }
        }
        continue;
      }
      for (int64_t r = 0; r < w.kw; ++r)
        for (int64_t n = n0; n < n1; ++n) {
          const uint32_t word = static_cast<uint32_t>(load_i32(t.qweight, r * t.n + n));
          uint32_t* tile = band + ((n - n0) / 16) * w.kw * 16 + n % 16;
          for (int i = 0; i < p; ++i) {
            const int64_t j = src_col[static_cast<size_t>(r * p + i)];
            const uint32_t v = (word >> (i * t.bits)) & mask;
            tile[(j / p) * 16] |= v << ((j % p) * t.bits);
          }
        }
    }
  };
  const int64_t n_bands = (tiles + kBand - 1) / kBand;
  if (pool) pool->parallel_for(n_bands, bands);
  else bands(0, n_bands);
  // Scales and zeros: [groups, n] -> [n_pad / 16][groups][16]; the stored zero is zero - 1.
  const int64_t zwords = (t.n + p - 1) / p;
  w.scale.assign(static_cast<size_t>(w.n_pad * t.groups), 0.0f);
  w.zero_m1.assign(static_cast<size_t>(w.n_pad * t.groups), 0);
  for (int64_t g = 0; g < t.groups; ++g) {
    for (int64_t n = 0; n < t.n; ++n) {
      const uint32_t zw = static_cast<uint32_t>(load_i32(t.qzeros, g * zwords + n / p));
      w.zero_m1[w.gz(g, n)] = static_cast<uint8_t>((zw >> ((n % p) * t.bits)) & mask);
      w.scale[w.gz(g, n)] = float_at(t.scales, t.scales_dtype, g * t.n + n);
    }
  }
  if (t.bias) {
    w.bias.resize(static_cast<size_t>(t.n));
    for (int64_t n = 0; n < t.n; ++n) w.bias[static_cast<size_t>(n)] = float_at(t.bias, t.bias_dtype, n);
  }
  return w;
}

QuantMatrix quantize_rtn8(const void* w, DType dtype, int64_t n, int64_t k, ThreadPool& pool) {
  XC2_CHECK(n > 0 && k > 0 && k % 32 == 0, InvalidArgument, "quantize_rtn8: [", n, ", ", k,
            "] (k must be a positive multiple of 32)");
  QuantMatrix m = gptq_layout(GptqTensors{8, n, k, 1, -1});  // one group per row, no g_idx
  m.q = WordArray::uninitialized(static_cast<size_t>(m.n_pad * m.kw));
  m.scale.assign(static_cast<size_t>(m.n_pad), 0.0f);  // group 0 of every row; padding rows 0
  m.zero_m1.assign(static_cast<size_t>(m.n_pad), 0);
  const size_t esize = dtype_size(dtype);
  pool.parallel_for(m.n_pad / 16, [&](int64_t t0, int64_t t1) {
    std::vector<float> row(static_cast<size_t>(k));
    for (int64_t tile = t0; tile < t1; ++tile) {
      uint32_t* q = m.q.data() + tile * m.kw * 16;
      for (int64_t l = 0; l < 16; ++l) {
        const int64_t r = tile * 16 + l;
        if (r >= n) {  // padding row
          for (int64_t c = 0; c < m.kw; ++c) q[c * 16 + l] = 0;
          continue;
        }
        to_f32(static_cast<const char*>(w) + static_cast<size_t>(r * k) * esize, dtype, row.data(), k);
        float amax = 0.0f;
        for (int64_t j = 0; j < k; ++j) amax = std::max(amax, std::fabs(row[static_cast<size_t>(j)]));
        const float scale = amax / 127.0f;
        m.scale[m.gz(0, r)] = scale;
        m.zero_m1[m.gz(0, r)] = 127;  // zero point 128, stored minus one as GPTQ does
        for (int64_t c = 0; c < m.kw; ++c) {  // a word holds 4 columns of the row
          uint32_t word = 0;
          for (int64_t i = 0; i < 4; ++i) {
            // Round half to even as nearbyint() in the default rounding mode, without its library call: |x /
            // scale| <= 127 (plus rounding), and adding 1.5 * 2^23 leaves no fraction bits.
            constexpr float kRound = 12582912.0f;
            float v = scale > 0.0f ? (row[static_cast<size_t>(c * 4 + i)] / scale + kRound) - kRound : 0.0f;
            v = std::min(127.0f, std::max(-127.0f, v));
            word |= static_cast<uint32_t>(static_cast<int32_t>(v) + 128) << (i * 8);
          }
          q[c * 16 + l] = word;
        }
      }
    }
  });
  return m;
}

void dequantize(const QuantMatrix& w, int64_t row0, int64_t rows, int64_t k0, int64_t klen, float* dst, int64_t ld) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < klen; ++c) dst[r * ld + c] = w.at(row0 + r, k0 + c);
}

void qlinear(const float* x, int64_t ldx, const QuantMatrix& w, float* y, int64_t ldy, int64_t m, bool accumulate,
             ThreadPool& pool, const QLinearOptions& opts) {
  if (m == 0) return;
  const detail::QKernels* qk = q_kernels_for(opts.isa);
  GemmPath path = opts.path;
  if (path == GemmPath::Auto) path = gemm_uses_rows_path(m, w.k, opts.isa) ? GemmPath::Rows : GemmPath::Packed;
  x = reorder_x(x, &ldx, w, m, tls_q.xp);

  if (path == GemmPath::Rows) {
    // Threads split the tiles (in proportion to their speeds: ThreadPool::run_balanced; a tile's outputs are
    // computed whole by one thread, so the split changes no bits); each tile is read by one thread, once, for all
    // m rows.
    const int64_t tiles = w.n_pad / 16;
    int tasks = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(pool.size(), tiles)));
    if (m * w.n * w.k < (int64_t{1} << 17)) tasks = 1;
    const detail::QRowsFn rows = w.run_start.empty() ? detail::q_scalar_kernels()->rows : qk->rows;
    auto body = [&](int, int64_t b, int64_t e) {
      if (b < e) rows(w, x, ldx, m, y, ldy, b, e, accumulate);
    };
    if (tasks == 1) body(0, 0, tiles); else pool.run_balanced(tasks, tiles, body);
    return;
  }
  PackCtx ctx{&w, w.run_start.empty() ? detail::q_scalar_kernels()->pack : qk->pack};
  WeightSource src;
  src.fill = fill_source;
  src.pack = pack_source;
  src.ctx = &ctx;
  GemmArgs a;
  a.x = x;
  a.ldx = ldx;
  a.w_source = &src;
  a.bias = w.bias.empty() ? nullptr : w.bias.data();
  a.bias_dtype = DType::F32;
  a.y = y;
  a.ldy = ldy;
  a.m = m;
  a.n = w.n;
  a.k = w.k;
  a.accumulate = accumulate;
  GemmOptions go;
  go.isa = opts.isa;
  go.path = GemmPath::Packed;
  gemm(a, pool, go);
}

namespace {

QInt8Kernel env_qint8_kernel() {
  static const QInt8Kernel k = [] {
    const char* env = std::getenv("XC2_QINT8");
    if (!env || !*env) return QInt8Kernel::Auto;
    const std::string v(env);
    if (v == "avx512") return QInt8Kernel::Avx512Vnni;
    if (v == "avxvnni") return QInt8Kernel::AvxVnni;
    if (v == "avx2") return QInt8Kernel::Avx2;
    XC2_LOG_WARN("XC2_QINT8='" << v << "' is not one of avx512, avxvnni, avx2; ignored");
    return QInt8Kernel::Auto;
  }();
  return k;
}

detail::QInt8Fn qint8_fn(QInt8Kernel k) {
  switch (k) {
    case QInt8Kernel::Avx512Vnni: {
      const detail::QKernels* q = detail::q_avx512_kernels();
      return q ? q->int8 : nullptr;
    }
    case QInt8Kernel::AvxVnni: return detail::q_avxvnni_int8();
    case QInt8Kernel::Avx2: {
      const detail::QKernels* q = detail::q_avx2_kernels();
      return q ? q->int8 : nullptr;
    }
    default: return nullptr;
  }
}

// The best kernel within the f32 GEMM's (resolved) ISA.
QInt8Kernel best_qint8_kernel() {
  const GemmIsa isa = gemm_resolve_isa(GemmIsa::Auto);
  if (isa == GemmIsa::Avx512 && qint8_kernel_available(QInt8Kernel::Avx512Vnni)) return QInt8Kernel::Avx512Vnni;
  if (isa == GemmIsa::Scalar) return QInt8Kernel::None;
  if (qint8_kernel_available(QInt8Kernel::AvxVnni)) return QInt8Kernel::AvxVnni;
  if (qint8_kernel_available(QInt8Kernel::Avx2)) return QInt8Kernel::Avx2;
  return QInt8Kernel::None;
}

}  // namespace

bool qint8_kernel_available(QInt8Kernel k) {
  if (!qint8_fn(k)) return false;
  switch (k) {
    case QInt8Kernel::Avx512Vnni: return gemm_isa_supported(GemmIsa::Avx512) && detail::cpu_has_avx512_vnni();
    case QInt8Kernel::AvxVnni: return gemm_isa_supported(GemmIsa::Avx2) && detail::cpu_has_avx_vnni();
    case QInt8Kernel::Avx2: return gemm_isa_supported(GemmIsa::Avx2);
    default: return false;
  }
}

QInt8Kernel qlinear_int8_kernel(QInt8Kernel k) {
  if (k != QInt8Kernel::Auto) return qint8_kernel_available(k) ? k : QInt8Kernel::None;
  static const QInt8Kernel resolved = [] {
    const QInt8Kernel env = env_qint8_kernel();
    if (env != QInt8Kernel::Auto && !qint8_kernel_available(env)) {
      const QInt8Kernel best = best_qint8_kernel();
      XC2_LOG_WARN("XC2_QINT8: the " << qint8_kernel_name(env) << " int8 kernel is not available on this CPU/build; using "
                                     << qint8_kernel_name(best));
      return best;
    }
    return env != QInt8Kernel::Auto ? env : best_qint8_kernel();
  }();
  return resolved;
}

const char* qint8_kernel_name(QInt8Kernel k) {
  switch (k) {
    case QInt8Kernel::Auto: return "auto";
    case QInt8Kernel::None: return "none";
    case QInt8Kernel::Avx2: return "AVX2";
    case QInt8Kernel::AvxVnni: return "AVX-VNNI";
    case QInt8Kernel::Avx512Vnni: return "AVX-512 VNNI";
  }
  return "?";
}

bool qlinear_int8_supported(QInt8Kernel k) { return qlinear_int8_kernel(k) != QInt8Kernel::None; }

bool qlinear_int8_supported(const QuantMatrix& w, QInt8Kernel k) {
  if (!qlinear_int8_supported(k) || w.segments.empty()) return false;
  // The plain AVX2 kernel on 8-bit weights needs twice the instructions of 4-bit and measured 0.68x the AVX-512
  // exact path (docs/perf.md): on an AVX-512 CPU without either VNNI, 8-bit weights keep the exact path unless a
  // kernel was asked for (argument or XC2_QINT8).
  if (k == QInt8Kernel::Auto && env_qint8_kernel() == QInt8Kernel::Auto && w.bits == 8 &&
      qlinear_int8_kernel(k) == QInt8Kernel::Avx2 && gemm_resolve_isa(GemmIsa::Auto) == GemmIsa::Avx512)
    return false;
  return true;
}

namespace {

// x (m rows) to int8 for the matrix w, one scale per row and 32 columns (round to nearest even; 4-bit: each 8
// columns as 0,2,4,6,1,3,5,7), and per row and segment zs = sum over its blocks of scale * sum of the int8 values.
detail::QuantizedX prepare_int8_x(const float* x, int64_t ldx, const QuantMatrix& w, int64_t m, Int8X& s,
                                  ThreadPool& pool) {
  x = reorder_x(x, &ldx, w, m, s.xp);
  const int64_t k = w.k, nb = k / 32;
  s.xq.resize(static_cast<size_t>(m * k));
  s.xs.resize(static_cast<size_t>(m * nb));
  s.xsum.resize(static_cast<size_t>(m * nb));
  const detail::QQuantizeXFn quant = quantize_x_fn(true);
  pool.parallel_for(m, [&](int64_t i0, int64_t i1) {
    quant(x, ldx, i0, i1, k, w.bits, s.xq.data(), s.xs.data(), s.xsum.data());
  }, 8);
  const std::vector<detail::KSegment>& segments = w.segments;
  const int64_t n_seg = static_cast<int64_t>(segments.size());
  s.zs.assign(static_cast<size_t>(m * n_seg), 0.0f);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t g = 0; g < n_seg; ++g) {
      float z = 0;
      for (int32_t b = segments[static_cast<size_t>(g)].b0; b < segments[static_cast<size_t>(g)].b1; ++b) {
        const size_t at = static_cast<size_t>(i * nb + b);
        z += s.xs[at] * static_cast<float>(s.xsum[at]);  // scale * sum of the block's int8 values
      }
      s.zs[static_cast<size_t>(i * n_seg + g)] = z;
    }
  return detail::QuantizedX{s.xq.data(), s.xs.data(), s.xsum.data(), k};
}

}  // namespace

void qlinear_int8(const float* x, int64_t ldx, const QuantMatrix& w, float* y, int64_t ldy, int64_t m,
                  bool accumulate, ThreadPool& pool, QInt8Kernel kernel, const std::vector<QInt8Extra>* extra) {
  XC2_CHECK(qlinear_int8_supported(w, kernel), Unsupported, "int8 quantized linear: needs AVX2 (kernel ",
            qint8_kernel_name(kernel), ") and 32-column groups");
  const size_t n_extra = extra ? extra->size() : 0;
  for (size_t e = 0; e < n_extra; ++e) {
    const QInt8Extra& d = (*extra)[e];
    XC2_CHECK(d.w && d.w->n == w.n && d.row0 >= 0 && d.rows >= 0 && d.row0 + d.rows <= m, Internal,
              "qlinear_int8: fused product ", e, " does not fit the main one");
    XC2_CHECK(qlinear_int8_supported(*d.w, kernel), Unsupported, "int8 quantized linear: fused product ", e,
              " needs 32-column groups");
  }
  const detail::QInt8Fn kern = qint8_fn(qlinear_int8_kernel(kernel));
  if (m == 0) return;
  QScratch& s = tls_q;
  const detail::QuantizedX qx = prepare_int8_x(x, ldx, w, m, s.main, pool);
  if (s.extra.size() < n_extra) s.extra.resize(n_extra);
  std::vector<detail::QuantizedX> ex(n_extra);
  for (size_t e = 0; e < n_extra; ++e) {
    const QInt8Extra& d = (*extra)[e];
    if (d.rows > 0) ex[e] = prepare_int8_x(d.x, d.ldx, *d.w, d.rows, s.extra[e], pool);
  }

  // Threads split the tiles (in proportion to their speeds: ThreadPool::run_balanced); each walks m in blocks of
  // kMb rows (x block in L2), its tiles in runs of kTc (all of them without fused products), per run the k chunks
  // of the main product, then the fused products' rows in this block over the same tiles (their y lines still in
  // cache: a separate call would read and write y again).
  const int64_t tiles = w.n_pad / 16;
  const int tasks = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(pool.size(), tiles)));
  constexpr int64_t kMb = 96;
  const int64_t kTc = n_extra > 0 ? 8 : tiles;
  const float* bias = w.bias.empty() ? nullptr : w.bias.data();
  auto chunks = [&](const QuantMatrix& mw, const detail::QuantizedX& mx, const Int8X& ms, int64_t i0, int64_t i1,
                    int64_t t0, int64_t t1, float* my, bool add, const float* mbias) {
    const std::vector<int64_t>& chunk_seg = mw.chunk_start;
    const int64_t n_seg = static_cast<int64_t>(mw.segments.size());
    for (size_t c = 0; c + 1 < chunk_seg.size(); ++c)
      kern(mw, mx, mw.segments.data(), chunk_seg[c], chunk_seg[c + 1], ms.zs.data(), n_seg, i0, i1, t0, t1, my, ldy,
           c > 0 || add, c == 0 ? mbias : nullptr);
  };
  // Each output is computed whole by one task, so the split changes no bits.
  auto body = [&](int, int64_t tb, int64_t te) {
    for (int64_t i0 = 0; i0 < m; i0 += kMb) {
      const int64_t i1 = std::min(m, i0 + kMb);
      for (int64_t tc = tb; tc < te; tc += kTc) {
        const int64_t tce = std::min(te, tc + kTc);
        chunks(w, qx, s.main, i0, i1, tc, tce, y, accumulate, bias);
        for (size_t e = 0; e < n_extra; ++e) {
          const QInt8Extra& d = (*extra)[e];
          const int64_t r0 = std::max(i0, d.row0), r1 = std::min(i1, d.row0 + d.rows);
          if (r0 < r1)
            chunks(*d.w, ex[e], s.extra[e], r0 - d.row0, r1 - d.row0, tc, tce, y + d.row0 * ldy, true,
                   d.w->bias.empty() ? nullptr : d.w->bias.data());
        }
      }
    }
  };
  if (tasks == 1) body(0, 0, tiles); else pool.run_balanced(tasks, tiles, body);
}

void quantize_x_int8(const float* x, int64_t ldx, int64_t m, int64_t k, int bits, int8_t* q, float* scale,
                     int32_t* sum, bool simd) {
  XC2_CHECK(k % 32 == 0 && (bits == 4 || bits == 8), Internal, "quantize_x_int8: k ", k, " bits ", bits);
  quantize_x_fn(simd)(x, ldx, 0, m, k, bits, q, scale, sum);
}

}  // namespace xc2::kernels::cpu
