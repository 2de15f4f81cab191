// What every keyed op shares: the call's key (the noise key of docs/ops.md, the perturbation
// scale, the int8 fixed-point format) and the members it evaluates. One struct for the float
// and the int8 ops on the CPU and on CUDA; each op's check_<op> validates the fields it uses.
#pragma once
#include <cstdint>
#include "eggroll/noise.h"
#include "eggroll/tensor.h"

namespace eggroll {

// Largest rank any op accepts (float and int8, CPU and CUDA): bounds the per-thread scratch
// (n + m) * rank and keeps the int8 correction exact (docs/ops.md).
constexpr int64_t kMaxRank = 1024;

struct Key {
  uint64_t seed = 0;
  uint32_t param_id = 0;
  int64_t epoch = 0;        // [0, 2^32)
  int64_t noise_reuse = 1;  // [0, 2^32): e = epoch / noise_reuse, or 0 when noise_reuse == 0
  bool antithetic = true;   // member i: k = i / 2, sign (-1)^i; else k = i, sign +1
  double sigma = 1.0;       // float ops: finite, > 0, nonzero and finite as float32
  int64_t rank = 1;         // [1, kMaxRank] (low-rank ops)
  int64_t fixed_point = 4;  // int8 ops: [0, 7]
  int64_t sigma_shift = 0;  // int8 forward: [0, 32]
  // CUDA calls only: seed and / or epoch held in device memory (a traced JAX value, a tensor
  // that a replayed CUDA graph reads), which the kernels read in place of `seed` / `epoch`:
  // seed_device uint32 [2] (low, high words), epoch_device int64 [1]. No host code reads them,
  // so check_key cannot check them: the CUDA kernels flag an epoch outside [0, 2^32)
  // (cuda/eggroll/cuda.h, "Values on the device").
  const uint32_t* seed_device = nullptr;
  const int64_t* epoch_device = nullptr;

  EGGROLL_HD uint32_t epoch_index() const {
    return noise_reuse > 0 ? uint32_t(epoch / noise_reuse) : 0u;
  }
  EGGROLL_HD NoiseKey noise(uint32_t k) const {
    NoiseKey nk;
    nk.seed = seed; nk.param_id = param_id; nk.epoch_index = epoch_index(); nk.noise_index = k;
    return nk;
  }
};

// Which fields an op reads (and check_key validates): every use checks epoch and noise_reuse;
// float ops also sigma (and rank when low rank); int8 ops rank and fixed_point (and
// sigma_shift for the forward).
enum class KeyUse : int { float_full = 0, float_lowrank = 1, int8_forward = 2, int8_update = 3 };
// Throws ValueError naming the field ("sigma: ...", "rank: ...").
void check_key(const Key& key, KeyUse use);

// The members of a call: member i (0 <= i < count) is start + i * step (range form, never
// materialised: checked in O(1)) or index[i] (index form: int64 [count] in the memory of
// `device`). given == false: no members, i.e. the unperturbed product.
struct Members {
  int64_t count = 0;
  int64_t start = 0, step = 1;
  const int64_t* index = nullptr;
  Device device = Device::cpu;
  int device_index = 0;
  bool given = false;

  EGGROLL_HD int64_t operator[](int64_t i) const { return index ? index[i] : start + i * step; }

  static Members none() { return Members{}; }
  static Members range(int64_t start, int64_t step, int64_t count);
  // idx: int64 [M], contiguous (TypeError / ValueError naming "members" otherwise).
  static Members indices(const TensorView& idx);
};

// members.count == expected (ValueError "members: has 3 entries but the leading dimension of
// <what> is 4"); every index >= 0 with its noise index < 2^32 (checked in O(1) for a range,
// by a scan for a host index array). Device index arrays are not read here: their values are
// the caller's to vouch for, or to check with check_member_bounds.
void check_members(const Members& members, int64_t expected, bool antithetic, const char* what);
// The value rule alone, for bounds [lo, hi] of indices found elsewhere (a device reduction).
void check_member_bounds(int64_t lo, int64_t hi, bool antithetic);

}  // namespace eggroll
