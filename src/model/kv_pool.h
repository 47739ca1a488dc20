// KV caches: one KvCache per sequence (keys after RoPE and values, every layer), and KvPool, the sequences of
// one model (allocate, free, fork a prefix into a new sequence, truncate). Single requests, batches, beams and
// multi-turn chats all hold their sequences here.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "backends/backend.h"
#include "core/tensor.h"

namespace xc2::model {

// Per-layer keys (post-RoPE) and values of one sequence, grown on demand.
// k(l), v(l): [capacity, n_kv_heads, head_dim]; rows are positions, the first length() are filled.
class KvCache {
 public:
  KvCache(Backend& backend, int64_t n_layers, int64_t n_kv_heads, int64_t head_dim);
  int64_t length() const { return length_; }
  int64_t capacity() const { return capacity_; }
  int64_t n_layers() const { return n_layers_; }
  void reserve(int64_t n_positions);  // keeps the first length() rows
  void set_length(int64_t n) { length_ = n; }
  void clear() { length_ = 0; }
  Tensor& k(int64_t layer) { return k_[static_cast<size_t>(layer)]; }
  Tensor& v(int64_t layer) { return v_[static_cast<size_t>(layer)]; }
  // Copies the first n positions of `src` (same model) into this cache, which then holds exactly those.
  void copy_prefix(KvCache& src, int64_t n);

 private:
  Backend& be_;
  int64_t n_layers_, n_kv_heads_, head_dim_;
  int64_t capacity_ = 0, length_ = 0;
  std::vector<Tensor> k_, v_;
};

using SeqId = int32_t;

// The sequences of one model. Ids are reused after free(); a freed sequence's memory is released.
class KvPool {
 public:
  KvPool(Backend& backend, int64_t n_layers, int64_t n_kv_heads, int64_t head_dim);
  SeqId alloc();
  void free(SeqId id);
  // A new sequence holding a copy of the first n positions of `src` (n < 0: all of them).
  SeqId fork(SeqId src, int64_t n = -1);
  // Keeps the first n positions (n <= length).
  void truncate(SeqId id, int64_t n);
  KvCache& get(SeqId id);
  int64_t length(SeqId id) { return get(id).length(); }
  int64_t n_live() const;  // sequences allocated and not freed

 private:
  Backend& be_;
  int64_t n_layers_, n_kv_heads_, head_dim_;
  std::vector<std::unique_ptr<KvCache>> seqs_;  // index = id; null: free
};

}  // namespace xc2::model
