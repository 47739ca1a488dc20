// A fixed pool of worker threads for the CPU kernels.
//   parallel_for(n, fn): calls fn(begin, end) on disjoint chunks covering [0, n), on the calling
//   thread plus the workers, and returns when all are done. Nested calls run serially.
// Between jobs a worker spins for a short while (kSpinMicros in thread_pool.cpp) before it sleeps on the
// condition variable, and the caller spins before it waits for the workers: a decode step runs about ten jobs
// per layer, and a futex wake-up costs tens of microseconds on a virtual machine.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
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
};

int hardware_threads();

}  // namespace xc2
