// Perturbed embedding lookup (docs/ops.md, "Perturbed embedding"): rows of member i's table
// W + E_i, with E_i = s_i (sigma / sqrt r) A_k B_k^T the low-rank perturbation of the parameter
// shape (V, d) -- the same factors as lowrank_factors((V, d)) and perturbed_matmul with W
// [V, d], so a table tied to an output projection has one noise and one es_gradient.
// Row t of A_k is r stream values at offset d*r + t*r: a lookup reads only the rows it needs
// and never materialises A_k [V, r] (let alone E_i [V, d]).
// Shapes: ids int64 or int32 [M, T], rows contiguous; a stride of 0 on axis 0 means one id
// row shared by every member (a broadcast / expanded population axis), read once.
// W float32 [V, d]; members int64 [M] (a null view: the plain lookup W[ids]);
// out float32 [M, T, d]. Every id must be in [0, V) (ValueError naming ids otherwise).
#pragma once
#include "eggroll/perturb.h"
#include "eggroll/tensor.h"

namespace eggroll {

void perturbed_embedding(const TensorView& ids, const TensorView& W, const TensorView& members,
                         const EsArgs& a, const TensorView& out);

}  // namespace eggroll
