// The counter-based noise stream (docs/noise.md): Philox4x32-10 keyed by (seed, param_id,
// epoch index e, noise index k), mapped to float32 standard normals by Box–Muller with the
// project's own log/sin/cos (docs/noise.md). Bit-identical for any thread count and SIMD path.
#pragma once
#include <cstdint>
#include <vector>
#include "eggroll/isa.h"
#include "eggroll/tensor.h"

// Code shared by the CPU core and the CUDA kernels (the noise math, the key's accessors):
// nvcc compiles it for host and device, host compilers as plain C++.
#if defined(__CUDACC__)
#define EGGROLL_HD __host__ __device__
#else
#define EGGROLL_HD
#endif

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

// out[0 .. count) = z(key)[offset .. offset + count). Single-threaded; the active ISA's path.
void fill_normal(float* out, int64_t count, const NoiseKey& key, uint64_t offset);

// z(key)[0 .. count), from a small memo of the calling thread's last streams when count is
// at most kMemoNormals (else computed into `scratch`, which the result then points into).
// A stream is a pure function of (key, count), so a hit has the same bits as a fill; it
// spares a rollout that calls the same members' layers at every step (the same key, tiny
// shapes) regenerating their factors each time. Valid until this thread's next call.
constexpr int64_t kMemoNormals = 2048;
const float* normals_memo(const NoiseKey& key, int64_t count, std::vector<float>& scratch);

// out float32 [count] = z(key)[offset .. offset + count), offset + count <= 2^34.
struct NormalPlan {
  TensorView out;
  NoiseKey key;
  uint64_t offset = 0;
  int64_t count = 0;
};
NormalPlan check_normal(const TensorView& out, const NoiseKey& key, uint64_t offset);
void normal(const NormalPlan& plan);  // CPU: split over the pool (identical bits)
inline void run(const NormalPlan& plan) { normal(plan); }  // the bindings' run(plan), by overload

// counter uint32 [..., 4], key uint32 [2] -> out uint32 [..., 4] (counter's shape).
struct PhiloxPlan {
  TensorView counter, key, out;
  int64_t blocks = 0;  // counter.numel() / 4
};
PhiloxPlan check_philox4x32(const TensorView& counter, const TensorView& key,
                            const TensorView& out);
void philox4x32(const PhiloxPlan& plan);  // CPU
inline void run(const PhiloxPlan& plan) { philox4x32(plan); }  // the bindings' run(plan), by overload

// Convenience for C++ callers: check, then run on the CPU.
inline void normal(const TensorView& out, const NoiseKey& key, uint64_t offset) {
  normal(check_normal(out, key, offset));
}
inline void philox4x32(const TensorView& counter, const TensorView& key, const TensorView& out) {
  philox4x32(check_philox4x32(counter, key, out));
}

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
