// A small persistent thread pool: workers sleep on a condition variable between jobs
// (no spinning, so they never steal cycles from the BLAS threads that run next).
#include "eggroll/parallel.h"
#include <algorithm>
#include <atomic>
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
      fn_ = &fn; ntasks_ = ntasks; pending_ = ntasks - 1; error_ = nullptr; ++generation_;
    }
    cv_.notify_all();
    run_task(0);
    std::unique_lock<std::mutex> lk(mu_);
    done_cv_.wait(lk, [&] { return pending_ == 0; });
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
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      if (id >= ntasks_) continue;
      lk.unlock();
      run_task(id);
      lk.lock();
      if (--pending_ == 0) done_cv_.notify_one();
    }
  }
  std::vector<std::thread> workers_;
  std::mutex mu_, run_mu_;
  std::condition_variable cv_, done_cv_;
  const std::function<void(int)>* fn_ = nullptr;
  int ntasks_ = 0, pending_ = 0;
  uint64_t generation_ = 0;
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
