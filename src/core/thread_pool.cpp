#include "core/thread_pool.h"

#include <sched.h>

#include <algorithm>
#include <chrono>
#include <exception>
#include <system_error>

#include "core/check.h"

namespace xc2 {

namespace {

constexpr int64_t kSpinMicros = 50;  // how long a worker (or the caller) spins before it sleeps

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

}  // namespace xc2
