// XLA FFI handlers (CUDA) for every eggroll op, and the pybind11 module eggroll._xla_ffi_cuda
// that hands them to JAX as PyCapsules (platform "CUDA"). Each handler turns XLA's device
// buffers into TensorViews (Device::cuda, XLA's device ordinal), makes the plan with the same
// check_<op> as every other front end, and calls the launchers of cuda/eggroll/cuda.h on the
// stream XLA hands it.
//
// What differs from the CPU handlers (cpp/bindings/xla_ffi.cpp), and why:
// - The base product x W^T is XLA's own dot (python/eggroll/jax/_cuda.py), and the forward
//   handlers add the correction onto it in place (operand 1, `base`, aliased to result 0). The
//   low-rank es_gradient is `es_gradient_factors` here plus an XLA dot per chunk of the C++
//   chunk plan (es_gradient_chunks).
// - Device-resident keys: the key words (seed, epoch) and index members stay on the device;
//   the kernels read them in place and check them (cuda.h, "values on the device"), as they do
//   fitness and pair_fitness. Nothing is copied to the host and nothing synchronises, so every
//   handler is command-buffer compatible (XLA may capture it into a CUDA graph).
// - Scratch: the last result of every keyed handler is a uint8 workspace of
//   workspace_bytes(plan) (asked at trace time: `workspace_<op>` below, the same plan maker
//   on abstract arrays), so no launch allocates inside a command buffer.
// No C++ exception crosses the FFI boundary: every handler returns an ffi::Error.
#include <pybind11/pybind11.h>
#include <cuda_runtime_api.h>
#include <cstdint>
#include <string>
#include "eggroll/cuda.h"
#include "eggroll/eggroll.h"
#include "host_util.h"
#include "xla/ffi/api/ffi.h"
#include "xla_ffi_common.h"

namespace ffi = xla::ffi;
namespace py = pybind11;
using namespace eggroll;
using namespace eggroll::xla_ffi;
using eggroll::cuda::detail::check_cuda;
using eggroll::cuda::detail::DeviceGuard;

namespace {

template <class Plan>
void launch(const Plan& p, cudaStream_t s) { cuda::run(p, s); }
void launch(const ForwardPlan& p, cudaStream_t s) {  // the correction (the base is operand 1)
  if (p.full_rank) cuda::fullrank_correction(p, s);
  else cuda::lowrank_correction(p, s);
}
// es_gradient: full rank and vectors (the low-rank estimate is es_gradient_factors + XLA's dot).
void launch(const GradientPlan& p, cudaStream_t s) { cuda::run(p, cuda::fallback_gemm(), s); }

// A keyed op's launch, with the call's last result as its workspace (every keyed handler has one).
template <class Plan>
void launch(const Call& c, const Plan& p, cudaStream_t s) {
  ffi::Result<ffi::AnyBuffer> w = unwrap(c.rets.get<ffi::AnyBuffer>(c.rets.size() - 1), "workspace");
  if (w->size_bytes() < cuda::workspace_bytes(p))
    value_error("workspace: smaller than workspace_bytes (eggroll.jax sizes it)");
  cuda::Workspace scope(w->untyped_data(), w->size_bytes());
  launch(p, s);
}
// The fitness-shaping ops have no workspace (their call is the same on every platform).
void launch(const Call&, const ShapingPlan& p, cudaStream_t s) { launch(p, s); }
// The forwards: operand 1 is x W^T (XLA's dot, aliased to the result); the correction is added.
void launch(const Call& c, const ForwardPlan& p, cudaStream_t s) {
  const TensorView base = c.arg(1);
  if (base.dtype != p.out.dtype || base.numel() != p.out.numel())
    value_error("base: expected the result's shape " + p.out.shape_str() + " and dtype");
  if (p.out.data != base.data) {
    DeviceGuard guard(c.device);
    check_cuda(cudaMemcpyAsync(p.out.data, base.data, size_t(base.numel() * dtype_size(base.dtype)),
                               cudaMemcpyDeviceToDevice, s), "cudaMemcpyAsync (base)");
  }
  launch<ForwardPlan>(c, p, s);
}

template <Op op>
ffi::Error op_handler(cudaStream_t stream, int32_t device, ffi::RemainingArgs args,
                      ffi::RemainingRets rets, ffi::Dictionary attrs) {
  return guarded([&] {
    Call c{args, rets, attrs, op, int(device)};
    launch(c, plan<op>(c), stream);
  });
}

// The workspace result's bytes, asked at trace time (workspace_<op>, the entry's arguments
// with abstract arrays, as _core.check_<op> takes them): the plan of ops.h's maker, which
// the handler makes alike from XLA's buffers.
template <auto Make>
py::object workspace_entry(bridge::Call& c) {
  const auto p = Make(c);
  if constexpr (std::is_same_v<std::decay_t<decltype(p)>, ShapingPlan>) return py::int_(0);
  else return py::int_(cuda::workspace_bytes(p));
}

}  // namespace

// Every handler binds XLA's stream and device ordinal first, and declares command-buffer
// compatibility: no handler reads device memory on the host, synchronises or allocates.
// (tools/cuda_emu/xla_ffi_cuda_emu.cpp predefines EGGROLL_CUDA_CTX to run the handlers, with
// the kernels under host emulation, on XLA's CPU backend, which has neither.)
#ifndef EGGROLL_CUDA_CTX
#define EGGROLL_CUDA_CTX \
  ffi::Ffi::Bind().Ctx<ffi::PlatformStream<cudaStream_t>>().Ctx<ffi::DeviceOrdinal>()
#endif
#define EGGROLL_DEFINE(name)                                                                   \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(eggroll_cuda_##name, op_handler<Op::name>,                        \
                                EGGROLL_CUDA_CTX.RemainingArgs().RemainingRets().Attrs(),       \
                                {ffi::Traits::kCmdBufferCompatible});
EGGROLL_FFI_OPS(EGGROLL_DEFINE)
#undef EGGROLL_DEFINE

PYBIND11_MODULE(_xla_ffi_cuda, mod) {
  mod.doc() = "eggroll XLA FFI handlers (CUDA). Used by eggroll.jax; not a public API. "
              "Importing needs no GPU or driver (static CUDA runtime).";
  // {"CUDA": {op name -> handler capsule}}: the CPU module's ops (registered under the same
  // target names, eggroll_<op>, for platform CUDA).
  mod.def("registrations", [] {
    py::dict gpu;
#define EGGROLL_ADD(name) gpu[#name] = capsule(eggroll_cuda_##name);
    EGGROLL_FFI_OPS(EGGROLL_ADD)
#undef EGGROLL_ADD
    return py::dict(py::arg("CUDA") = gpu);
  });
  // workspace_<op>(*the entry's arguments): the bytes of that op's workspace result.
#define EGGROLL_ADD(name)                                                                     \
  bridge::add_function(mod, "workspace_" #name,                                               \
                       &bridge::entry<&workspace_entry<&bridge::make_##name<bridge::Call>>, true>, \
                       "Bytes of the workspace result (the entry's arguments, arrays abstract).");
  EGGROLL_FFI_OPS(EGGROLL_ADD)
#undef EGGROLL_ADD
}
