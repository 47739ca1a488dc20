#include "core/thread_pool.h"

#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <string>
#include <system_error>
#include <vector>

#include "core/check.h"

namespace xc2 {

namespace {

constexpr int64_t kSpinMicros = 50;  // how long a worker (or the caller) spins before it sleeps
// run_balanced: how far each run moves the speeds towards its measured rates. Per-call rates are noisy (a decode
// step makes ~40 calls of 0.1-1 ms); 2-thread W4 decode, alternating xc2 chat runs: 0.05 faster than even halves
// by a median 3.5% (7 triples, -1% to +13%), 0.2 by 1.1% (-2% to +16%).
constexpr double kSpeedStep = 0.1;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

// Spins until done() or kSpinMicros have passed (the callers check done() again under the lock).
template <typename Done>
void spin_until(Done done) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(kSpinMicros);
  while (std::chrono::steady_clock::now() < until) {
    for (int i = 0; i < 64; ++i) {
      if (done()) return;
      cpu_relax();
    }
  }
}

}  // namespace

int hardware_threads() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  const unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? static_cast<int>(n) : 1;
}

ThreadPool::ThreadPool(int n_threads) {
  n_threads_ = n_threads > 0 ? n_threads : hardware_threads();
  speed_.reset(new std::atomic<double>[static_cast<size_t>(n_threads_)]);
  for (int i = 0; i < n_threads_; ++i) speed_[i].store(1.0, std::memory_order_relaxed);
  try {
    for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
  } catch (const std::system_error& e) {
    // Out of threads or memory for their stacks: stop the ones started and report it (never a hang or abort).
    const size_t started = workers_.size() + 1;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_start_.notify_all();
    for (auto& t : workers_) t.join();
    XC2_THROW(Internal, "cannot start ", n_threads_, " threads (", started, " started): ", e.code().message(),
              "; use fewer threads (--threads)");
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_start_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::worker_loop(int index) {
  uint64_t seen = 0;
  for (;;) {
    const std::function<void(int, int)>* job;
    int tasks;
    auto ready = [&] {
      return stop_.load(std::memory_order_acquire) || generation_.load(std::memory_order_acquire) != seen;
    };
    spin_until(ready);
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (!ready()) {
        ++sleepers_;
        cv_start_.wait(lock, ready);
        --sleepers_;
      }
      if (stop_) return;
      seen = generation_;
      job = job_;
      tasks = job_tasks_;
    }
    std::exception_ptr error;
    if (index < tasks) {
      try {
        (*job)(index, tasks);
      } catch (...) {
        error = std::current_exception();
      }
    }
    if (error) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!worker_error_) worker_error_ = error;
    }
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> lock(mu_);  // the caller may be between its check and its wait
      cv_done_.notify_one();
    }
  }
}

void ThreadPool::run(int n_tasks, const std::function<void(int, int)>& fn) {
  n_tasks = std::max(1, std::min(n_tasks, n_threads_));
  bool serial;
  {
    std::lock_guard<std::mutex> lock(mu_);
    serial = busy_ || n_tasks == 1;
    if (!serial) busy_ = true;
  }
  if (serial) {
    for (int t = 0; t < n_tasks; ++t) fn(t, n_tasks);
    return;
  }
  std::exception_ptr error;
  bool wake;
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_ = &fn;
    job_tasks_ = n_tasks;
    pending_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
    wake = sleepers_ > 0;
  }
  if (wake) cv_start_.notify_all();
  try {
    fn(0, n_tasks);
  } catch (...) {
    error = std::current_exception();
  }
  auto done = [&] { return pending_.load(std::memory_order_acquire) == 0; };
  spin_until(done);
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_done_.wait(lock, done);
    job_ = nullptr;
    busy_ = false;
    if (!error && worker_error_) error = worker_error_;
    worker_error_ = nullptr;
  }
  if (error) std::rethrow_exception(error);
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int64_t max_chunks = (n + grain - 1) / grain;
  const int n_tasks = static_cast<int>(std::min<int64_t>(n_threads_, max_chunks));
  if (n_tasks <= 1) {
    fn(0, n);
    return;
  }
  run(n_tasks, [&](int t, int nt) {
    const int64_t begin = n * t / nt;
    const int64_t end = n * (t + 1) / nt;
    if (begin < end) fn(begin, end);
  });
}

