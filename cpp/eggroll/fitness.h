// Fitness shaping (docs/ops.md): f float32 | float64 [N] (finite) -> out float32 [N]
// ([N/2] for antithetic_sign). check_fitness_shaping -> plan -> run, as in perturb.h.
#pragma once
#include <cstdint>
#include "eggroll/tensor.h"

namespace eggroll {

enum class Shaping : int { centered_rank = 0, zscore = 1, antithetic_sign = 2 };
struct ShapingPlan {
  TensorView f, out;
  Shaping kind = Shaping::centered_rank;
  int64_t N = 0;
  int64_t group_size = 0;  // zscore: 0 (one group) or a divisor of N
};
ShapingPlan check_fitness_shaping(Shaping kind, const TensorView& f, int64_t group_size,
                                  const TensorView& out);
// The output length of kind for N values (N / 2 for antithetic_sign).
inline int64_t shaped_length(Shaping kind, int64_t N) {
  return kind == Shaping::antithetic_sign ? N / 2 : N;
}
void shape_fitness(const ShapingPlan& plan);  // CPU
inline void run(const ShapingPlan& plan) { shape_fitness(plan); }  // the bindings' run(plan), by overload

// Convenience for C++ callers: check, then run on the CPU.
inline void centered_rank(const TensorView& f, const TensorView& out) {
  shape_fitness(check_fitness_shaping(Shaping::centered_rank, f, 0, out));
}
inline void zscore(const TensorView& f, int64_t group_size, const TensorView& out) {
  shape_fitness(check_fitness_shaping(Shaping::zscore, f, group_size, out));
}
inline void antithetic_sign(const TensorView& f, const TensorView& out) {
  shape_fitness(check_fitness_shaping(Shaping::antithetic_sign, f, 0, out));
}

}  // namespace eggroll
