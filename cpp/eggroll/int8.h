// The integer (int8) path (docs/ops.md "Integer path (int8)"): the perturbed int8 forward and
// the thresholded +-1 vote update. Every result is exact integer arithmetic, bit-identical on
// every ISA path and thread count. check_<op> -> plan -> run, as in perturb.h.
#pragma once
#include <cstdint>
#include "eggroll/key.h"
#include "eggroll/tensor.h"

namespace eggroll {

// Inner dimension limit that keeps every int32 accumulator exact:
// |x_i . W_j| <= 128 * 128 * n <= 2^30 for n <= 2^16.
constexpr int64_t kInt8MaxN = int64_t(1) << 16;

// y int8 [M, m] | [M, b, m] from x int8 [M, n] | [M, b, n] (leading stride 0: shared input)
// and W int8 [m, n]:
//   acc = x_i W^T + (((x_i B_k) (s_i A_k)^T) >> (fixed_point + sigma_shift))   (exact)
//   y_i = clamp(floor(acc / (2^fixed_point * isqrt(n))), -127, 127)
// members: M entries, or none (the unperturbed product: no correction).
struct Int8ForwardPlan {
  TensorView x, W, out;
  Members members;
  Key key;
  int64_t M = 0, b = 1, n = 0, m = 0;
  int64_t x_stride = 0;  // b n, or 0 (shared input)
};
Int8ForwardPlan check_perturbed_matmul_int8(const TensorView& x, const TensorView& W,
                                            const Members& members, const Key& key,
                                            const TensorView& out);
void perturbed_matmul_int8(const Int8ForwardPlan& plan);
inline void run(const Int8ForwardPlan& plan) { perturbed_matmul_int8(plan); }  // the bindings' run(plan), by overload

// out int8 [m, n] = clamp(W + [Z >= T] - [Z <= -T], -127, 127) with
// Z = sum_k f_k A_k B_k^T over pairs k = 0 .. P-1 (noise index k), W int8 [m, n],
// pair_fitness int8 [P] with values in {-1, 0, 1}, threshold T >= 1. out may be W itself.
struct Int8UpdatePlan {
  TensorView W, pair_fitness, out;
  Key key;
  int64_t threshold = 1, m = 0, n = 0, P = 0;
};
Int8UpdatePlan check_int8_update(const TensorView& W, const TensorView& pair_fitness,
                                 int64_t threshold, const Key& key, const TensorView& out);
void int8_update(const Int8UpdatePlan& plan);
inline void run(const Int8UpdatePlan& plan) { int8_update(plan); }  // the bindings' run(plan), by overload
// The value rule of pair_fitness on host int8 values (check_int8_update applies it to host
// arrays; a caller with device values applies it to a host copy).
void check_pair_fitness_values(const TensorView& pair_fitness);

// Convenience for C++ callers: check, then run on the CPU.
inline void perturbed_matmul_int8(const TensorView& x, const TensorView& W,
                                  const Members& members, const Key& key, const TensorView& out) {
  perturbed_matmul_int8(check_perturbed_matmul_int8(x, W, members, key, out));
}
inline void int8_update(const TensorView& W, const TensorView& pair_fitness, int64_t threshold,
                        const Key& key, const TensorView& out) {
  int8_update(check_int8_update(W, pair_fitness, threshold, key, out));
}

}  // namespace eggroll
