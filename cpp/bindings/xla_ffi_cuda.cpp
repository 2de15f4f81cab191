// XLA FFI handlers (CUDA) for every eggroll op, and the pybind11 module eggroll._xla_ffi_cuda
// that hands them to JAX as PyCapsules (platform "CUDA"). Each handler turns XLA's device
// buffers into TensorViews (Device::cuda, XLA's device ordinal), makes the plan with the same
// check_<op> as every other front end, and calls the launchers of cuda/eggroll/cuda.h on the
// stream XLA hands it.
//
// What differs from the CPU handlers (cpp/bindings/xla_ffi.cpp), and why:
// - No cuBLAS here: the base product x W^T is XLA's own dot (python/eggroll/jax/_cuda.py), and
//   the forward handlers add the correction onto it in place (operand 1, `base`, aliased to
//   the result). The low-rank es_gradient is `es_gradient_factors` here plus an XLA dot.
// - The launchers read the key on the host, but seed, epoch and index members are traced
//   device values. They travel as ONE uint32 operand, last: key = [seed lo, seed hi, epoch lo,
//   epoch hi, then each index member as the two words of an int64], which the handler copies
//   to the host (one device-to-host copy and a stream synchronisation per call), checks like
//   the CPU does, and whose member words the kernels read in place as int64 [M]. Fitness and
//   pair_fitness values are copied and checked the same way (the launchers leave them to the
//   caller).
// No C++ exception crosses the FFI boundary: every handler returns an ffi::Error.
#include <pybind11/pybind11.h>
#include <cuda_runtime_api.h>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>
#include "cuda_values.h"
#include "eggroll/cuda.h"
#include "eggroll/eggroll.h"
#include "host_util.h"
#include "xla/ffi/api/ffi.h"
#include "xla_ffi_common.h"

namespace ffi = xla::ffi;
namespace py = pybind11;
using namespace eggroll;
using namespace eggroll::xla_ffi;
using namespace eggroll::bridge;
using eggroll::cuda::detail::check_cuda;
using eggroll::cuda::detail::DeviceGuard;

