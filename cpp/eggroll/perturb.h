// Perturbed forward passes (docs/ops.md): EGGROLL's low-rank y_i = x_i W^T +
// s_i (sigma/sqrt r) (x_i B_k) A_k^T, the full-rank OpenES baseline, vector perturbation and
// the explicit factors. Each op is check_<op> (every shape/dtype/device/overlap/key/member
// rule and its message, on both devices) -> a plan -> an unchecked run (CPU here, CUDA in
// cuda/eggroll/cuda.h).
#pragma once
#include <cstdint>
#include "eggroll/key.h"
#include "eggroll/noise.h"
#include "eggroll/tensor.h"

namespace eggroll {

// x [M, n] | [M, b, n]: member i's rows; the leading axis may have stride 0 (one input shared
// by every member, e.g. numpy.broadcast_to: the base product is computed once, the result is
// the same bits as the materialised input). W [m, n] (on the CPU also the transpose of a
// contiguous [n, m], e.g. a Conv1D weight as W.T); out [M, m] | [M, b, m], contiguous.
// Dtypes: float32 on the CPU; float32, float16 or bfloat16 on CUDA (x, W, out alike).
// members: M entries, or none (the unperturbed product x W^T).
struct ForwardPlan {
  TensorView x, W, out;
  Members members;
  Key key;
  int64_t M = 0, b = 1, n = 0, m = 0;
  int64_t x_stride = 0;    // elements from member i's rows of x to member i + 1's: b n, or 0
  bool full_rank = false;  // the OpenES baseline's correction instead of the low-rank one
  bool base = true;        // false: out = the correction alone (the caller adds its own x W^T)
  bool w_transposed = false;  // W is the transpose of a contiguous [n, m] (strides (1, m), CPU)
};
ForwardPlan check_perturbed_matmul(const TensorView& x, const TensorView& W,
                                   const Members& members, const Key& key,
                                   const TensorView& out, bool full_rank = false);
// CPU: out = x W^T by the core's deterministic GEMM (docs/ops.md "The base product"; zero
// when plan.base is false), plus the correction of every member.
void perturbed_matmul(const ForwardPlan& plan);
inline void run(const ForwardPlan& plan) { perturbed_matmul(plan); }  // the bindings' run(plan), by overload
// CPU pieces: out += the low-rank (plan.full_rank false) or full-rank correction; out must
// already hold x W^T.
void lowrank_correction(const ForwardPlan& plan);
void fullrank_correction(const ForwardPlan& plan);

// out float32 [M, m] = v [m] + s_i sigma z_k[0:m].
struct VectorPlan {
  TensorView v, out;
  Members members;
  Key key;
  int64_t M = 0, m = 0;
};
VectorPlan check_perturb_vector(const TensorView& v, const Members& members, const Key& key,
                                const TensorView& out);
void perturb_vector(const VectorPlan& plan);
inline void run(const VectorPlan& plan) { perturb_vector(plan); }  // the bindings' run(plan), by overload

// A float32 [M, m, r] (scaled by s_i sigma / sqrt r) and B float32 [M, n, r]: member i's
// perturbation is A[i] B[i]^T.
struct FactorPlan {
  TensorView A, B;
  Members members;
  Key key;
  int64_t M = 0, m = 0, n = 0;
};
FactorPlan check_lowrank_factors(const Members& members, int64_t m, int64_t n, const Key& key,
                                 const TensorView& A, const TensorView& B);
void lowrank_factors(const FactorPlan& plan);
inline void run(const FactorPlan& plan) { lowrank_factors(plan); }  // the bindings' run(plan), by overload

// Convenience for C++ callers: check, then run on the CPU.
inline void perturbed_matmul(const TensorView& x, const TensorView& W, const Members& members,
                             const Key& key, const TensorView& out) {
  perturbed_matmul(check_perturbed_matmul(x, W, members, key, out, false));
}
inline void perturbed_matmul_full(const TensorView& x, const TensorView& W,
                                  const Members& members, const Key& key,
                                  const TensorView& out) {
  perturbed_matmul(check_perturbed_matmul(x, W, members, key, out, true));
}
inline void perturb_vector(const TensorView& v, const Members& members, const Key& key,
                           const TensorView& out) {
  perturb_vector(check_perturb_vector(v, members, key, out));
}
inline void lowrank_factors(const Members& members, int64_t m, int64_t n, const Key& key,
                            const TensorView& A, const TensorView& B) {
  lowrank_factors(check_lowrank_factors(members, m, n, key, A, B));
}

// y [rows, m] = x [rows, n] W [m, n]^T: the core's deterministic GEMM (cpp/gemm_kernel.h
// states the summation order; it is the same on every ISA and thread count).
void gemm_nt(const float* x, const float* W, float* y, int64_t rows, int64_t m, int64_t n);
// y [rows, m] = A [K, rows]^T B [K, m]: the same GEMM on k-major operands (bit-identical to
// gemm_nt on the transposes).
void gemm_tn(const float* A, const float* B, float* y, int64_t rows, int64_t m, int64_t K);
// y [rows, m] = x [rows, n] Wt [n, m]: the same GEMM with W given transposed, as stored by a
// layer that computes x @ Wt (bit-identical to gemm_nt on W = Wt^T).
void gemm_nk(const float* x, const float* Wt, float* y, int64_t rows, int64_t m, int64_t n);

}  // namespace eggroll
