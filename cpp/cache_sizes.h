// The CPU's data cache sizes as the OS or the CPU reports them, for the GEMM's cache blocking
// (gemm.cpp): blocks are sized from these at run time, never from constants fitted to one CPU.
#pragma once
#include <cstdint>

namespace eggroll::detail {

// Bytes. l1d and l2 are one core's (private on every CPU we target); l3 is one instance of
// the last-level cache, shared by several cores. 0 never appears: a level that could not be
// read gets a conservative default (32 KiB, 512 KiB, 8 MiB).
struct CacheSizes {
  int64_t l1d, l2, l3;
};

// Read once (Linux sysfs /sys/devices/system/cpu/cpu0/cache, else CPUID leaf 4 on Intel or
// 0x8000001D on AMD, x86 only), then cached. Blocking never changes results, only speed.
const CacheSizes& cache_sizes();

// Tests only: use `sizes` instead (nullptr: back to the detected ones). Not thread-safe
// against concurrent GEMM calls.
void override_cache_sizes(const CacheSizes* sizes);

}  // namespace eggroll::detail
