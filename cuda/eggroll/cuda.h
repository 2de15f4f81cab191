// The CUDA launchers: the same ops as the CPU core (cpp/eggroll/*.h), on device memory, each
// enqueued on an explicit stream. No launcher allocates a user-visible array or synchronises
// the device; outputs are caller-provided TensorViews with device == Device::cuda.
// Base GEMMs (x W^T, Af^T Bf) come from the caller's cuBLAS (the framework's matmul); these
// kernels add what no library does (noise regenerated on the fly). gemm_nt / gemm_tn are a
// plain fallback for where cuBLAS cannot be called (CuPy under CUDA graph capture).
// Shapes and dtypes are those of the CPU headers; x / out of the forward corrections may be
// float32, float16 or bfloat16 (float32 accumulation).
#pragma once
#include <cuda_runtime_api.h>
#include <cstdint>
#include "eggroll/noise.h"
#include "eggroll/perturb.h"
#include "eggroll/tensor.h"

namespace eggroll::cuda {

// Number of CUDA devices; 0 when there is no driver or no GPU (never throws).
int device_count();
// For diagnostics: the CUDA runtime version this was built with, the driver's version
// (0 without a driver) and the message of cudaGetDeviceCount ("no error" when fine).
struct RuntimeInfo { int runtime_version, driver_version; const char* device_count_status; };
RuntimeInfo runtime_info();
// Largest rank the kernels accept (the per-member factor dot products live in shared memory).
constexpr int64_t kMaxRank = 4096;

// ---- fallback GEMMs (cuda/gemm.cu): simple tiled kernels, float32 accumulation ------------
// out [R, m] = x [R, n] W^T with W [m, n]; x / W one float storage dtype, out any of them.
void gemm_nt(const TensorView& x, const TensorView& W, const TensorView& out, cudaStream_t stream);
// out [m, n] (+)= A^T B with A float32 [C, m], B float32 [C, n] (the es_gradient product).
void gemm_tn(const TensorView& A, const TensorView& B, const TensorView& out, bool accumulate,
             cudaStream_t stream);

// ---- noise (cuda/noise.cu) -----------------------------------------------------------------
// counter uint32 [count, 4], key uint32 [2] (device), out uint32 [count, 4].
void philox4x32(const TensorView& counter, const TensorView& key, const TensorView& out,
                cudaStream_t stream);
// out float32 [count] = z(key)[offset .. offset + count): the same bits as the CPU.
void normal(const TensorView& out, const NoiseKey& key, uint64_t offset, cudaStream_t stream);

// ---- forward (cuda/perturb.cu) ---------------------------------------------------------------
// members: int64 [M] on the same device (values are validated by the caller, see docs/backends.md).
// A float32 [M, m, r] (scaled by s_i sigma / sqrt r), B float32 [M, n, r]: the CPU's bits.
void lowrank_factors(const TensorView& members, int64_t m, int64_t n, const EsArgs& a,
                     const TensorView& A, const TensorView& B, cudaStream_t stream);
// out [M, m] | [M, b, m] += s_i (sigma / sqrt r) (x_i B_k) A_k^T, factors regenerated in
// registers / shared memory, never written to global memory.
void lowrank_correction(const TensorView& x, const TensorView& members, const EsArgs& a,
                        const TensorView& out, cudaStream_t stream);
// out += s_i sigma x_i Z_k^T (full-rank baseline), Z_k streamed through registers: no workspace.
void fullrank_correction(const TensorView& x, const TensorView& members, const EsArgs& a,
                         const TensorView& out, cudaStream_t stream);
// out float32 [M, m] = v [m] + s_i sigma z_k[0:m]: the CPU's bits.
void perturb_vector(const TensorView& v, const TensorView& members, const EsArgs& a,
                    const TensorView& out, cudaStream_t stream);

// ---- embedding (cuda/embedding.cu) -----------------------------------------------------------
// ids int64/int32 [M, T] (stride 0 on axis 0: shared), W float32 [V, d], members int64 [M] or
// null -> out float32 [M, T, d]: rows of W + E_i (the CPU's bits). Ids are range-checked by
// the caller; an id outside [0, V) writes a NaN row instead of reading outside W.
void perturbed_embedding(const TensorView& ids, const TensorView& W, const TensorView& members,
                         const EsArgs& a, const TensorView& out, cudaStream_t stream);

// ---- update (cuda/update.cu) -----------------------------------------------------------------
// Af float32 [C, m], Bf float32 [C, n] with C = es_gradient_columns(members on the host, ...):
// the CPU's factor rows bit for bit; g = Af^T Bf is then one GEMM by the caller.
void es_gradient_factors(const TensorView& fitness, const TensorView& members, int64_t m,
                         int64_t n, const EsArgs& a, int64_t population, const TensorView& Af,
                         const TensorView& Bf, cudaStream_t stream);
// Full-rank (or vector) estimate g (+)= (1/population) sum_i f_i s_i Z_k, streamed, the CPU's
// bits. The low-rank estimate is es_gradient_factors + a GEMM (ValueError here).
void es_gradient(const TensorView& fitness, const TensorView& members, const EsArgs& a,
                 bool full_rank, int64_t population, bool accumulate, const TensorView& g,
                 cudaStream_t stream);

// ---- fitness shaping (cuda/fitness.cu) -------------------------------------------------------
// f float32 | float64 [N] (finite: checked by the caller) -> out float32.
void centered_rank(const TensorView& f, const TensorView& out, cudaStream_t stream);
void zscore(const TensorView& f, int64_t group_size, const TensorView& out, cudaStream_t stream);
void antithetic_sign(const TensorView& f, const TensorView& out, cudaStream_t stream);

// ---- integer path (cuda/int8.cu): the CPU's int8 semantics (docs/ops.md), exact -----------
// The int8 call's key and fixed-point format (the fields of the CPU's Int8Args).
struct Int8Key {
  uint64_t seed = 0;
  uint32_t param_id = 0;
  int64_t epoch = 0, noise_reuse = 1;
  bool antithetic = true;                   // forward only
  int64_t rank = 1;                         // [1, 1024]
  int64_t fixed_point = 4, sigma_shift = 0; // [0, 7], [0, 32]
};
// y int8 [M, m] | [M, b, m] from x int8 [M, n] | [M, b, n] (n <= 2^16), W int8 [m, n];
// members int64 [M] on the device, or a null view (unperturbed): own dp4a GEMM + correction.
void perturbed_matmul_int8(const TensorView& x, const TensorView& W, const TensorView& members,
                           const Int8Key& a, const TensorView& y, cudaStream_t stream);
// out int8 [m, n] = clamp(W + [Z >= T] - [Z <= -T], -127, 127), Z = sum_k f_k qA_k qB_k^T over
// pairs k of pair_fitness int8 [P] (values -1, 0, 1); out may be W itself.
void int8_update(const TensorView& W, const TensorView& pair_fitness, int64_t threshold,
                 const Int8Key& a, const TensorView& out, cudaStream_t stream);

}  // namespace eggroll::cuda
