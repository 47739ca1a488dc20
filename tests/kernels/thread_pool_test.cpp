// The worker pool of the CPU kernels (src/core/thread_pool.h): every task runs once per job, on jobs that come
// back to back (workers still spinning) and after pauses longer than the spin (workers asleep); errors reach the
// caller and leave the pool usable; nested jobs run serially; a pool can be destroyed in either state;
// run_balanced covers its units once, in task order, and gives a slower task a smaller share.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>

#include "core/thread_pool.h"
#include "support/test_util.h"

namespace xc2 {
namespace {

TEST(ThreadPool, EveryTaskOncePerJobBackToBackAndAfterSleeping) {
  for (int threads : {2, 3, 4}) {
    ThreadPool pool(threads);
    std::vector<std::atomic<int>> hits(static_cast<size_t>(threads));
    for (int job = 0; job < 3000; ++job) {
      if (job % 500 == 499) std::this_thread::sleep_for(std::chrono::milliseconds(2));  // past the spin
      for (auto& h : hits) h.store(0);
      pool.run(threads, [&](int t, int nt) {
        ASSERT_EQ(nt, threads);
        hits[static_cast<size_t>(t)].fetch_add(1);
      });
      for (int t = 0; t < threads; ++t) ASSERT_EQ(hits[static_cast<size_t>(t)].load(), 1) << "job " << job << " task " << t;
    }
    // parallel_for covers [0, n) once.
    std::vector<std::atomic<int>> seen(1000);
    pool.parallel_for(1000, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) seen[static_cast<size_t>(i)].fetch_add(1);
    });
    for (auto& s : seen) ASSERT_EQ(s.load(), 1);
  }
}

TEST(ThreadPool, ErrorsReachTheCallerAndThePoolGoesOn) {
  ThreadPool pool(3);
  EXPECT_THROW(pool.run(3, [](int t, int) {
    if (t == 2) throw std::runtime_error("worker");
  }), std::runtime_error);
  EXPECT_THROW(pool.run(3, [](int t, int) {
    if (t == 0) throw std::runtime_error("caller");
  }), std::runtime_error);
  std::atomic<int> sum{0};
  pool.run(3, [&](int t, int) { sum += t + 1; });
  EXPECT_EQ(sum.load(), 6);
}

TEST(ThreadPool, NestedJobsRunSerially) {
  ThreadPool pool(2);
  std::atomic<int> inner{0};
  pool.run(2, [&](int, int) { pool.run(2, [&](int, int) { inner.fetch_add(1); }); });
  EXPECT_EQ(inner.load(), 4);
}

TEST(ThreadPool, DestroyedWhileSpinningOrAsleep) {
  for (int i = 0; i < 50; ++i) {
    ThreadPool pool(2);
    pool.run(2, [](int, int) {});
    if (i % 2) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ThreadPool idle(4);  // never given a job
}

// Even shares on a fresh pool; every unit once, each task one contiguous run, the runs in task order.
TEST(ThreadPool, RunBalancedCoversEveryUnitOnceInTaskOrder) {
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    std::vector<int64_t> cuts(static_cast<size_t>(threads) + 1);
    pool.balanced_cuts(threads, 900, cuts.data());  // before any run: even
    for (int t = 0; t <= threads; ++t) EXPECT_EQ(cuts[static_cast<size_t>(t)], 900 * t / threads);
    for (int64_t units : {int64_t{0}, int64_t{1}, int64_t{2}, int64_t{7}, int64_t{1000}}) {
      std::vector<std::atomic<int>> seen(static_cast<size_t>(units));
      std::vector<int64_t> begin(static_cast<size_t>(threads), -1), end(static_cast<size_t>(threads), -1);
      pool.run_balanced(threads, units, [&](int t, int64_t b, int64_t e) {
        begin[static_cast<size_t>(t)] = b;
        end[static_cast<size_t>(t)] = e;
        for (int64_t i = b; i < e; ++i) seen[static_cast<size_t>(i)].fetch_add(1);
      });
      for (auto& s : seen) ASSERT_EQ(s.load(), 1) << threads << " threads, " << units << " units";
      int64_t at = 0;
      for (int t = 0; t < threads; ++t) {
        if (begin[static_cast<size_t>(t)] < 0) continue;  // a task with an empty run need not be called
        EXPECT_EQ(begin[static_cast<size_t>(t)], at) << "task " << t;
        at = end[static_cast<size_t>(t)];
      }
      EXPECT_EQ(at, units);
    }
  }
}

// A task that runs 3x slower per unit ends up with about a third of the others' share (the finish times then meet).
TEST(ThreadPool, RunBalancedGivesASlowerTaskLess) {
  ThreadPool pool(2);
  const double share0 = test::skew_pool_speeds(pool);
  EXPECT_GT(share0, 0.65);
  EXPECT_LT(share0, 0.85);
  // Nested calls run serially on the caller and learn nothing; they still cover every unit once.
  std::vector<int64_t> before(3), after(3);
  pool.balanced_cuts(2, 1000, before.data());
  std::atomic<int> covered{0};
  pool.run(2, [&](int, int) {
    pool.run_balanced(2, 100, [&](int, int64_t b, int64_t e) { covered.fetch_add(static_cast<int>(e - b)); });
  });
  EXPECT_EQ(covered.load(), 200);
  pool.balanced_cuts(2, 1000, after.data());
  EXPECT_EQ(before, after);
}

}  // namespace
}  // namespace xc2
