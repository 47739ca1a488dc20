// Continuous batching (include/xc2/scheduler.h): a worker thread admits queued jobs, runs one decoder forward per
// step over the decode rows of the generating sequences and the next prompt chunk of the prefilling ones, and
// hands each sequence's logits to engine::SequenceRun, the per-sequence half of the generation loop
// (engine/generate.h) that Engine::generate uses too.
#include "xc2/scheduler.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <list>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>

#include "core/check.h"
#include "core/log.h"
#include "engine/engine_impl.h"
#include "engine/generate.h"

namespace xc2 {
namespace {

uint64_t mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  h ^= h >> 31;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 29;
  return h;
}

uint64_t hash_bytes(const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return mix(h, n);
}

// A position's key for the prefix cache: its token id, or (image content, row of the image).
uint64_t token_key(int32_t id) { return mix(0x746f6b656eull, static_cast<uint64_t>(static_cast<uint32_t>(id))); }
uint64_t image_row_key(uint64_t image_hash, int64_t row) { return mix(image_hash, static_cast<uint64_t>(row)); }

// The chained hash after each full block of `keys`.
std::vector<uint64_t> block_hashes(const std::vector<uint64_t>& keys, int block) {
  std::vector<uint64_t> out;
  uint64_t h = 0x78633270726566ull;
  const size_t B = static_cast<size_t>(block);
  for (size_t b = 0; b + B <= keys.size(); b += B) {
    for (size_t i = b; i < b + B; ++i) h = mix(h, keys[i]);
    out.push_back(h);
  }
  return out;
}

// Finished sequences' KV rows, kept for requests whose prompts start the same way.
struct PrefixEntry {
  std::unique_ptr<model::KvCache> cache;  // holds exactly hashes.size() * block positions
  std::vector<uint64_t> hashes;
  uint64_t last_used = 0;
};

}  // namespace

struct Scheduler::Impl {
  Engine& engine;
  EngineImpl& m;
  SchedulerOptions opt;

  struct Job {
    JobId id = 0;
    SchedulerJob job;
    text::Prompt prompt;          // tokenized at submit
    int64_t positions = 0;        // prompt positions (after truncation)
    int64_t reserve = 0;          // KV positions reserved while running
    std::vector<uint64_t> keys;   // per prompt position (prefix cache)
    Clock::time_point t_submit;
  };
  struct Running {
    Job j;
    std::unique_ptr<model::KvCache> cache;
    engine::GenSequence seq;
    GenerationResult result;
    std::unique_ptr<engine::SequenceRun> run;
    int64_t prefilled = 0;  // prompt rows in the cache
    int64_t chunk = 0;      // rows of one step's prefill chunk
    int step = 0;           // tokens chosen
    int32_t feed = -1;      // the token to feed next (decoding)
    bool decoding = false;
    Clock::time_point t_prefill, t_decode;
  };

  mutable std::mutex mu;
  std::condition_variable cv, idle_cv;
  std::deque<Job> queue;
  std::set<JobId> cancelled;
  bool accepting = true, stopping = false, cancel_everything = false;
  JobId next_id = 1;
  std::atomic<uint64_t> unique_keys{0};
  int64_t n_running = 0, kv_reserved = 0, kv_cached = 0;
  SchedulerStats counters;

  // Worker-only state.
  std::vector<std::unique_ptr<Running>> running;
  std::list<PrefixEntry> prefix;
  uint64_t tick = 0;

  std::thread worker;

  Impl(Engine& e, const SchedulerOptions& o) : engine(e), m(EngineAccess::impl(e)), opt(o) {
    XC2_CHECK(opt.max_batch >= 1, InvalidArgument, "max_batch must be >= 1");
    XC2_CHECK(opt.max_queue >= 0, InvalidArgument, "max_queue must be >= 0");
    XC2_CHECK(opt.kv_budget >= 0, InvalidArgument, "the KV budget must be >= 0");
    XC2_CHECK(opt.prefill_chunk >= 1, InvalidArgument, "the prefill chunk must be >= 1 row");
    XC2_CHECK(opt.max_images_per_step >= 1, InvalidArgument, "max_images_per_step must be >= 1");
    XC2_CHECK(opt.prefix_block >= 1, InvalidArgument, "prefix_block must be >= 1");
    if (opt.kv_budget == 0) opt.kv_budget = static_cast<int64_t>(opt.max_batch) * (m.cfg().max_length + 1024);
    counters.kv_budget = opt.kv_budget;
  }

