// The CUDA launchers: the same ops as the CPU core (cpp/eggroll/*.h), on device memory, each
// enqueued on an explicit stream. No launcher allocates a user-visible array or synchronises
// the device; outputs are caller-provided TensorViews with device == Device::cuda.
// Base GEMMs (x W^T, Af^T Bf) come from the caller's cuBLAS (the framework's matmul); these
// kernels add what no library does (noise regenerated on the fly). gemm_nt / gemm_tn are a
// plain fallback for where cuBLAS cannot be called (CuPy under CUDA graph capture).
// Every op takes the plan its check_<op> made (the one home of the shape/dtype/device/key/
// member rules); x / W / out of the forwards may be float32, float16 or bfloat16 (float32
// accumulation).
#pragma once
#include <cuda_runtime_api.h>
#include <cstdint>
#include "eggroll/embedding.h"
#include "eggroll/fitness.h"
#include "eggroll/int8.h"
#include "eggroll/noise.h"
#include "eggroll/perturb.h"
#include "eggroll/tensor.h"
#include "eggroll/update.h"

namespace eggroll::cuda {

// Number of CUDA devices; 0 when there is no driver or no GPU (never throws).
int device_count();
// For diagnostics: the CUDA runtime version this was built with, the driver's version
// (0 without a driver) and the message of cudaGetDeviceCount ("no error" when fine).
struct RuntimeInfo { int runtime_version, driver_version; const char* device_count_status; };
RuntimeInfo runtime_info();

// ---- fallback GEMMs (cuda/gemm.cu): simple tiled kernels, float32 accumulation ------------
// out [R, m] = x [R, n] W^T with W [m, n]; x / W one float storage dtype, out any of them.
void gemm_nt(const TensorView& x, const TensorView& W, const TensorView& out, cudaStream_t stream);
// out [m, n] (+)= A^T B with A float32 [C, m], B float32 [C, n] (the es_gradient product).
void gemm_tn(const TensorView& A, const TensorView& B, const TensorView& out, bool accumulate,
             cudaStream_t stream);

// ---- the ops: each takes the plan of the core's check_<op> (cpp/eggroll/*.h), whose arrays
// are on one CUDA device. Values living on the device are not read on the host: index
// members (>= 0, noise index < 2^32: check_member_bounds), fitness (finite) and pair_fitness
// ({-1, 0, 1}) are the caller's to check, as in docs/backends.md.

// noise (cuda/noise.cu): the CPU's bits.
void philox4x32(const PhiloxPlan& plan, cudaStream_t stream);
void normal(const NormalPlan& plan, cudaStream_t stream);

// forward (cuda/perturb.cu). plan.out must already hold x W^T (the caller's GEMM: cuBLAS
// through the framework); these add the correction in place, the factors regenerated in
// registers / shared memory and never written to global memory. A shared input (x_stride 0)
// is read once per member like a materialised one. Members per call: < 2^31.
void lowrank_correction(const ForwardPlan& plan, cudaStream_t stream);   // !plan.full_rank
void fullrank_correction(const ForwardPlan& plan, cudaStream_t stream);  // plan.full_rank
// The CPU's bits; at most 65535 members per call.
void perturb_vector(const VectorPlan& plan, cudaStream_t stream);
void lowrank_factors(const FactorPlan& plan, cudaStream_t stream);

// embedding (cuda/embedding.cu): the CPU's bits. Device ids are not read on the host: an id
// outside [0, V) writes a NaN row instead of reading outside W (the CPU check names it).
void perturbed_embedding(const EmbeddingPlan& plan, cudaStream_t stream);

// update (cuda/update.cu): the CPU's factor rows bit for bit (g = Af^T Bf is then one GEMM by
// the caller), and the streamed full-rank / vector estimate (the CPU's bits). A low-rank
// GradientPlan is a ValueError here (es_gradient_factors + a GEMM instead).
void es_gradient_factors(const FactorRowsPlan& plan, cudaStream_t stream);
void es_gradient(const GradientPlan& plan, cudaStream_t stream);

// fitness shaping (cuda/fitness.cu): centered_rank, antithetic_sign bit for bit, zscore
// within the derived tolerance.
void shape_fitness(const ShapingPlan& plan, cudaStream_t stream);

// integer path (cuda/int8.cu): the CPU's results exactly; own dp4a GEMM + epilogue. A shared
// input (x_stride 0) must be materialised by the caller (ValueError here).
void perturbed_matmul_int8(const Int8ForwardPlan& plan, cudaStream_t stream);
void int8_update(const Int8UpdatePlan& plan, cudaStream_t stream);

}  // namespace eggroll::cuda
