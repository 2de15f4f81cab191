// Detection of the data cache sizes declared in cache_sizes.h (sysfs, then CPUID, then
// defaults). No CPUID outside x86: other targets read sysfs or take the defaults.
#include "cache_sizes.h"
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#define EGGROLL_HAVE_CPUID 1
#endif

namespace eggroll::detail {
namespace {

constexpr CacheSizes kDefaults{32 << 10, 512 << 10, 8 << 20};

// "32K", "1024K", "32M", "65536" -> bytes; 0 if unreadable.
int64_t parse_size(const char* s) {
  char* end = nullptr;
  const long long v = std::strtoll(s, &end, 10);
  if (v <= 0 || end == s) return 0;
  switch (*end) {
    case 'K': case 'k': return int64_t(v) << 10;
    case 'M': case 'm': return int64_t(v) << 20;
    case 'G': case 'g': return int64_t(v) << 30;
    default: return int64_t(v);
  }
}

bool read_line(const std::string& path, char* buf, int len) {
  FILE* f = std::fopen(path.c_str(), "r");
  if (!f) return false;
  const bool ok = std::fgets(buf, len, f) != nullptr;
  std::fclose(f);
  return ok;
}

// Linux: cpu0's cache/index*/{level,type,size}.
void from_sysfs(CacheSizes& c) {
  for (int i = 0; i < 16; ++i) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
    char level[32], type[32], size[32];
    if (!read_line(dir + "level", level, sizeof level)) break;
    if (!read_line(dir + "type", type, sizeof type) || !read_line(dir + "size", size, sizeof size))
      continue;
    const std::string t(type);
    if (t.rfind("Instruction", 0) == 0) continue;  // Data or Unified
    const int64_t bytes = parse_size(size);
    switch (std::atoi(level)) {
      case 1: if (!c.l1d) c.l1d = bytes; break;
      case 2: if (!c.l2) c.l2 = bytes; break;
      case 3: if (!c.l3) c.l3 = bytes; break;
      default: break;
    }
  }
}

#if defined(EGGROLL_HAVE_CPUID)
// CPUID's deterministic cache parameters: leaf 4 (Intel) or 0x8000001D (AMD, TOPOEXT); the
// same register layout. size = ways * partitions * line size * sets.
void from_cpuid(CacheSizes& c) {
  unsigned a, b, cx, d;
  if (!__get_cpuid(0, &a, &b, &cx, &d)) return;
  const bool amd = b == 0x68747541u;  // "Auth"enticAMD
  unsigned leaf = 4;
  if (amd) {
    if (!__get_cpuid(0x80000001u, &a, &b, &cx, &d) || !(cx & (1u << 22))) return;  // TOPOEXT
    leaf = 0x8000001Du;
  } else if (a < 4) {
    return;
  }
  for (unsigned sub = 0; sub < 16; ++sub) {
    __cpuid_count(leaf, sub, a, b, cx, d);
    const unsigned type = a & 31u, level = (a >> 5) & 7u;
    if (type == 0) break;   // no more caches
    if (type == 2) continue;  // instruction cache
    const int64_t bytes = int64_t((b >> 22) + 1) * (((b >> 12) & 0x3FFu) + 1) * ((b & 0xFFFu) + 1) *
                          (int64_t(cx) + 1);
    if (level == 1 && !c.l1d) c.l1d = bytes;
    if (level == 2 && !c.l2) c.l2 = bytes;
    if (level == 3 && !c.l3) c.l3 = bytes;
  }
}
#endif

CacheSizes detect() {
  CacheSizes c{0, 0, 0};
#if defined(__linux__)
  from_sysfs(c);
#endif
#if defined(EGGROLL_HAVE_CPUID)
  from_cpuid(c);  // fills only what sysfs did not give
#endif
  // Implausible or missing values: the defaults (a VM may report nothing or nonsense).
  auto pick = [](int64_t v, int64_t lo, int64_t hi, int64_t dflt) {
    return v >= lo && v <= hi ? v : dflt;
  };
  c.l1d = pick(c.l1d, 8 << 10, 2 << 20, kDefaults.l1d);
  c.l2 = pick(c.l2, 64 << 10, int64_t(64) << 20, kDefaults.l2);
  c.l3 = pick(c.l3, 256 << 10, int64_t(4) << 30, kDefaults.l3);
  return c;
}

std::atomic<const CacheSizes*> g_override{nullptr};

}  // namespace

const CacheSizes& cache_sizes() {
  if (const CacheSizes* o = g_override.load(std::memory_order_acquire)) return *o;
  static const CacheSizes detected = detect();
  return detected;
}

void override_cache_sizes(const CacheSizes* sizes) {
  g_override.store(sizes, std::memory_order_release);
}

}  // namespace eggroll::detail
