// Perturbed forward passes (spec/ops.md): EGGROLL's low-rank y_i = x_i W^T +
// s_i (sigma/sqrt r) (x_i B_k) A_k^T, the full-rank OpenES baseline, and vector perturbation.
// Shapes: x float32 [M, n] or [M, b, n]; W float32 [m, n]; y float32 [M, m] or [M, b, m];
// members int64 [M] (member indices, any order; a null view means "no perturbation").
#pragma once
#include <cstdint>
#include "eggroll/noise.h"
#include "eggroll/tensor.h"

namespace eggroll {

// The noise key and perturbation scale shared by every op ("the noise key" in spec/api.md).
struct EsArgs {
  uint64_t seed = 0;
  uint32_t param_id = 0;
  int64_t epoch = 0;        // 0 <= epoch < 2^32
  int64_t noise_reuse = 1;  // e = epoch // noise_reuse, or 0 when noise_reuse == 0
  bool antithetic = true;   // k = i // 2, sign (-1)^i
  double sigma = 1.0;       // finite, > 0
  int64_t rank = 1;         // >= 1

  NoiseKey key(uint32_t k) const { return {seed, param_id, epoch_index(epoch, noise_reuse), k}; }
};

// Throws ValueError naming the field (epoch, noise_reuse, sigma, rank).
void validate_args(const EsArgs& a);
// Checks members: int64 [M], contiguous, every index >= 0 and its noise index < 2^32.
void validate_members(const TensorView& members, int64_t M, bool antithetic);

// A [M, m, r] (scaled by s_i sigma / sqrt r) and B [M, n, r]: member i's perturbation is A[i] B[i]^T.
void lowrank_factors(const TensorView& members, int64_t m, int64_t n, const EsArgs& a,
                     const TensorView& A, const TensorView& B);

// y += the low-rank correction. y must already hold x W^T (W is [m, n] with m = y's last dim).
void lowrank_correction(const TensorView& x, const TensorView& members, const EsArgs& a,
                        const TensorView& y);

// y = x W^T (+ the correction when members is not null). The base product uses the core's
// own threaded GEMM; the Python adapter uses the host framework's BLAS instead (measured).
void perturbed_matmul(const TensorView& x, const TensorView& W, const TensorView& members,
                      const EsArgs& a, const TensorView& y);

// y += s_i sigma x_i Z_k^T with Z_k the first m*n values of the stream (full-rank baseline);
// y must hold x W^T. Streams Z_k in row blocks: memory O(threads * rows * n), never M*m*n.
void fullrank_correction(const TensorView& x, const TensorView& members, const EsArgs& a,
                         const TensorView& y);
void perturbed_matmul_full(const TensorView& x, const TensorView& W, const TensorView& members,
                           const EsArgs& a, const TensorView& y);

// out [M, m] = v [m] + s_i sigma z_k[0:m].
void perturb_vector(const TensorView& v, const TensorView& members, const EsArgs& a,
                    const TensorView& out);

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
