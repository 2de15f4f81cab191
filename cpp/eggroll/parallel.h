// The core's thread pool. Work is split into contiguous ranges whose results never depend
// on how many threads ran them (each output element is owned and ordered by one task).
#pragma once
#include <cstdint>
#include <functional>

namespace eggroll {

// Threads used by the core. Default: EGGROLL_NUM_THREADS, else OMP_NUM_THREADS, else the
// CPUs this process may run on.
int num_threads();
void set_num_threads(int n);  // n >= 1; ValueError otherwise

// Calls fn(begin, end) on disjoint ranges covering [0, n), at most num_threads() at once,
// each range at least `grain` long. Exceptions from fn are rethrown on the caller.
// Nested or concurrent calls run inline on the calling thread (never deadlock).
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace eggroll
