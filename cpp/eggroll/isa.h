// The one ISA registry: which SIMD path each kernel family runs. The float kernels (noise,
// GEMM) have scalar / avx2 / avx512 paths, the int8 GEMM scalar / avx2 / avx_vnni /
// avx512_vnni / amx; every path of a family gives identical bits, so the setting only changes
// speed. Detected at run time: never assumes this machine's CPU.
#pragma once
#include <string>
#include <vector>

namespace eggroll {

// Levels, narrowest first (on aarch64 the baseline is named "neon": its kernels are NEON).
// set_isa(level) makes every family use its widest path at or below
// that level which this CPU (and OS) supports; the default is the best level.
enum class IsaLevel : int { scalar = 0, avx2 = 1, avx_vnni = 2, avx512 = 3, avx512_vnni = 4,
                            amx = 5 };
const char* isa_name(IsaLevel level);
bool isa_supported(IsaLevel level);      // the CPU (and OS, for AMX) has the level's features
IsaLevel best_isa();                     // the widest supported level
IsaLevel active_isa_level();             // the level in use now
void set_isa(IsaLevel level);            // ValueError ("name: ...") if unsupported
void set_isa(const std::string& name);   // by name; ValueError for an unknown or unsupported one
std::vector<std::string> supported_isas();  // names of the supported levels, narrowest first

// What each family runs at the active level.
enum class Isa : int { scalar = 0, avx2 = 1, avx512 = 2 };                          // float
enum class Int8Isa : int { scalar = 0, avx2 = 1, avx_vnni = 2, avx512_vnni = 3, amx = 4 };
Isa active_isa();
Int8Isa active_int8_isa();

}  // namespace eggroll