  // Whether a sequence ending at `end` positions computes the same RoPE base in chunks as in one forward (the
  // dynamic-NTK base depends on the length of each forward's sequence beyond max_position_embeddings).
  bool chunk_safe(int64_t end) const {
    return m.cfg().rope_scaling_type != "dynamic" || end <= m.cfg().max_position_embeddings;
  }

  static void done(SchedulerJob& job, const GenerationResult& r, const std::string& err, ErrorCode code) {
    if (!job.on_done) return;
    try {
      job.on_done(r, err, code);
    } catch (...) {  // a caller's callback: never let it take the worker down
    }
  }
  static void done_cancelled(SchedulerJob& job) {
    GenerationResult r;
    r.stop_reason = StopReason::Cancelled;
    done(job, r, "", ErrorCode::Internal);
  }

  // ---- prefix cache (worker) ----
  void evict_lru() {
    auto victim = std::min_element(prefix.begin(), prefix.end(),
                                   [](const PrefixEntry& a, const PrefixEntry& b) { return a.last_used < b.last_used; });
    const int64_t n = victim->cache->length();
    prefix.erase(victim);
    std::lock_guard<std::mutex> lk(mu);
    kv_cached -= n;
  }

  // Copies the longest cached prefix of `r`'s prompt (leaving at least its last row to compute) into its cache.
  void reuse_prefix(Running& r) {
    if (!opt.prefix_cache || !chunk_safe(r.j.positions)) return;
    const std::vector<uint64_t> want = block_hashes(r.j.keys, opt.prefix_block);
    PrefixEntry* best = nullptr;
    size_t best_blocks = 0;
    for (PrefixEntry& e : prefix) {
      size_t k = 0;
      while (k < e.hashes.size() && k < want.size() && e.hashes[k] == want[k]) ++k;
      if (k > best_blocks) {
        best_blocks = k;
        best = &e;
      }
    }
    std::lock_guard<std::mutex> lk(mu);
    ++counters.prefix_lookups;
    if (!best) return;
    const int64_t n = std::min<int64_t>(static_cast<int64_t>(best_blocks) * opt.prefix_block, r.j.positions - 1);
    if (n <= 0) return;
    best->last_used = ++tick;
    r.cache->copy_prefix(*best->cache, n);
    r.prefilled = n;
    ++counters.prefix_hits;
    counters.prefix_hit_positions += static_cast<uint64_t>(n);
  }

  // Keeps the full blocks of a finished sequence's KV rows (prompt and generated tokens).
  void remember(Running& r) {
    if (!opt.prefix_cache || !r.cache || !chunk_safe(r.cache->length())) return;
    std::vector<uint64_t> keys(r.j.keys.begin(), r.j.keys.begin() + std::min<int64_t>(r.j.positions, r.cache->length()));
    for (int32_t id : r.result.tokens) {
      if (static_cast<int64_t>(keys.size()) >= r.cache->length()) break;
      keys.push_back(token_key(id));
    }
    std::vector<uint64_t> hashes = block_hashes(keys, opt.prefix_block);
    if (hashes.empty()) return;
    // Already covered by an entry (same or longer prefix): only refresh it; entries that this one extends go.
    for (auto it = prefix.begin(); it != prefix.end();) {
      const size_t common = std::min(it->hashes.size(), hashes.size());
      if (common > 0 && it->hashes[common - 1] == hashes[common - 1]) {
        if (it->hashes.size() >= hashes.size()) {
          it->last_used = ++tick;
          return;
        }
        const int64_t n = it->cache->length();
        it = prefix.erase(it);
        std::lock_guard<std::mutex> lk(mu);
        kv_cached -= n;
        continue;
      }
      ++it;
    }
    const int64_t n = static_cast<int64_t>(hashes.size()) * opt.prefix_block;
    if (n > opt.kv_budget) return;
    r.cache->set_length(n);
    PrefixEntry e;
    e.cache = std::move(r.cache);
    e.hashes = std::move(hashes);
    e.last_used = ++tick;
    prefix.push_back(std::move(e));
    {
      std::lock_guard<std::mutex> lk(mu);
      kv_cached += n;
    }
    // Within the budget: the running sequences' reservations come first.
    for (;;) {
      int64_t over;
      {
        std::lock_guard<std::mutex> lk(mu);
        over = kv_reserved + kv_cached - opt.kv_budget;
      }
      if (over <= 0 || prefix.empty()) break;
      evict_lru();
    }
  }

