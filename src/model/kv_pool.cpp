// KvCache and KvPool (model/kv_pool.h).
#include "model/kv_pool.h"

#include <algorithm>

#include "core/check.h"

namespace xc2::model {

KvCache::KvCache(Backend& backend, int64_t n_layers, int64_t n_kv_heads, int64_t head_dim)
    : be_(backend), n_layers_(n_layers), n_kv_heads_(n_kv_heads), head_dim_(head_dim) {
  k_.resize(static_cast<size_t>(n_layers));
  v_.resize(static_cast<size_t>(n_layers));
}

void KvCache::reserve(int64_t n_positions) {
  if (n_positions <= capacity_) return;
  const int64_t new_cap = std::max<int64_t>(n_positions, std::max<int64_t>(256, capacity_ * 3 / 2));
  for (int64_t l = 0; l < n_layers_; ++l) {
    for (auto* vec : {&k_, &v_}) {
      Tensor t = be_.empty({new_cap, n_kv_heads_, head_dim_}, be_.act_dtype());
      Tensor& old = (*vec)[static_cast<size_t>(l)];
      if (length_ > 0) {
        Tensor dst = t.rows(0, length_);
        be_.copy(old.rows(0, length_), dst);
      }
      old = t;
    }
  }
  capacity_ = new_cap;
}

void KvCache::copy_prefix(KvCache& src, int64_t n) {
  XC2_CHECK(src.n_layers_ == n_layers_ && src.n_kv_heads_ == n_kv_heads_ && src.head_dim_ == head_dim_, Internal,
            "copy_prefix: caches of different shapes");
  XC2_CHECK(n >= 0 && n <= src.length(), Internal, "copy_prefix: ", n, " positions of ", src.length());
  length_ = 0;
  reserve(n);
  for (int64_t l = 0; l < n_layers_ && n > 0; ++l) {
    Tensor kd = k(l).rows(0, n), vd = v(l).rows(0, n);
    be_.copy(src.k(l).rows(0, n), kd);
    be_.copy(src.v(l).rows(0, n), vd);
  }
  length_ = n;
}

KvPool::KvPool(Backend& backend, int64_t n_layers, int64_t n_kv_heads, int64_t head_dim)
    : be_(backend), n_layers_(n_layers), n_kv_heads_(n_kv_heads), head_dim_(head_dim) {}

SeqId KvPool::alloc() {
  auto cache = std::make_unique<KvCache>(be_, n_layers_, n_kv_heads_, head_dim_);
  for (size_t i = 0; i < seqs_.size(); ++i)
    if (!seqs_[i]) {
      seqs_[i] = std::move(cache);
      return static_cast<SeqId>(i);
    }
  seqs_.push_back(std::move(cache));
  return static_cast<SeqId>(seqs_.size() - 1);
}

KvCache& KvPool::get(SeqId id) {
  XC2_CHECK(id >= 0 && static_cast<size_t>(id) < seqs_.size() && seqs_[static_cast<size_t>(id)], Internal,
            "KV pool: no sequence ", id);
  return *seqs_[static_cast<size_t>(id)];
}

void KvPool::free(SeqId id) {
  get(id);
  seqs_[static_cast<size_t>(id)].reset();
}

SeqId KvPool::fork(SeqId src, int64_t n) {
  const int64_t len = get(src).length();
  if (n < 0) n = len;
  XC2_CHECK(n <= len, Internal, "KV pool: fork of ", n, " positions from a sequence of ", len);
  const SeqId id = alloc();
  get(id).copy_prefix(get(src), n);
  return id;
}

void KvPool::truncate(SeqId id, int64_t n) {
  KvCache& c = get(id);
  XC2_CHECK(n >= 0 && n <= c.length(), Internal, "KV pool: truncate to ", n, " of ", c.length(), " positions");
  c.set_length(n);
}

int64_t KvPool::n_live() const {
  return std::count_if(seqs_.begin(), seqs_.end(), [](const auto& s) { return s != nullptr; });
}

}  // namespace xc2::model
