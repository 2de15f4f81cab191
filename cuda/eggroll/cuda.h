// The CUDA launchers: the same ops as the CPU core (cpp/eggroll/*.h), on device memory, each
// enqueued on an explicit stream and taking the plan of the same check_<op> (the one home of
// the shape/dtype/device/key/member rules). No launcher allocates a user-visible array, reads
// a device value on the host or synchronises: a launch is capturable in a CUDA graph.
// x / W / out of the float forwards may be float32, float16 or bfloat16 (float32 accumulation).
#pragma once
#include <cuda_runtime_api.h>
#include <cstdint>
#include "eggroll/embedding.h"
#include <functional>
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

// ---- the dense products, injected ----------------------------------------------------------
// An op that contains a dense product (a forward's x W^T, the low-rank update's Af^T Bf) calls
// its caller's GEMM on the op's stream: the framework's cuBLAS (torch.matmul, cupy.matmul)
// from the Python adapters, a C++ caller's own, or eggroll's kernels (fallback_gemm()).
// Arguments are views of device memory; an empty function means the fallback.
struct Gemm {
  // out [R, m] = x [R, n] W [m, n]^T; x and W one dtype (float32 / float16 / bfloat16), out
  // the same dtype, float32 accumulation.
  std::function<void(const TensorView& x, const TensorView& W, const TensorView& out,
                     cudaStream_t)> nt;
  // out [m, n] (+)= A [C, m]^T B [C, n], float32 (accumulate: add onto out).
  std::function<void(const TensorView& A, const TensorView& B, const TensorView& out,
                     bool accumulate, cudaStream_t)> tn;
};
// eggroll's own tiled kernels (cuda/gemm.cu): correct, not fast; for where no cuBLAS can be
// called (CuPy while a stream captures a graph) and for callers without one.
Gemm fallback_gemm();
void gemm_nt(const TensorView& x, const TensorView& W, const TensorView& out, cudaStream_t stream);
void gemm_tn(const TensorView& A, const TensorView& B, const TensorView& out, bool accumulate,
             cudaStream_t stream);

// ---- values on the device ------------------------------------------------------------------
// Index members, a device epoch (Key::epoch_device), fitness and pair_fitness live on the GPU,
// and reading them on the host would synchronise. Instead a kernel checks them on the op's
// stream and records a bad value in a flag in host-mapped memory; every launcher raises the
// flagged errors of its device first (a host read, no synchronisation): ValueError named as
// the CPU's ("members: ...", "epoch: ...", "fitness: contains NaN or inf ..."), one call late.
// The op that read the bad value has run on it (its results are invalid, never a fault).
// sync_checks(true) (or EGGROLL_CUDA_CHECKS=sync in the environment) makes every launcher also
// wait for its stream and raise before returning, except while the stream captures a graph.
void raise_device_errors(int device);
// Waits for `stream`, then raises_device_errors(device): the errors of every op queued so far.
void sync_and_raise(int device, cudaStream_t stream);
bool sync_checks();
bool set_sync_checks(bool on);  // returns the previous setting

// ---- workspace ------------------------------------------------------------------------------
// A launcher's scratch (folded runs, dots, uploaded host members) is stream-ordered memory
// (cudaMallocAsync) unless a Workspace is in scope on the calling thread: then it is carved
// from the caller's device memory, which must hold workspace_bytes(plan) bytes for the launch
// of that plan (an XLA handler's workspace result: a command buffer may not allocate).
class Workspace {
 public:
  Workspace(void* data, size_t bytes);
  ~Workspace();
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
 private:
  bool prev_active_;
  void* prev_data_;
  size_t prev_bytes_, prev_used_;
};
size_t workspace_bytes(const ForwardPlan& plan);     // lowrank_correction, fullrank_correction
size_t workspace_bytes(const FactorRowsPlan& plan);  // es_gradient_factors
size_t workspace_bytes(const GradientPlan& plan);    // es_gradient
size_t workspace_bytes(const Int8ForwardPlan& plan);
size_t workspace_bytes(const Int8UpdatePlan& plan);
size_t workspace_bytes(const VectorPlan& plan);
size_t workspace_bytes(const FactorPlan& plan);
size_t workspace_bytes(const EmbeddingPlan& plan);  // host index members uploaded