  // ---- worker ----
  void finish(Running& r, const std::string& error = "", ErrorCode code = ErrorCode::Internal) {
    if (error.empty()) {
      remember(r);
      done(r.j.job, r.result, "", code);
    } else {
      done(r.j.job, GenerationResult{}, error, code);
    }
    std::lock_guard<std::mutex> lk(mu);
    kv_reserved -= r.j.reserve;
    --n_running;
    counters.generated_tokens += r.result.tokens.size();
  }

  // Takes cancellations and admits queued jobs while a slot and KV positions are free.
  std::vector<Job> admit(std::vector<Job>& cancelled_queued, std::set<JobId>& cancelled_running) {
    std::vector<Job> admitted;
    std::unique_lock<std::mutex> lk(mu);
    if (cancel_everything) {
      cancel_everything = false;
      for (const auto& r : running) cancelled.insert(r->j.id);
      for (const Job& j : queue) cancelled.insert(j.id);
    }
    for (auto it = queue.begin(); it != queue.end();) {
      if (cancelled.count(it->id)) {
        cancelled.erase(it->id);
        cancelled_queued.push_back(std::move(*it));
        it = queue.erase(it);
      } else {
        ++it;
      }
    }
    cancelled_running.swap(cancelled);
    cancelled.clear();
    while (!stopping && !queue.empty() && n_running < opt.max_batch) {
      const int64_t need = queue.front().reserve;
      while (kv_reserved + kv_cached + need > opt.kv_budget && !prefix.empty()) {
        lk.unlock();
        evict_lru();
        lk.lock();
      }
      if (kv_reserved + kv_cached + need > opt.kv_budget) break;
      kv_reserved += need;
      ++n_running;
      counters.prompt_positions += static_cast<uint64_t>(queue.front().positions);
      admitted.push_back(std::move(queue.front()));
      queue.pop_front();
    }
    return admitted;
  }

