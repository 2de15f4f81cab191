// The core's threads: parallel_for's tasks are claimed from a shared counter by the caller and
// by helpers, which are the threads of the caller's Executor (a host framework's) or else a
// small persistent pool of our own. Between jobs a pool worker spins for a short while (50 us
// by default, EGGROLL_SPIN_US) and then sleeps on a condition variable: an op is several jobs
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
#include <memory>
#include <mutex>
#include <thread>
#include <vector>
#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif
#include "eggroll/check.h"
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

namespace eggroll {
namespace {

int cpus_available() {
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
#endif
  return int(std::max(1u, std::thread::hardware_concurrency()));
}

// More threads than this only cost memory and scheduling (results never depend on the count).
int max_threads() { return std::max(64, 8 * cpus_available()); }

int env_threads() {
  for (const char* name : {"EGGROLL_NUM_THREADS", "OMP_NUM_THREADS"}) {
    if (const char* v = std::getenv(name)) {
      const long n = std::strtol(v, nullptr, 10);
      if (n >= 1) return int(std::min<long>(n, max_threads()));
    }
  }
  return cpus_available();
}

std::atomic<int> g_threads{0};
thread_local bool t_in_pool = false;
thread_local const Executor* t_executor = nullptr;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
  __asm__ __volatile__("yield");
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

// One parallel_for call: tasks [0, n) claimed from `next` by every thread that joins.
// Held by shared_ptr: a helper that starts late (after the caller finished every task
// itself) only reads `next` and leaves; `fn` is called only for claimed tasks, all of which
// finish before the caller returns.
struct Job {
  const std::function<void(int)>* fn = nullptr;
  int n = 0;
  std::atomic<int> next{0}, done{0};
  std::mutex mu;                  // guards error; pairs the last task's notify with the wait
  std::condition_variable cv;
  std::exception_ptr error;
};

// Runs tasks until none is left to claim. Never throws (it may run on a host's thread).
void work(Job& j) {
  for (;;) {
    const int t = j.next.fetch_add(1, std::memory_order_acq_rel);
    if (t >= j.n) return;
    const bool outer = t_in_pool;
    t_in_pool = true;  // nested parallel_for calls run inline
    try {
      ScopedIeeeFloat ieee;  // a host framework's thread may flush subnormals
      (*j.fn)(t);
    } catch (...) {
      std::lock_guard<std::mutex> g(j.mu);
      if (!j.error) j.error = std::current_exception();
    }
    t_in_pool = outer;
    if (j.done.fetch_add(1, std::memory_order_acq_rel) + 1 == j.n) {
      std::lock_guard<std::mutex> g(j.mu);
      j.cv.notify_all();
    }
  }
}

// The caller's share: claim tasks, then wait for the ones other threads claimed.
void work_and_wait(Job& j) {
  work(j);
  auto finished = [&] { return j.done.load(std::memory_order_acquire) == j.n; };
  if (!spin_until(finished)) {
    std::unique_lock<std::mutex> lk(j.mu);
    j.cv.wait(lk, finished);
  }
}

class Pool {
 public:
  ~Pool() {
    { std::lock_guard<std::mutex> lk(mu_); stop_ = true; }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }
  // Runs every task of `job` with up to `helpers` workers joining the caller.
  void run(const std::shared_ptr<Job>& job, int helpers) {
    std::unique_lock<std::mutex> busy(run_mu_, std::try_to_lock);
    if (!busy.owns_lock()) {  // another thread is using the pool: the caller does it all
      work_and_wait(*job);
      return;
    }
    ensure_workers(helpers);
    {
      std::lock_guard<std::mutex> lk(mu_);
      job_ = job; helpers_ = helpers;
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    work_and_wait(*job);
    std::lock_guard<std::mutex> lk(mu_);
    job_.reset();
  }

 private:
  void ensure_workers(int n) {
    while (int(workers_.size()) < n) {
      int id = int(workers_.size()) + 1;
      workers_.emplace_back([this, id] { loop(id); });
    }
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
      std::shared_ptr<Job> j = id <= helpers_ ? job_ : nullptr;
      lk.unlock();
      if (j) work(*j);
    }
  }
  std::vector<std::thread> workers_;
  std::mutex mu_, run_mu_;
  std::condition_variable cv_;
  std::shared_ptr<Job> job_;  // guarded by mu_
  int helpers_ = 0;           // guarded by mu_
  std::atomic<uint64_t> generation_{0};
  bool stop_ = false;
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

void fork_join_entry(void* job) { work(*static_cast<Job*>(job)); }
void schedule_entry(void* ref) {
  auto* j = static_cast<std::shared_ptr<Job>*>(ref);
  work(**j);
  delete j;
}

// Runs fn(t) for t in [0, ntasks) on the calling thread's executor (or the pool).
void run_tasks(int ntasks, const std::function<void(int)>& fn) {
  auto job = std::make_shared<Job>();
  job->fn = &fn;
  job->n = ntasks;
  const Executor* ex = t_executor;
  if (ex && ex->fork_join) {
    // When the team (maybe only the caller) has returned, every task has run: members only
    // return once nothing is left to claim. work_and_wait then has nothing to do unless the
    // runtime ran no member at all, in which case the caller does the work itself.
    ex->fork_join(&fork_join_entry, job.get(), unsigned(ntasks), 0);
    work_and_wait(*job);
  } else if (ex && ex->schedule) {
    for (int i = 1; i < ntasks; ++i) ex->schedule(ex->ctx, &schedule_entry, new std::shared_ptr<Job>(job));
    work_and_wait(*job);
  } else {
    pool().run(job, ntasks - 1);
  }
  if (job->error) std::rethrow_exception(job->error);
}

}  // namespace

int num_threads() {
  if (const Executor* ex = t_executor) return std::max(1, ex->threads);
  int n = g_threads.load();
  if (n == 0) { n = env_threads(); g_threads.store(n); }
  return n;
}

void set_num_threads(int n) {
  if (n < 1) value_error("n: must be >= 1, got " + std::to_string(n));
  g_threads.store(std::min(n, max_threads()));
}

ScopedIeeeFloat::ScopedIeeeFloat() : prev_(0) {
#if defined(__x86_64__) || defined(__i386__)
  prev_ = _mm_getcsr();
  constexpr unsigned kFtzDaz = 0x8040;  // MXCSR flush-to-zero (bit 15), denormals-are-zero (6)
  if (prev_ & kFtzDaz) _mm_setcsr(prev_ & ~kFtzDaz);
#endif
}

ScopedIeeeFloat::~ScopedIeeeFloat() {
#if defined(__x86_64__) || defined(__i386__)
  if (_mm_getcsr() != prev_) _mm_setcsr(prev_);
#endif
}

ScopedExecutor::ScopedExecutor(const Executor* ex) : prev_(t_executor) { t_executor = ex; }
ScopedExecutor::~ScopedExecutor() { t_executor = prev_; }

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  int64_t tasks = std::min<int64_t>(num_threads(), (n + grain - 1) / grain);
  if (tasks <= 1 || t_in_pool) { fn(0, n); return; }
  int nt = int(tasks);
  run_tasks(nt, [&](int t) {
    int64_t b = n * t / nt, e = n * (t + 1) / nt;
    if (b < e) fn(b, e);
  });
}

}  // namespace eggroll