namespace {

enum class Op { perturbed_matmul, perturbed_matmul_full, perturb_vector, lowrank_factors,
                es_gradient, es_gradient_factors, centered_rank, zscore, antithetic_sign,
                perturbed_matmul_int8, int8_update };

// The key of a call from the packed `key` operand (argument i; see the file comment).
struct Keyed {
  Key key;
  Members members;
};
Keyed read_key(const Call& c, size_t i, cudaStream_t stream) {
  Keyed k;
  k.key = c.key();
  const TensorView words = c.arg(i);
  const int kind = c.members_kind();
  if (kind == 1) k.members = c.member_range();
  const int64_t M = kind == 2 ? (words.numel() - 4) / 2 : 0;
  if (words.dtype != DType::uint32 || words.numel() != 4 + 2 * M || M < 0)
    value_error("key: expected uint32 [4 + 2 M] words (eggroll.jax builds it)");
  const std::vector<uint32_t> host = to_host<uint32_t>(words, stream);
  k.key.seed = uint64_t(host[0]) | (uint64_t(host[1]) << 32);
  k.key.epoch = int64_t(uint64_t(host[2]) | (uint64_t(host[3]) << 32));
  if (kind == 2) {
    // The CPU's member checks on the host copy, then the device words in place (XLA buffers
    // are at least 16-byte aligned, so word 4 starts an aligned int64 array).
    std::vector<int64_t> mem(static_cast<size_t>(M));
    for (int64_t j = 0; j < M; ++j)
      mem[size_t(j)] = int64_t(uint64_t(host[size_t(4 + 2 * j)]) | (uint64_t(host[size_t(5 + 2 * j)]) << 32));
    check_members(Members::indices(make_view(mem.data(), DType::int64, {M})), M, k.key.antithetic,
                  "the members");
    TensorView dev = make_view(static_cast<uint32_t*>(words.data) + 4, DType::int64, {M});
    dev.device = Device::cuda;
    dev.device_index = c.device;
    k.members = Members::indices(dev);
  }
  return k;
}

template <Op op>
void run(const Call& c, cudaStream_t s) {
  if constexpr (op == Op::perturbed_matmul || op == Op::perturbed_matmul_full) {
    // x, base = x W^T (XLA's dot, aliased to y), key. W is not needed: a stand-in of its shape.
    const Keyed k = read_key(c, 2, s);
    const TensorView y = forward_view(c, c.ret(0), k.members, true), base = c.arg(1);
    if (base.dtype != y.dtype || base.numel() != y.numel())
      value_error("base: expected the result's shape " + y.shape_str() + " and dtype");
    const TensorView x = forward_view(c, c.arg(0), k.members, false);
    TensorView W = make_view(nullptr, x.dtype, {y.shape[y.ndim - 1], x.shape[x.ndim - 1]});
    W.device = Device::cuda;
    W.device_index = c.device;
    const ForwardPlan p = check_perturbed_matmul(x, W, k.members, k.key, y,
                                                 op == Op::perturbed_matmul_full);
    if (y.data != base.data)
      check_cuda(cudaMemcpyAsync(y.data, base.data, size_t(y.numel() * dtype_size(y.dtype)),
                                 cudaMemcpyDeviceToDevice, s), "cudaMemcpyAsync (base)");
    if (p.full_rank) cuda::fullrank_correction(p, s);
    else cuda::lowrank_correction(p, s);
  } else if constexpr (op == Op::perturb_vector) {
    const Keyed k = read_key(c, 1, s);
    cuda::perturb_vector(check_perturb_vector(c.arg(0), k.members, k.key, c.ret(0)), s);
  } else if constexpr (op == Op::lowrank_factors) {
    const Keyed k = read_key(c, 0, s);
    const TensorView A = c.ret(0), B = c.ret(1);
    cuda::lowrank_factors(check_lowrank_factors(k.members, A.ndim == 3 ? A.shape[1] : 0,
                                                B.ndim == 3 ? B.shape[1] : 0, k.key, A, B), s);
  } else if constexpr (op == Op::es_gradient) {
    const Keyed k = read_key(c, 1, s);
    check_finite_values(c.arg(0), "fitness", s);
    cuda::es_gradient(check_es_gradient(c.arg(0), k.members, k.key, true, c.i64("population"),
                                        false, c.ret(0)), s);
  } else if constexpr (op == Op::es_gradient_factors) {
    // Af [C, m], Bf [C, n] with C the bound M * rank (traced members): rows past the runs the
    // launcher finds are zeroed.
    const Keyed k = read_key(c, 1, s);
    check_finite_values(c.arg(0), "fitness", s);
    const TensorView Af = c.ret(0), Bf = c.ret(1);
    DeviceGuard guard(c.device);
    check_cuda(cudaMemsetAsync(Af.data, 0, size_t(Af.numel()) * 4, s), "cudaMemsetAsync (Af)");
    check_cuda(cudaMemsetAsync(Bf.data, 0, size_t(Bf.numel()) * 4, s), "cudaMemsetAsync (Bf)");
    cuda::es_gradient_factors(check_es_gradient_factors(c.arg(0), k.members, Af.shape[1],
                                                        Bf.shape[1], k.key, c.i64("population"),
                                                        Af, Bf), s);
  } else if constexpr (op == Op::perturbed_matmul_int8) {
    const Keyed k = read_key(c, 2, s);
    cuda::perturbed_matmul_int8(check_perturbed_matmul_int8(c.arg(0), c.arg(1), k.members, k.key,
                                                            c.ret(0)), s);
  } else if constexpr (op == Op::int8_update) {
    const Keyed k = read_key(c, 2, s);
    const TensorView f = c.arg(1);
    check_pair_fitness_on_host(f, s);  // the value rule on a host copy (the launcher trusts it)
    cuda::int8_update(check_int8_update(c.arg(0), f, c.i64("threshold"), k.key, c.ret(0)), s);
  } else {
    const Shaping kind = op == Op::centered_rank ? Shaping::centered_rank
                         : op == Op::zscore      ? Shaping::zscore
                                                 : Shaping::antithetic_sign;
    check_finite_values(c.arg(0), "f", s);
    cuda::shape_fitness(check_fitness_shaping(kind, c.arg(0), op == Op::zscore ? c.i64("group_size") : 0,
                                              c.ret(0)), s);
  }
}

template <Op op>
ffi::Error op_handler(cudaStream_t stream, int32_t device, ffi::RemainingArgs args,
                   ffi::RemainingRets rets, ffi::Dictionary attrs) {
  return guarded([&] { run<op>(Call{args, rets, attrs, int(device)}, stream); });
}

}  // namespace

// Every handler binds XLA's stream and device ordinal first. No handler declares
// ffi::Traits::kCmdBufferCompatible: they synchronise the stream to read the key, so XLA must
// never capture them into a command buffer (CUDA graph); without the trait it does not.
// (tools/cuda_emu/xla_ffi_cuda_emu.cpp predefines EGGROLL_CUDA_CTX to run the handlers, with
// the kernels under host emulation, on XLA's CPU backend, which has neither.)
#ifndef EGGROLL_CUDA_CTX
#define EGGROLL_CUDA_CTX \
  ffi::Ffi::Bind().Ctx<ffi::PlatformStream<cudaStream_t>>().Ctx<ffi::DeviceOrdinal>()
#endif
#define EGGROLL_CUDA_OPS(X) EGGROLL_FFI_OPS(X) X(es_gradient_factors)
#define EGGROLL_DEFINE(name)                                                                   \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(eggroll_cuda_##name, op_handler<Op::name>,                        \
                                EGGROLL_CUDA_CTX.RemainingArgs().RemainingRets().Attrs());
EGGROLL_CUDA_OPS(EGGROLL_DEFINE)
#undef EGGROLL_DEFINE

PYBIND11_MODULE(_xla_ffi_cuda, mod) {
  mod.doc() = "eggroll XLA FFI handlers (CUDA). Used by eggroll.jax; not a public API. "
              "Importing needs no GPU or driver (static CUDA runtime).";
  // {"CUDA": {op name -> handler capsule}}: the CPU module's op names (registered under the
  // same target names, eggroll_<op>, for platform CUDA) plus es_gradient_factors.
  mod.def("registrations", [] {
    py::dict gpu;
#define EGGROLL_ADD(name) gpu[#name] = capsule(eggroll_cuda_##name);
    EGGROLL_CUDA_OPS(EGGROLL_ADD)
#undef EGGROLL_ADD
    return py::dict(py::arg("CUDA") = gpu);
  });
}
