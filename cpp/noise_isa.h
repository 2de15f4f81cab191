// Per-ISA entry points of the noise kernel (each defined in its own translation unit,
// compiled with that ISA's flags); noise.cpp picks one at run time.
#pragma once
#include <cstdint>
#include "eggroll/noise.h"

namespace eggroll::detail {
void fill_normal_scalar(float* out, int64_t count, const NoiseKey& key, uint64_t offset);
void fill_normal_avx2(float* out, int64_t count, const NoiseKey& key, uint64_t offset);
void fill_normal_avx512(float* out, int64_t count, const NoiseKey& key, uint64_t offset);
void fill_normal_neon(float* out, int64_t count, const NoiseKey& key, uint64_t offset);  // aarch64
void philox4x32_scalar(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]);
}  // namespace eggroll::detail
