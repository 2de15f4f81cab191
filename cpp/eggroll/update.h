// The ES gradient estimate (docs/ops.md): g = (1 / (N sigma)) sum_i f_i E_i. Low rank: the
// fitness-scaled factor rows regenerated in bounded chunks and one GEMM; full rank (or a
// vector): streamed. check_<op> -> plan -> run, as in perturb.h.
#pragma once
#include <cstdint>
#include <vector>
#include "eggroll/key.h"
#include "eggroll/tensor.h"

namespace eggroll {

// fitness float32 [M] (finite), members M entries, out float32 [m, n] (low rank unless
// full_rank) or [m] (full rank). `population` N >= 1 normalises (even when antithetic; a
// population split over calls passes the whole N to each); `accumulate` adds into out.
struct GradientPlan {
  TensorView fitness, out;
  Members members;
  Key key;
  int64_t M = 0, m = 0, n = 1;
  int64_t population = 0;
  bool full_rank = false, accumulate = false;
};
GradientPlan check_es_gradient(const TensorView& fitness, const Members& members, const Key& key,
                               bool full_rank, int64_t population, bool accumulate,
                               const TensorView& out);
void es_gradient(const GradientPlan& plan);  // CPU
inline void run(const GradientPlan& plan) { es_gradient(plan); }  // the bindings' run(plan), by overload
// Convenience for C++ callers: check, then run on the CPU.
inline void es_gradient(const TensorView& fitness, const Members& members, const Key& key,
                        bool full_rank, int64_t population, bool accumulate,
                        const TensorView& out) {
  es_gradient(check_es_gradient(fitness, members, key, full_rank, population, accumulate, out));
}

// The chunk plan of the low-rank estimate, the same on every backend: members [c0, c1) per
// chunk, so that a chunk's factor rows (C rows of m + n float32) stay near 64 MiB; even-sized
// chunks keep antithetic pairs whole. C is the chunk's runs times rank where the indices are
// known on the host (a range or a host array), else the bound (c1 - c0) * rank (a device index
// array: the rows past its runs are zero). Summing the chunks' Af^T Bf gives the estimate.
struct GradientChunk { int64_t c0, c1, C; };
std::vector<GradientChunk> es_gradient_chunks(const Members& members, int64_t m, int64_t n,
                                              const Key& key);

// The low-rank estimate's factor rows (what a caller with its own GEMM needs): Af [C, m],
// Bf [C, n] float32 with C = es_gradient_columns(members, ...) such that Af^T Bf is this
// chunk's share of g:  Af[c] = (sum_{i in run} f_i s_i) / (population sqrt r) * A_k[:, l],
// Bf[c] = B_k[:, l], row c = q r + l over runs q of consecutive members sharing a noise index.
struct FactorRowsPlan {
  GradientPlan g;  // g.out unused
  TensorView Af, Bf;
  int64_t C = 0;
};
// Runs of the members (host values or a range) times rank.
int64_t es_gradient_columns(const Members& members, bool antithetic, int64_t rank);
FactorRowsPlan check_es_gradient_factors(const TensorView& fitness, const Members& members,
                                         int64_t m, int64_t n, const Key& key,
                                         int64_t population, const TensorView& Af,
                                         const TensorView& Bf);
void es_gradient_factors(const FactorRowsPlan& plan);  // CPU
inline void run(const FactorRowsPlan& plan) { es_gradient_factors(plan); }  // the bindings' run(plan), by overload

}  // namespace eggroll
