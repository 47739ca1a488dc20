// A fixed pool of worker threads for the CPU kernels.
//   parallel_for(n, fn): calls fn(begin, end) on disjoint chunks covering [0, n), on the calling
//   thread plus the workers, and returns when all are done. Nested calls run serially.
// Between jobs a worker spins for a short while (kSpinMicros in thread_pool.cpp) before it sleeps on the
// condition variable, and the caller spins before it waits for the workers: a decode step runs about ten jobs
// per layer, and a futex wake-up costs tens of microseconds on a virtual machine.
//   run_balanced(n, units, fn): fn(task, begin, end) over [0, units) in contiguous runs sized by the tasks'
//   speeds, learned from when each task of earlier balanced runs finished (see there).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace xc2 {

class ThreadPool {
 public:
  // n_threads <= 0: all hardware threads.
  explicit ThreadPool(int n_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Splits [0, n) into at most size() contiguous chunks of at least `grain` items each.
  void parallel_for(int64_t n, const std::function<void(int64_t begin, int64_t end)>& fn, int64_t grain = 1);

  // Runs fn(task, n_tasks) for task in [0, n_tasks) with n_tasks <= size(); task 0 on the caller.
  void run(int n_tasks, const std::function<void(int task, int n_tasks)>& fn);

  // Runs fn(task, begin, end) for task in [0, n_tasks), n_tasks <= size(), over contiguous runs that cover
  // [0, units) in task order, each run in proportion to its task's speed (task 0 on the caller). After each run
  // every task's rate (units per second from the common start to its finish) moves the speeds a tenth of the way
  // towards the rates measured. One vCPU of a shared machine can run slower than the other for seconds at a time
  // (another process or virtual machine on its core), and a worker starts some microseconds after the caller:
  // with even runs the faster thread waits at every join (1.5-10% of a 2-thread W4 decode's linear time, by the
  // minute; 1.2-4% with learned runs: docs/perf.md).
  // Callers use it where the results do not depend on the split (each output computed whole by one task).
  // XC2_SPLIT=even keeps even runs (no learning). Nested calls run serially and learn nothing.
  void run_balanced(int n_tasks, int64_t units, const std::function<void(int task, int64_t begin, int64_t end)>& fn);

  // The runs run_balanced() would give now: cuts[t] to cuts[t + 1] for task t (n_tasks + 1 values).
  void balanced_cuts(int n_tasks, int64_t units, int64_t* cuts) const;

 private:
  void worker_loop(int index);

  int n_threads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_start_;
  std::condition_variable cv_done_;
  const std::function<void(int, int)>* job_ = nullptr;
  int job_tasks_ = 0;
  std::atomic<uint64_t> generation_{0};  // written under mu_; read by spinning workers without it
  std::atomic<int> pending_{0};          // workers still running the current job
  int sleepers_ = 0;                     // workers waiting on cv_start_ (under mu_)
  std::atomic<bool> stop_{false};
  bool busy_ = false;
  std::exception_ptr worker_error_;
  std::unique_ptr<std::atomic<double>[]> speed_;  // per task index (the caller is task 0; worker i runs task i)
};

int hardware_threads();

}  // namespace xc2
