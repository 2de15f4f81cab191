// The core's thread pool. Work is split into contiguous ranges whose results never depend
// on how many threads ran them (each output element is owned and ordered by one task).
#pragma once
#include <cstdint>
#include <functional>

namespace eggroll {

// Threads used by the core. Default: EGGROLL_NUM_THREADS, else OMP_NUM_THREADS, else the
// CPUs this process may run on. While an Executor is in scope on the calling thread,
// num_threads() is that executor's thread count.
// At most max(64, 8 x the CPUs this process may run on): more threads only cost memory and
// scheduling (results are the same bits for any thread count).
int num_threads();
void set_num_threads(int n);  // n >= 1 (ValueError otherwise), capped as above

// Calls fn(begin, end) on disjoint ranges covering [0, n), at most num_threads() at once,
// each range at least `grain` long. Exceptions from fn are rethrown on the caller.
// Nested or concurrent calls run inline on the calling thread (never deadlock).
// Ranges are claimed from a shared counter by whichever thread is free: the caller takes a
// range a late worker has not started, so a worker the OS is slow to wake (shared cores, VMs)
// costs at most one range's time, never the call's.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

// Where parallel_for's helpers run. By default they are the core's own pool; a host framework
// lends its intra-op threads instead (XLA's FFI thread pool, PyTorch's OpenMP team) so that
// its workers, which spin for a while after each of its ops, and ours never fight over the
// same cores. Results are the same bits whoever runs the ranges.
struct Executor {
  // Threads that may work at once, the caller included (>= 1).
  int threads = 1;
  // Fork-join (OpenMP's GOMP_parallel ABI): runs fn(arg) on a team of up to `threads`
  // threads, the caller among them, and returns when every member has returned.
  void (*fork_join)(void (*fn)(void*), void* arg, unsigned threads, unsigned flags) = nullptr;
  // Or schedule (XLA's FFI thread pool): runs fn(arg) once, at some later time, on one of the
  // host's threads - possibly never in parallel with the caller, which therefore never waits
  // for a helper that has not started.
  void (*schedule)(void* ctx, void (*fn)(void*), void* arg) = nullptr;
  void* ctx = nullptr;
};

// Makes `ex` the executor of parallel_for calls on this thread for the scope's lifetime
// (nullptr: the core's own pool). Scopes nest; the previous executor comes back on exit.
class ScopedExecutor {
 public:
  explicit ScopedExecutor(const Executor* ex);
  ~ScopedExecutor();
  ScopedExecutor(const ScopedExecutor&) = delete;
  ScopedExecutor& operator=(const ScopedExecutor&) = delete;

 private:
  const Executor* prev_;
};

// IEEE float arithmetic for the scope on this thread: clears flush-to-zero / denormals-are-zero
// (a host framework may have set them on its threads, e.g. XLA's), so that subnormal inputs
// and products give the same bits everywhere. Restores the previous mode on exit. Every CPU
// op runs under one, and parallel_for's tasks too.
class ScopedIeeeFloat {
 public:
  ScopedIeeeFloat();
  ~ScopedIeeeFloat();
  ScopedIeeeFloat(const ScopedIeeeFloat&) = delete;
  ScopedIeeeFloat& operator=(const ScopedIeeeFloat&) = delete;

 private:
  unsigned prev_;
};

}  // namespace eggroll
