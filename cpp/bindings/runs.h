// Every plan's run by its type, one table for every binding (the Python modules and the XLA
// handlers): EGGROLL_PLAN_RUNS(X) calls X(Plan, name) for the plans whose CPU run is
// eggroll::name(plan) and whose CUDA launch is eggroll::cuda::name(plan, stream). The forwards
// and es_gradient (ForwardPlan, GradientPlan), whose CUDA launches take a GEMM, are not in it:
// each binding runs them itself.
#pragma once
#include "eggroll/eggroll.h"

#define EGGROLL_PLAN_RUNS(X)                                                                    \
  X(VectorPlan, perturb_vector) X(EmbeddingPlan, perturbed_embedding)                          \
  X(FactorPlan, lowrank_factors) X(FactorRowsPlan, es_gradient_factors)                        \
  X(ShapingPlan, shape_fitness) X(Int8ForwardPlan, perturbed_matmul_int8)                      \
  X(Int8UpdatePlan, int8_update) X(NormalPlan, normal) X(PhiloxPlan, philox4x32)

namespace eggroll::bindings {
// run(plan): the CPU run of any plan.
#define EGGROLL_CPU_RUN(Plan, name) inline void run(const Plan& p) { name(p); }
EGGROLL_PLAN_RUNS(EGGROLL_CPU_RUN)
EGGROLL_CPU_RUN(ForwardPlan, perturbed_matmul) EGGROLL_CPU_RUN(GradientPlan, es_gradient)
#undef EGGROLL_CPU_RUN
}  // namespace eggroll::bindings