// ---- the ops (a plan's arrays are on one CUDA device; host index members are uploaded, a
// stream-ordered copy, except while the stream captures a graph: a range or a device index
// array then) ----

// noise (cuda/noise.cu): the CPU's bits.
void philox4x32(const PhiloxPlan& plan, cudaStream_t stream);
void normal(const NormalPlan& plan, cudaStream_t stream);
// run(plan, stream) (run(plan, gemm, stream) for the two that inject a GEMM): every launcher by
// the plan's type, so that the bindings call one overload set.
inline void run(const PhiloxPlan& p, cudaStream_t s) { philox4x32(p, s); }
inline void run(const NormalPlan& p, cudaStream_t s) { normal(p, s); }

// forwards (cuda/perturb.cu): out = x W^T by gemm.nt, plus the correction of every member.
// Low rank: x_i . B_k on a second stream while the GEMM runs (B_k regenerated in registers),
// then the rank-r add in place (A_k regenerated per run of members and column block). A shared
// input (x_stride 0) is multiplied once and its rows copied to every member. Full rank: the
// OpenES correction after the GEMM. Members per call: < 2^31.
void perturbed_matmul(const ForwardPlan& plan, const Gemm& gemm, cudaStream_t stream);
inline void run(const ForwardPlan& p, const Gemm& g, cudaStream_t s) { perturbed_matmul(p, g, s); }
// The corrections alone, onto out = x W^T already computed (XLA's dot, for the JAX handlers).
void lowrank_correction(const ForwardPlan& plan, cudaStream_t stream);   // !plan.full_rank
void fullrank_correction(const ForwardPlan& plan, cudaStream_t stream);  // plan.full_rank
// The CPU's bits; at most 65535 members per call.
void perturb_vector(const VectorPlan& plan, cudaStream_t stream);
void lowrank_factors(const FactorPlan& plan, cudaStream_t stream);
inline void run(const VectorPlan& p, cudaStream_t s) { perturb_vector(p, s); }
inline void run(const FactorPlan& p, cudaStream_t s) { lowrank_factors(p, s); }

// embedding (cuda/embedding.cu): the CPU's bits. Device ids are read on the device only: an
// id outside [0, V) writes a NaN row instead of reading outside W, and the next launcher on
// the device raises a ValueError naming ids (the other device values' rule above).
void perturbed_embedding(const EmbeddingPlan& plan, cudaStream_t stream);
inline void run(const EmbeddingPlan& p, cudaStream_t s) { perturbed_embedding(p, s); }

// update (cuda/update.cu). Low rank: the CPU's chunk plan (es_gradient_chunks), each chunk's
// factor rows (the CPU's bits) in stream-ordered scratch, then g (+)= Af^T Bf by gemm.tn. Full
// rank / vector: streamed (the CPU's bits).
void es_gradient(const GradientPlan& plan, const Gemm& gemm, cudaStream_t stream);
inline void run(const GradientPlan& p, const Gemm& g, cudaStream_t s) { es_gradient(p, g, s); }
// The factor rows alone, into the caller's Af / Bf (C rows: the runs times rank; for device
// index members, whose runs the host cannot count, the bound M * rank: the rows past the runs
// are written as zeros, and a smaller C would leave runs out).
void es_gradient_factors(const FactorRowsPlan& plan, cudaStream_t stream);
inline void run(const FactorRowsPlan& p, cudaStream_t s) { es_gradient_factors(p, s); }

// fitness shaping (cuda/fitness.cu): centered_rank, antithetic_sign bit for bit, zscore
// within the derived tolerance.
void shape_fitness(const ShapingPlan& plan, cudaStream_t stream);
inline void run(const ShapingPlan& p, cudaStream_t s) { shape_fitness(p, s); }

// integer path (cuda/int8.cu): the CPU's results exactly; own dp4a GEMM + epilogue (no
// injected GEMM: no framework has this product).
void perturbed_matmul_int8(const Int8ForwardPlan& plan, cudaStream_t stream);
void int8_update(const Int8UpdatePlan& plan, cudaStream_t stream);
inline void run(const Int8ForwardPlan& p, cudaStream_t s) { perturbed_matmul_int8(p, s); }
inline void run(const Int8UpdatePlan& p, cudaStream_t s) { int8_update(p, s); }

}  // namespace eggroll::cuda
