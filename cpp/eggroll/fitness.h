// Fitness shaping (spec/ops.md). f: float32 or float64 [N] -> out float32 [N] ([N/2] for
// antithetic_sign). Non-finite fitness raises ValueError("fitness: ...").
#pragma once
#include "eggroll/tensor.h"

namespace eggroll {
void centered_rank(const TensorView& f, const TensorView& out);
void zscore(const TensorView& f, int64_t group_size, const TensorView& out);
void antithetic_sign(const TensorView& f, const TensorView& out);  // out float32 [N/2]
}  // namespace eggroll