  // Encodes the admitted jobs' images (at most max_images_per_step at once), assembles their prompts and
  // looks up the prefix cache.
  void start(std::vector<Job>& admitted) {
    std::vector<Engine::PreparedImage*> pending;
    std::vector<std::pair<size_t, size_t>> owner;  // (job, image)
    std::vector<std::vector<ImageHandle>> handles(admitted.size());
    std::vector<std::string> errors(admitted.size());
    for (size_t i = 0; i < admitted.size(); ++i) {
      handles[i].resize(admitted[i].job.images.size());
      for (size_t k = 0; k < admitted[i].job.images.size(); ++k) {
        pending.push_back(&admitted[i].job.images[k]);
        owner.push_back({i, k});
      }
    }
    const size_t per = static_cast<size_t>(opt.max_images_per_step);
    for (size_t b = 0; b < pending.size(); b += per) {
      const size_t e = std::min(pending.size(), b + per);
      std::vector<Engine::PreparedImage> group;
      for (size_t k = b; k < e; ++k) group.push_back(std::move(*pending[k]));
      try {
        std::vector<ImageHandle> out = engine.encode_prepared(group);
        for (size_t k = b; k < e; ++k) handles[owner[k].first][owner[k].second] = out[k - b];
      } catch (const std::exception& ex) {
        for (size_t k = b; k < e; ++k) errors[owner[k].first] = ex.what();
      }
    }
    for (size_t i = 0; i < admitted.size(); ++i) {
      auto r = std::make_unique<Running>();
      r->j = std::move(admitted[i]);
      if (!r->j.job.images.empty()) r->j.job.request.images = handles[i];
      r->j.job.images.clear();
      if (!errors[i].empty()) {
        finish(*r, errors[i], ErrorCode::InvalidArgument);
        continue;
      }
      try {
        const GenerationOptions& o = r->j.job.options;
        r->seq.prompt = m.assemble_request(r->j.job.request, o.truncate_prompt, &r->seq.penalty_history);
        XC2_ASSERT(r->seq.prompt.rows.rows() == r->j.positions);
        r->result = start_result(r->seq.prompt, o);
        r->result.stop_reason = StopReason::MaxNewTokens;
        r->cache = m.model->new_cache();
        // Room for the prompt and the whole answer now, not grown (and copied) during the decode (as generate()).
        r->cache->reserve(std::min<int64_t>(r->j.reserve, m.context_limit() + 1));
        r->seq.cache = r->cache.get();
        r->seq.result = &r->result;
        r->seq.on_text = r->j.job.on_text;
        r->run = std::make_unique<engine::SequenceRun>(m, r->seq, o);
        reuse_prefix(*r);
        // Chunks only where they compute what one forward computes (see chunk_safe).
        r->chunk = chunk_safe(r->j.positions) ? opt.prefill_chunk : r->j.positions;
        r->t_prefill = r->t_decode = Clock::now();
        running.push_back(std::move(r));
      } catch (const Error& e) {
        finish(*r, e.what(), e.code());
      } catch (const std::exception& e) {
        finish(*r, e.what(), ErrorCode::Internal);
      }
    }
  }

  // Ends a sequence that stopped; frees its slot.
  void stop_sequence(Running& r) {
    r.run->finish(r.t_decode);
    r.run->complete();
    finish(r);
  }

  // One decoder forward over every running sequence; false when nothing runs.
  bool step() {
    if (running.empty()) return false;
    struct Part {
      Running* r;
      int64_t row0, n;
      bool out;
    };
    std::vector<Part> parts;
    int64_t total = 0;
    for (auto& up : running) {
      Running& r = *up;
      const int64_t n = r.decoding ? 1 : std::min(r.chunk, r.j.positions - r.prefilled);
      const bool out = r.decoding || r.prefilled + n == r.j.positions;
      parts.push_back({&r, total, n, out});
      total += n;
    }
    model::XComposer2& model = *m.model;
    model::DecoderBatch batch;
    batch.rows = m.backend->empty({total, m.cfg().hidden_size});
    std::vector<std::vector<int32_t>> ids(parts.size());
    for (size_t i = 0; i < parts.size(); ++i) {
      const Part& p = parts[i];
      Tensor dst = batch.rows.rows(p.row0, p.n);
      if (p.r->decoding) {
        ids[i] = {p.r->feed};
        model.embed(TokenIds::of(ids[i]), dst);
      } else {
        const int64_t off = p.r->prefilled;
        m.backend->copy(p.r->seq.prompt.rows.rows(off, p.n), dst);
        for (const model::RowSpan& s : p.r->seq.prompt.spans) {
          const int64_t b = std::max(s.begin, off), e = std::min(s.begin + s.count, off + p.n);
          if (b < e) batch.image_spans.push_back({p.row0 + b - off, e - b});
        }
      }
      batch.seqs.push_back({p.r->cache.get(), p.row0, p.n, nullptr, 0});
      if (p.out) batch.out_rows.push_back(p.row0 + p.n - 1);
    }
    std::vector<float> logits;
    const Tensor lg = model.forward(batch);
    if (!batch.out_rows.empty()) {
      logits.resize(static_cast<size_t>(lg.numel()));
      m.backend->to_host_f32(lg, logits.data());
    }
    {
      std::lock_guard<std::mutex> lk(mu);
      ++counters.steps;
    }
    const size_t V = static_cast<size_t>(m.cfg().vocab_size);
    size_t out_index = 0;
    std::vector<std::unique_ptr<Running>> next;
    std::vector<Running*> stopped;
    for (const Part& p : parts) {
      Running& r = *p.r;
      bool goes_on = true;
      if (!r.decoding) {
        r.prefilled += p.n;
        if (p.out) {
          r.result.timings.prefill_ms = ms_since(r.t_prefill);
          r.seq.prompt.rows = Tensor();
          r.decoding = true;
          r.t_decode = Clock::now();
          if (r.j.job.options.max_new_tokens == 0) goes_on = false;
        }
      }
      if (goes_on && p.out) {
        std::vector<float> row(logits.begin() + static_cast<std::ptrdiff_t>(out_index * V),
                               logits.begin() + static_cast<std::ptrdiff_t>((out_index + 1) * V));
        const int32_t id = r.run->choose(row);
        goes_on = r.run->accept(id, r.step, r.j.t_submit);
        ++r.step;
        r.feed = id;
      }
      if (p.out) ++out_index;
      if (!goes_on) stopped.push_back(&r);
    }
    for (Running* r : stopped) stop_sequence(*r);
    for (auto& up : running)
      if (std::find(stopped.begin(), stopped.end(), up.get()) == stopped.end()) next.push_back(std::move(up));
    running = std::move(next);
    return true;
  }

