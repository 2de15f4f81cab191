// A small persistent thread pool. Between jobs a worker spins for a short while (50 us by
// default, EGGROLL_SPIN_US) and then sleeps on a condition variable: an op is several jobs
// back to back (pack, compute, correction), and waking a sleeping thread on a VM costs
// 50-500 us, yet a long spin would steal a core from whatever runs next (NumPy's OpenBLAS
// spins for ~0.1 s after each call, which is exactly the behaviour we avoid).
#include "eggroll/parallel.h"
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>
#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif
#include "eggroll/check.h"

namespace eggroll {
namespace {

int env_threads() {
  for (const char* name : {"EGGROLL_NUM_THREADS", "OMP_NUM_THREADS"}) {
    if (const char* v = std::getenv(name)) {
      int n = std::atoi(v);
      if (n >= 1) return n;
    }
  }
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
#endif
  return std::max(1u, std::thread::hardware_concurrency());
}

std::atomic<int> g_threads{0};
thread_local bool t_in_pool = false;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

int spin_us() {
  static const int us = [] {
    const char* v = std::getenv("EGGROLL_SPIN_US");
    return v ? std::max(0, std::atoi(v)) : 50;
  }();
  return us;
}

// Spins until pred() or the spin budget is used up; returns pred().
template <class Pred>
bool spin_until(Pred pred) {
  if (pred()) return true;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(spin_us());
  for (int i = 1;; ++i) {
    cpu_relax();
    if (pred()) return true;
    if ((i & 63) == 0 && std::chrono::steady_clock::now() > deadline) return false;
  }
}

class Pool {
 public:
  ~Pool() {
    { std::lock_guard<std::mutex> lk(mu_); stop_ = true; }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }
  // Runs fn(task) for task in [0, ntasks); the caller runs task 0.
  void run(int ntasks, const std::function<void(int)>& fn) {
    std::unique_lock<std::mutex> busy(run_mu_, std::try_to_lock);
    if (!busy.owns_lock()) {  // another thread is using the pool: run inline
      for (int t = 0; t < ntasks; ++t) fn(t);
      return;
    }
    ensure_workers(ntasks - 1);
    {
      std::lock_guard<std::mutex> lk(mu_);
      fn_ = &fn; ntasks_ = ntasks; error_ = nullptr;
      pending_.store(ntasks - 1, std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_release);  // publishes fn_, ntasks_
    }
    cv_.notify_all();
    run_task(0);
    if (!spin_until([&] { return pending_.load(std::memory_order_acquire) == 0; })) {
      std::unique_lock<std::mutex> lk(mu_);
      done_cv_.wait(lk, [&] { return pending_.load(std::memory_order_acquire) == 0; });
    }
    std::lock_guard<std::mutex> lk(mu_);
    fn_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void ensure_workers(int n) {
    while (int(workers_.size()) < n) {
      int id = int(workers_.size()) + 1;
      workers_.emplace_back([this, id] { loop(id); });
    }
  }
  void run_task(int t) {
    t_in_pool = true;
    try { (*fn_)(t); } catch (...) {
      std::lock_guard<std::mutex> lk(mu_);
      if (!error_) error_ = std::current_exception();
    }
    t_in_pool = false;
  }
  void loop(int id) {
    uint64_t seen = 0;
    for (;;) {
      auto fresh = [&] { return generation_.load(std::memory_order_acquire) != seen; };
      std::unique_lock<std::mutex> lk(mu_, std::defer_lock);
      if (!spin_until(fresh)) {
        lk.lock();
        cv_.wait(lk, [&] { return stop_ || fresh(); });
        if (stop_) return;
      } else {
        lk.lock();
      }
      seen = generation_.load(std::memory_order_acquire);
      const bool mine = id < ntasks_;
      lk.unlock();
      if (!mine) continue;
      run_task(id);
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> g(mu_);  // pairs with the caller's wait predicate
        done_cv_.notify_one();
      }
    }
  }
  std::vector<std::thread> workers_;
  std::mutex mu_, run_mu_;
  std::condition_variable cv_, done_cv_;
  const std::function<void(int)>* fn_ = nullptr;
  int ntasks_ = 0;
  std::atomic<int> pending_{0};
  std::atomic<uint64_t> generation_{0};
  bool stop_ = false;
  std::exception_ptr error_;
};

Pool* g_pool = nullptr;
std::once_flag g_atfork_once;

Pool& pool() {
#if defined(__linux__)
  // A forked child has none of the parent's worker threads: forget the pool (leak it,
  // its threads do not exist here) and build a new one on first use.
  std::call_once(g_atfork_once, [] { pthread_atfork(nullptr, nullptr, [] { g_pool = nullptr; }); });
#endif
  if (!g_pool) g_pool = new Pool();  // never destroyed: workers must outlive static dtors
  return *g_pool;
}

}  // namespace

int num_threads() {
  int n = g_threads.load();
  if (n == 0) { n = env_threads(); g_threads.store(n); }
  return n;
}

void set_num_threads(int n) {
  if (n < 1) value_error("num_threads: must be >= 1, got " + std::to_string(n));
  g_threads.store(n);
}

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  int64_t tasks = std::min<int64_t>(num_threads(), (n + grain - 1) / grain);
  if (tasks <= 1 || t_in_pool) { fn(0, n); return; }
  int nt = int(tasks);
  pool().run(nt, [&](int t) {
    int64_t b = n * t / nt, e = n * (t + 1) / nt;
    if (b < e) fn(b, e);
  });
}

}  // namespace eggroll
