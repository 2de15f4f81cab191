// Perturbed embedding lookup (docs/ops.md, "Perturbed embedding"): rows of member i's table
// W + E_i, with E_i = s_i (sigma / sqrt r) A_k B_k^T the low-rank perturbation of the parameter
// shape (V, d) -- the same factors as lowrank_factors((V, d)) and perturbed_matmul with W
// [V, d], so a table tied to an output projection has one noise and one es_gradient.
// Row t of A_k is r stream values at offset d*r + t*r: a lookup reads only the rows it needs
// and never materialises A_k [V, r] (let alone E_i [V, d]).
// check_perturbed_embedding -> EmbeddingPlan -> perturbed_embedding (CPU run, here) or
// cuda::perturbed_embedding (cuda/eggroll/cuda.h), as every op (docs/backends.md).
#pragma once
#include <cstdint>
#include "eggroll/key.h"
#include "eggroll/tensor.h"

namespace eggroll {

// ids int64 or int32 [M, T], each member's row contiguous; a stride of 0 on axis 0 is one id
// row shared by every member (with_member_axis, an expanded axis), read once.
// W float32 [V, d], contiguous; out float32 [M, T, d], contiguous, apart from ids and W.
// members: M entries, or none (the plain lookup W[ids]). On the CPU every id must be in
// [0, V) (ValueError naming ids, raised by the check: a bad call writes nothing); device ids
// are checked by the CUDA launcher.
struct EmbeddingPlan {
  TensorView ids, W, out;
  Members members;
  Key key;
  int64_t M = 0, T = 0, V = 0, d = 0;
  int64_t ids_stride = 0;  // elements from member i's ids to member i + 1's: T, or 0 (shared)
};
EmbeddingPlan check_perturbed_embedding(const TensorView& ids, const TensorView& W,
                                        const Members& members, const Key& key,
                                        const TensorView& out);
void perturbed_embedding(const EmbeddingPlan& plan);
inline void run(const EmbeddingPlan& plan) { perturbed_embedding(plan); }  // the bindings' run(plan), by overload

// The views the check takes, from the caller's arrays: ids [M, ...] (the trailing axes
// C-contiguous, else ValueError naming ids) as [M, T] rows, and a contiguous out [M, ..., d]
// as [M, T, d] (returned unchanged when it is not one: the check names it).
TensorView embedding_rows(const TensorView& ids);
TensorView embedding_out(const TensorView& out, const TensorView& rows);

// Convenience for C++ callers: check, then run on the CPU.
inline void perturbed_embedding(const TensorView& ids, const TensorView& W, const Members& members,
                                const Key& key, const TensorView& out) {
  perturbed_embedding(check_perturbed_embedding(ids, W, members, key, out));
}

}  // namespace eggroll
