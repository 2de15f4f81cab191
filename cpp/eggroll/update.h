// The ES gradient estimate (spec/ops.md): g = (1 / (N sigma)) sum_i f_i E_i.
// Low rank: sum over regenerated, fitness-scaled factors as one GEMM; full rank: streamed.
// Shapes: fitness float32 [M]; members int64 [M]; g float32 [m, n] or [m].
#pragma once
#include <cstdint>
#include "eggroll/perturb.h"

namespace eggroll {

// Number of factor rows es_gradient_factors writes: rank * (number of runs of consecutive
// members sharing a noise index). Antithetic pairs (2k, 2k+1) next to each other fold into one.
int64_t es_gradient_columns(const TensorView& members, bool antithetic, int64_t rank);

// Af [C, m] and Bf [C, n] with C = es_gradient_columns(...) such that Af^T Bf is this
// chunk's share of g for a population of `population` members in all:
//   Af[c] = (sum_{i in run} f_i s_i) / (population sqrt r) * A_k[:, l],  Bf[c] = B_k[:, l].
void es_gradient_factors(const TensorView& fitness, const TensorView& members, int64_t m,
                         int64_t n, const EsArgs& a, int64_t population, const TensorView& Af,
                         const TensorView& Bf);

// g (+)= the estimate. Full rank (or 1-D g): g += (1/population) sum_i f_i s_i Z_k, streamed.
// Low rank: factors in bounded chunks and the core GEMM. `accumulate` adds into g instead
// of overwriting it, so a population split over calls sums to the same estimate.
void es_gradient(const TensorView& fitness, const TensorView& members, const EsArgs& a,
                 bool full_rank, int64_t population, bool accumulate, const TensorView& g);

}  // namespace eggroll