  // A forward that failed: every running sequence gets the error.
  void fail_running(const std::string& error, ErrorCode code) {
    for (auto& r : running) finish(*r, error, code);
    running.clear();
  }

  void loop() {
    for (;;) {
      std::vector<Job> cancelled_queued;
      std::set<JobId> cancelled_running;
      std::vector<Job> admitted = admit(cancelled_queued, cancelled_running);
      for (Job& j : cancelled_queued) done_cancelled(j.job);
      if (!cancelled_running.empty()) {
        std::vector<std::unique_ptr<Running>> keep;
        for (auto& r : running) {
          if (cancelled_running.count(r->j.id)) {
            r->run->cancel();
            stop_sequence(*r);
          } else {
            keep.push_back(std::move(r));
          }
        }
        running = std::move(keep);
      }
      if (!admitted.empty()) start(admitted);
      try {
        if (step()) continue;
      } catch (const Error& e) {
        fail_running(e.what(), e.code());
        continue;
      } catch (const std::exception& e) {
        fail_running(e.what(), ErrorCode::Internal);
        continue;
      }
      std::unique_lock<std::mutex> lk(mu);
      if (queue.empty() && n_running == 0) idle_cv.notify_all();
      if (stopping && queue.empty() && n_running == 0) return;
      cv.wait(lk, [&] { return stopping || cancel_everything || !queue.empty() || !cancelled.empty(); });
    }
  }
};

Scheduler::Scheduler(Engine& engine, const SchedulerOptions& options)
    : impl_(std::make_unique<Impl>(engine, options)) {
  impl_->worker = std::thread([this] { impl_->loop(); });
}

Scheduler::~Scheduler() {
  {
    // Nothing more is admitted; every job, queued or running, is cancelled at the worker's next step.
    std::lock_guard<std::mutex> lk(impl_->mu);
    impl_->accepting = false;
    impl_->stopping = true;
    impl_->cancel_everything = true;
  }
  impl_->cv.notify_all();
  impl_->worker.join();
}

const SchedulerOptions& Scheduler::options() const { return impl_->opt; }

