// The one ISA registry (cpp/eggroll/isa.h): run-time CPU feature detection and the level in
// use, from which the float kernels (noise, GEMM) and the int8 GEMM pick their paths.
#include "eggroll/isa.h"
#include <atomic>
#include <cstdlib>
#include <string>
#include "eggroll/check.h"
#include "int8_kernel.h"

namespace eggroll {
namespace {

constexpr IsaLevel kLevels[] = {IsaLevel::scalar, IsaLevel::avx2, IsaLevel::avx_vnni,
                                IsaLevel::avx512, IsaLevel::avx512_vnni, IsaLevel::amx};

// The x86 levels exist only where their kernels were built (EGGROLL_X86_KERNELS, set by the
// build on x86-64); elsewhere only the baseline level, and no CPUID. The float paths' GEMM tiles
// are FMA chains (vfmadd): a level is only offered where every instruction it uses exists.
bool cpu_has(IsaLevel level) {
#if defined(EGGROLL_X86_KERNELS) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  const bool fma = __builtin_cpu_supports("fma");
  const bool avx2 = __builtin_cpu_supports("avx2") && fma;
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                      fma;
  switch (level) {
    case IsaLevel::scalar: return true;
    case IsaLevel::avx2: return avx2;
    case IsaLevel::avx_vnni: return avx2 && __builtin_cpu_supports("avxvnni");
    case IsaLevel::avx512: return avx512;
    case IsaLevel::avx512_vnni: return avx512 && __builtin_cpu_supports("avx512vnni");
    case IsaLevel::amx:
      return __builtin_cpu_supports("amx-tile") && __builtin_cpu_supports("amx-int8") &&
             detail::amx_os_enable();
  }
  return false;
#else
  return level == IsaLevel::scalar;
#endif
}

// The widest supported level at or below `cap` among `family` (levels in ascending order).
template <size_t N>
IsaLevel widest(IsaLevel cap, const IsaLevel (&family)[N]) {
  IsaLevel best = IsaLevel::scalar;
  for (IsaLevel l : family)
    if (int(l) <= int(cap) && isa_supported(l)) best = l;
  return best;
}

// The level in use and what it means for each family (derived once per set_isa: fill_normal
// asks for every call).
std::atomic<int> g_level{-1}, g_float{0}, g_int8{0};

Isa float_path(IsaLevel cap) {
  static constexpr IsaLevel family[] = {IsaLevel::scalar, IsaLevel::avx2, IsaLevel::avx512};
  switch (widest(cap, family)) {
    case IsaLevel::avx512: return Isa::avx512;
    case IsaLevel::avx2: return Isa::avx2;
    default: return Isa::scalar;
  }
}

Int8Isa int8_path(IsaLevel cap) {
  static constexpr IsaLevel family[] = {IsaLevel::scalar, IsaLevel::avx2, IsaLevel::avx_vnni,
                                        IsaLevel::avx512_vnni, IsaLevel::amx};
  switch (widest(cap, family)) {
    case IsaLevel::amx: return Int8Isa::amx;
    case IsaLevel::avx512_vnni: return Int8Isa::avx512_vnni;
    case IsaLevel::avx_vnni: return Int8Isa::avx_vnni;
    case IsaLevel::avx2: return Int8Isa::avx2;
    default: return Int8Isa::scalar;
  }
}

void store(IsaLevel level) {
  g_float.store(int(float_path(level)));
  g_int8.store(int(int8_path(level)));
  g_level.store(int(level));
}

void ensure_level() {
  if (g_level.load(std::memory_order_acquire) < 0) store(best_isa());
}

// "'scalar', 'avx2', ..." for messages (the baseline is 'neon' on aarch64).
std::string level_names() {
  std::string s;
  for (IsaLevel l : kLevels) s += (s.empty() ? "'" : ", '") + std::string(isa_name(l)) + "'";
  return s;
}

}  // namespace

const char* isa_name(IsaLevel level) {
  switch (level) {
#if defined(EGGROLL_NEON_KERNELS)  // aarch64: the baseline level runs the NEON kernels
    case IsaLevel::scalar: return "neon";
#else
    case IsaLevel::scalar: return "scalar";
#endif
    case IsaLevel::avx2: return "avx2";
    case IsaLevel::avx_vnni: return "avx_vnni";
    case IsaLevel::avx512: return "avx512";
    case IsaLevel::avx512_vnni: return "avx512_vnni";
    case IsaLevel::amx: return "amx";
  }
  return "unknown";
}

bool isa_supported(IsaLevel level) {
  // Detected once (AMX asks the OS once). EGGROLL_MAX_ISA=<level> makes this process behave
  // as on a CPU without the wider levels: how the tests are run as on an AVX2-only machine.
  static const int mask = [] {
    int cap = int(IsaLevel::amx);
    if (const char* env = std::getenv("EGGROLL_MAX_ISA"); env && *env) {
      cap = -1;
      for (IsaLevel l : kLevels)
        if (std::string(env) == isa_name(l)) cap = int(l);
      if (cap < 0) value_error("EGGROLL_MAX_ISA: expected one of " + level_names() + ", got '" + env + "'");
    }
    int m = 0;
    for (IsaLevel l : kLevels) m |= int(l) <= cap && cpu_has(l) ? 1 << int(l) : 0;
    return m;
  }();
  return (mask >> int(level)) & 1;
}

IsaLevel best_isa() { return widest(IsaLevel::amx, kLevels); }

IsaLevel active_isa_level() {
  ensure_level();
  return IsaLevel(g_level.load());
}

std::vector<std::string> supported_isas() {
  std::vector<std::string> v;
  for (IsaLevel l : kLevels)
    if (isa_supported(l)) v.emplace_back(isa_name(l));
  return v;
}

void set_isa(IsaLevel level) {
  if (int(level) < 0 || int(level) > int(IsaLevel::amx)) value_error("name: unknown ISA level");
  if (!isa_supported(level)) {
    std::string have;
    for (const std::string& s : supported_isas()) have += (have.empty() ? "" : ", ") + s;
    value_error(std::string("name: this CPU (or OS) does not support '") + isa_name(level) +
                "'; supported here: " + have);
  }
  store(level);
}

void set_isa(const std::string& name) {
  for (IsaLevel l : kLevels)
    if (name == isa_name(l)) return set_isa(l);
  value_error("name: expected one of " + level_names() + ", got '" + name + "'");
}

Isa active_isa() {
  ensure_level();
  return Isa(g_float.load(std::memory_order_relaxed));
}

Int8Isa active_int8_isa() {
  ensure_level();
  return Int8Isa(g_int8.load(std::memory_order_relaxed));
}

}  // namespace eggroll
