// Continuous batching: requests join the running batch at the next step and leave it when they are done.
//
//   xc2::Scheduler sched(*engine, {});                  // starts its worker thread
//   xc2::SchedulerJob job;
//   job.request = ...; job.options = ...;
//   job.on_text = [](const std::string& piece) { ...; return true; };      // worker thread; false cancels
//   job.on_done = [](const xc2::GenerationResult& r, const std::string& error) { ... };  // exactly once
//   auto id = sched.submit(std::move(job));             // nullopt: the queue is full
//
// Each step runs one decoder forward over every running sequence: a decode row for each sequence that is
// generating, and the next chunk (SchedulerOptions::prefill_chunk rows) of each sequence still prefilling its
// prompt, so a long prompt never stalls the others for more than a chunk. A request gets exactly the tokens
// Engine::generate() gives it with the same options on the CPU backend (a GEMM row's bits do not depend on
// the other rows of the call); on a GPU the batched kernels may round differently from the lone-sequence path.
// Admission: a request waits in a bounded queue (FIFO) until a slot is free and its KV positions (prompt +
// max_new_tokens) fit the KV budget. Prefix reuse: finished sequences leave their KV rows in a cache keyed by a
// hash of their tokens and image content (blocks of SchedulerOptions::prefix_block positions, LRU inside the
// KV budget); a request whose prompt starts with cached blocks copies those rows instead of recomputing them.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "xc2/engine.h"

namespace xc2 {

struct SchedulerOptions {
  int max_batch = 8;          // sequences in the running batch
  int max_queue = 64;         // requests waiting for a slot (all max_batch busy); beyond this submit() refuses
  // KV positions the running sequences reserve (prompt + max_new_tokens each) plus the prefix cache holds.
  // 0: max_batch * (max_length + 1024).
  int64_t kv_budget = 0;
  int prefill_chunk = 256;    // prompt rows of one sequence per step
  int max_images_per_step = 8;  // images encoded (ViT + projector) together in one step
  bool prefix_cache = true;
  int prefix_block = 16;      // positions per prefix-cache block
};

struct SchedulerJob {
  Request request;  // request.images: encoded images, or empty when `images` is used
  // Images to encode in the scheduler (fill the request's markers in order); checked before submit().
  std::vector<Engine::PreparedImage> images;
  GenerationOptions options;
  StreamCallback on_text;  // pieces of the answer, on the worker thread; returning false cancels the request
  // Called once, on the worker thread, for every job submit() accepted: the result (stop_reason Cancelled when
  // cancelled), or a non-empty error (the message of the xc2::Error, whose code is in `code`).
  std::function<void(const GenerationResult& result, const std::string& error, ErrorCode code)> on_done;
};

struct SchedulerStats {
  int64_t queued = 0;             // waiting for a slot
  int64_t running = 0;            // in the batch (prefilling or decoding)
  int64_t kv_reserved = 0;        // positions reserved by running sequences
  int64_t kv_cached = 0;          // positions held by the prefix cache
  int64_t kv_budget = 0;
  uint64_t steps = 0;             // decoder forwards run
  uint64_t prefix_lookups = 0;    // requests that looked up the prefix cache
  uint64_t prefix_hits = 0;       // ... and found at least one block
  uint64_t prefix_hit_positions = 0;  // positions reused instead of recomputed
  uint64_t prompt_positions = 0;  // positions of the prompts admitted
  uint64_t generated_tokens = 0;
};

class Scheduler {
 public:
  using JobId = uint64_t;
  // Starts the worker thread. The engine must outlive the scheduler and not run anything else meanwhile
  // (Engine::prepare_image / prepare_image_bytes and tokenizing may run on other threads). submit(), cancel()
  // and stats() may be called from any thread.
  Scheduler(Engine& engine, const SchedulerOptions& options);
  ~Scheduler();  // cancels what is left (on_done with StopReason::Cancelled) and joins the worker
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  const SchedulerOptions& options() const;
  // Queues a job. Throws Error{InvalidArgument} for a job that can never run (bad options, a prompt past
  // max_length or one that needs more KV positions than the budget, a marker/image count mismatch) and when
  // the scheduler no longer accepts; nullopt when the queue is full.
  std::optional<JobId> submit(SchedulerJob job);
  // Cancels a queued or running job (its on_done comes with StopReason::Cancelled); unknown ids are ignored.
  void cancel(JobId id);
  // Cancels every queued and running job.
  void cancel_all();
  // Stops accepting jobs (submit throws); running and queued jobs go on.
  void stop_accepting();
  // Blocks until no job is queued or running.
  void wait_idle();
  SchedulerStats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace xc2