namespace {

bool even_split() {
  static const bool even = [] {
    const char* e = std::getenv("XC2_SPLIT");
    return e && std::string(e) == "even";
  }();
  return even;
}

}  // namespace

void ThreadPool::balanced_cuts(int n_tasks, int64_t units, int64_t* cuts) const {
  n_tasks = std::max(1, std::min(n_tasks, n_threads_));
  if (even_split()) {
    for (int t = 0; t <= n_tasks; ++t) cuts[t] = units * t / n_tasks;
    return;
  }
  double total = 0;
  for (int t = 0; t < n_tasks; ++t) total += speed_[t].load(std::memory_order_relaxed);
  double acc = 0;
  cuts[0] = 0;
  for (int t = 0; t < n_tasks; ++t) {
    acc += speed_[t].load(std::memory_order_relaxed);
    const auto at = static_cast<int64_t>(static_cast<double>(units) * (acc / total) + 0.5);
    cuts[t + 1] = t + 1 == n_tasks ? units : std::max(cuts[t], std::min(units, at));
  }
}

void ThreadPool::run_balanced(int n_tasks, int64_t units,
                              const std::function<void(int task, int64_t begin, int64_t end)>& fn) {
  n_tasks = std::max(1, std::min(n_tasks, n_threads_));
  if (n_tasks == 1) {
    fn(0, 0, units);
    return;
  }
  using Clock = std::chrono::steady_clock;
  // On the stack for up to kInline tasks (no allocation per call: a decode step makes dozens of these calls).
  constexpr int kInline = 16;
  struct Run {
    const std::function<void(int, int64_t, int64_t)>* fn;
    int64_t* cuts;
    double* finish;
    Clock::time_point start;
    std::thread::id caller;
    std::atomic<bool> serial{false};  // a nested call runs its tasks one after another on the caller
  } r;
  int64_t cuts_inline[kInline + 1];
  double finish_inline[kInline];
  std::vector<int64_t> cuts_heap;
  std::vector<double> finish_heap;
  if (n_tasks > kInline) {
    cuts_heap.resize(static_cast<size_t>(n_tasks) + 1);
    finish_heap.resize(static_cast<size_t>(n_tasks));
  }
  r.fn = &fn;
  r.cuts = n_tasks > kInline ? cuts_heap.data() : cuts_inline;
  r.finish = n_tasks > kInline ? finish_heap.data() : finish_inline;
  balanced_cuts(n_tasks, units, r.cuts);
  r.caller = std::this_thread::get_id();
  r.start = Clock::now();
  run(n_tasks, [p = &r](int t, int) {
    if (t > 0 && std::this_thread::get_id() == p->caller) p->serial.store(true, std::memory_order_relaxed);
    if (p->cuts[t] < p->cuts[t + 1]) (*p->fn)(t, p->cuts[t], p->cuts[t + 1]);
    p->finish[t] = std::chrono::duration<double>(Clock::now() - p->start).count();
  });
  if (r.serial.load(std::memory_order_relaxed) || even_split()) return;
  // Each task's rate in units per second, normalised to a mean of 1; nothing learned when a task had no work or
  // finished within 20 us (its clock readings would be mostly the wake-up).
  double sum = 0;
  for (int t = 0; t < n_tasks; ++t) {
    if (r.cuts[t + 1] <= r.cuts[t] || r.finish[t] < 20e-6) return;
    sum += static_cast<double>(r.cuts[t + 1] - r.cuts[t]) / r.finish[t];
  }
  for (int t = 0; t < n_tasks; ++t) {
    const double target = static_cast<double>(r.cuts[t + 1] - r.cuts[t]) / r.finish[t] * n_tasks / sum;
    const double v = speed_[t].load(std::memory_order_relaxed);
    speed_[t].store(std::min(4.0, std::max(0.25, v + kSpeedStep * (target - v))), std::memory_order_relaxed);
  }
}

}  // namespace xc2
