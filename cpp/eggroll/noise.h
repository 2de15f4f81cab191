// The counter-based noise stream (spec/noise.md): Philox4x32-10 keyed by (seed, param_id,
// epoch index e, noise index k), mapped to float32 standard normals by Box–Muller with the
// project's own log/sin/cos (docs/noise.md). Bit-identical for any thread count and SIMD path.
#pragma once
#include <cstdint>
#include "eggroll/tensor.h"

namespace eggroll {

// Which generator region a value comes from: z(seed, param_id, e, k)[j].
struct NoiseKey {
  uint64_t seed = 0;
  uint32_t param_id = 0;
  uint32_t epoch_index = 0;  // e = epoch // noise_reuse (or 0)
  uint32_t noise_index = 0;  // k = member // 2 (antithetic) or member
};

// The values j < 2^34 of one stream are addressable (counter word 0 = j / 4).
constexpr uint64_t kStreamLength = uint64_t(1) << 34;

// Raw generator: out[4] = Philox4x32-10(counter[4], key[2]).
void philox4x32(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]);

// out[0 .. count) = z(key)[offset .. offset + count). Single-threaded; picks the best ISA.
void fill_normal(float* out, int64_t count, const NoiseKey& key, uint64_t offset);

// Same, split over the thread pool for large counts (identical bits).
void normal(const TensorView& out /* float32[count] */, const NoiseKey& key, uint64_t offset);

// Batch form of philox4x32: counter uint32[count, 4], key uint32[2] -> out uint32[count, 4].
void philox4x32(const TensorView& counter, const TensorView& key, const TensorView& out);

// SIMD path selection (for tests and benchmarks). "auto" picks the widest the CPU has.
enum class Isa : int { scalar = 0, avx2 = 1, avx512 = 2 };
Isa best_isa();              // widest supported by this CPU
Isa active_isa();            // the one in use now
void set_isa(Isa isa);       // throws ValueError if the CPU lacks it
const char* isa_name(Isa isa);

// Per-member noise mapping of ops.md: (k, sign) for member i.
struct MemberNoise { uint32_t k; float sign; };
inline MemberNoise member_noise(int64_t member, bool antithetic) {
  if (antithetic) return {uint32_t(member >> 1), (member & 1) ? -1.0f : 1.0f};
  return {uint32_t(member), 1.0f};
}
inline uint32_t epoch_index(int64_t epoch, int64_t noise_reuse) {
  return noise_reuse > 0 ? uint32_t(epoch / noise_reuse) : 0u;
}

}  // namespace eggroll