std::optional<Scheduler::JobId> Scheduler::submit(SchedulerJob job) {
  Impl& s = *impl_;
  EngineImpl& m = s.m;
  const GenerationOptions& o = job.options;
  engine::check_options(o);
  XC2_CHECK(o.num_beams == 1, Unsupported, "the scheduler does not run beam search (num_beams must be 1)");
  XC2_CHECK(job.images.empty() || job.request.images.empty(), InvalidArgument,
            "a job carries either encoded images or images to encode, not both");
  for (const Engine::PreparedImage& img : job.images) XC2_CHECK(img.error.empty(), InvalidArgument, img.error);
  Impl::Job j;
  // Tokenize now (marker count, prompt length) with stand-ins for the images still to encode.
  Request counted = job.request;
  if (!job.images.empty()) counted.images.assign(job.images.size(), nullptr);
  j.prompt = m.tokenize_request(counted);
  const int64_t vt = m.cfg().visual_tokens();
  int64_t T = j.prompt.n_positions(vt);
  const int64_t limit = m.cfg().max_length;
  if (T > limit) {
    XC2_CHECK(o.truncate_prompt, InvalidArgument, "the prompt needs ", T, " positions but the model's max_length is ",
              limit);
    T = limit;
  }
  XC2_CHECK(T > 0, InvalidArgument, "the prompt is empty");
  j.positions = T;
  j.reserve = T + o.max_new_tokens;
  XC2_CHECK(j.reserve <= s.opt.kv_budget, InvalidArgument, "the request needs ", j.reserve, " KV positions (prompt ",
            T, " + max_new_tokens ", o.max_new_tokens, ") but the KV budget is ", s.opt.kv_budget);
  // Prefix-cache keys: token ids, and for image rows the image's content and the row.
  std::vector<uint64_t> image_hash;
  if (!job.images.empty()) {
    for (const Engine::PreparedImage& img : job.images)
      image_hash.push_back(hash_bytes(img.pixels.data(), img.pixels.size() * sizeof(float)));
  } else {
    // Already encoded: the pixels are not at hand, so each such image gets a key of its own (never reused).
    for (size_t k = 0; k < job.request.images.size(); ++k) image_hash.push_back(mix(0x68616e646c65ull, ++s.unique_keys));
  }
  for (const text::PromptSegment& seg : j.prompt.segments) {
    if (static_cast<int64_t>(j.keys.size()) >= T) break;
    if (seg.image >= 0) {
      for (int64_t r = 0; r < vt; ++r) j.keys.push_back(image_row_key(image_hash.at(static_cast<size_t>(seg.image)), r));
    } else {
      for (int32_t id : seg.ids) j.keys.push_back(token_key(id));
    }
  }
  j.keys.resize(static_cast<size_t>(T));
  j.t_submit = Clock::now();
  j.job = std::move(job);
  {
    std::lock_guard<std::mutex> lk(s.mu);
    XC2_CHECK(s.accepting, InvalidArgument, "the scheduler is shutting down");
    // A request that takes a free slot at once does not count as waiting.
    const int64_t waiting = static_cast<int64_t>(s.queue.size());
    if (waiting >= s.opt.max_queue && s.n_running + waiting >= s.opt.max_batch) return std::nullopt;
    j.id = s.next_id++;
    const JobId id = j.id;
    s.queue.push_back(std::move(j));
    s.cv.notify_all();
    return id;
  }
}

void Scheduler::cancel(JobId id) {
  {
    std::lock_guard<std::mutex> lk(impl_->mu);
    impl_->cancelled.insert(id);
  }
  impl_->cv.notify_all();
}

void Scheduler::cancel_all() {
  {
    std::lock_guard<std::mutex> lk(impl_->mu);
    impl_->cancel_everything = true;
  }
  impl_->cv.notify_all();
}

void Scheduler::stop_accepting() {
  std::lock_guard<std::mutex> lk(impl_->mu);
  impl_->accepting = false;
}

void Scheduler::wait_idle() {
  std::unique_lock<std::mutex> lk(impl_->mu);
  impl_->idle_cv.wait(lk, [&] { return impl_->queue.empty() && impl_->n_running == 0; });
}

SchedulerStats Scheduler::stats() const {
  std::lock_guard<std::mutex> lk(impl_->mu);
  SchedulerStats st = impl_->counters;
  st.queued = static_cast<int64_t>(impl_->queue.size());
  st.running = impl_->n_running;
  st.kv_reserved = impl_->kv_reserved;
  st.kv_cached = impl_->kv_cached;
  return st;
}

}  // namespace xc2
