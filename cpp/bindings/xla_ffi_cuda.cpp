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
// - Device-resident keys: seed (uint32 [2]), epoch (int64, as uint32 [2] words) and index
//   members (int64, as uint32 [M, 2] words: JAX without x64 has no int64) stay on the device;
//   the kernels read them in place and check them (cuda.h, "values on the device"), as they do
//   fitness and pair_fitness. Nothing is copied to the host and nothing synchronises, so every
//   handler is command-buffer compatible (XLA may capture it into a CUDA graph).
// - Scratch: the last result of every keyed handler is a uint8 workspace of
//   workspace_bytes(plan) (`workspace_bytes` below, asked at trace time), so no launch
//   allocates inside a command buffer.
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

enum class Op { perturbed_matmul, perturbed_matmul_full, perturb_vector, lowrank_factors,
                es_gradient, es_gradient_factors, centered_rank, zscore, antithetic_sign,
                perturbed_matmul_int8, int8_update, perturbed_embedding };

// A device int64 array given as int64 or as its uint32 words (..., 2): its address.
const int64_t* int64_words(const TensorView& t, int64_t count, const char* name) {
  const bool ok = (t.dtype == DType::int64 && t.numel() == count) ||
                  (t.dtype == DType::uint32 && t.numel() == 2 * count);
  if (!ok)
    value_error(std::string(name) + ": expected int64 [" + std::to_string(count) +
                "] or its uint32 words (eggroll.jax builds it)");
  return static_cast<const int64_t*>(t.data);
}

// The key and members of a keyed call whose arrays are operands [0, na): then the index
// members (members attribute 2), seed uint32 [2], epoch; all device memory, read in place.
struct Keyed {
  Key key;
  Members members;
};
Keyed read_keyed(const Call& c, size_t na) {
  Keyed k;
  k.key = c.key();
  size_t i = na;
  if (c.members_kind() == 1) k.members = c.member_range();
  if (c.members_kind() == 2) {
    const TensorView m = c.arg(i++);
    const int64_t M = m.dtype == DType::uint32 ? m.numel() / 2 : m.numel();
    TensorView idx = make_view(const_cast<int64_t*>(int64_words(m, M, "members")), DType::int64, {M});
    idx.device = Device::cuda;
    idx.device_index = c.device;
    k.members = Members::indices(idx);
  }
  const TensorView seed = c.arg(i);
  if (seed.dtype != DType::uint32 || seed.numel() != 2)
    value_error("seed: expected uint32 [2] (low, high words)");
  k.key.seed_device = static_cast<const uint32_t*>(seed.data);
  k.key.epoch_device = int64_words(c.arg(i + 1), 1, "epoch");
  return k;
}

// Runs one launch with the call's last result as its workspace.
template <class Plan, class Launch>
void with_workspace(const Call& c, const Plan& p, Launch&& launch) {
  ffi::Result<ffi::AnyBuffer> w = unwrap(c.rets.get<ffi::AnyBuffer>(c.rets.size() - 1), "workspace");
  if (w->size_bytes() < cuda::workspace_bytes(p))
    value_error("workspace: smaller than workspace_bytes (eggroll.jax sizes it)");
  cuda::Workspace scope(w->untyped_data(), w->size_bytes());
  launch(p);
}

template <Op op>
void run(const Call& c, cudaStream_t s) {
  if constexpr (op == Op::perturbed_matmul || op == Op::perturbed_matmul_full) {
    // x, base = x W^T (XLA's dot, aliased to y). W is not needed: a stand-in of its shape.
    const Keyed k = read_keyed(c, 2);
    const TensorView y = forward_view(c, c.ret(0), k.members, true), base = c.arg(1);
    if (base.dtype != y.dtype || base.numel() != y.numel())
      value_error("base: expected the result's shape " + y.shape_str() + " and dtype");
    const TensorView x = forward_view(c, c.arg(0), k.members, false);
    TensorView W = make_view(nullptr, x.dtype, {y.shape[y.ndim - 1], x.shape[x.ndim - 1]});
    W.device = Device::cuda;
    W.device_index = c.device;
    const ForwardPlan p = check_perturbed_matmul(x, W, k.members, k.key, y,
                                                 op == Op::perturbed_matmul_full);
    if (y.data != base.data) {
      DeviceGuard guard(c.device);
      check_cuda(cudaMemcpyAsync(y.data, base.data, size_t(y.numel() * dtype_size(y.dtype)),
                                 cudaMemcpyDeviceToDevice, s), "cudaMemcpyAsync (base)");
    }
    with_workspace(c, p, [&](const ForwardPlan& q) {
      if (q.full_rank) cuda::fullrank_correction(q, s);
      else cuda::lowrank_correction(q, s);
    });
  } else if constexpr (op == Op::perturbed_embedding) {
    // Index members are on the device (no upload, no workspace): the launcher reads them there.
    const Keyed k = read_keyed(c, 2);
    const TensorView rows = embedding_rows(forward_view(c, c.arg(0), k.members, false));
    cuda::perturbed_embedding(check_perturbed_embedding(rows, c.arg(1), k.members, k.key,
                                                        embedding_out(forward_view(c, c.ret(0), k.members, true), rows)),
                              s);
  } else if constexpr (op == Op::perturb_vector) {
    const Keyed k = read_keyed(c, 1);
    with_workspace(c, check_perturb_vector(c.arg(0), k.members, k.key, c.ret(0)),
                   [&](const VectorPlan& q) { cuda::perturb_vector(q, s); });
  } else if constexpr (op == Op::lowrank_factors) {
    const Keyed k = read_keyed(c, 0);
    const TensorView A = c.ret(0), B = c.ret(1);
    with_workspace(c, check_lowrank_factors(k.members, A.ndim == 3 ? A.shape[1] : 0,
                                            B.ndim == 3 ? B.shape[1] : 0, k.key, A, B),
                   [&](const FactorPlan& q) { cuda::lowrank_factors(q, s); });
  } else if constexpr (op == Op::es_gradient) {
    // Full rank / vectors (the low rank estimate is es_gradient_factors + XLA's dot).
    const Keyed k = read_keyed(c, 1);
    with_workspace(c, check_es_gradient(c.arg(0), k.members, k.key, true, c.i64("population"),
                                        false, c.ret(0)),
                   [&](const GradientPlan& q) { cuda::es_gradient(q, cuda::fallback_gemm(), s); });
  } else if constexpr (op == Op::es_gradient_factors) {
    // Af [C, m], Bf [C, n]: C from the chunk plan (the bound for traced index members, whose
    // rows past the runs the launcher writes as zeros).
    const Keyed k = read_keyed(c, 1);
    const TensorView Af = c.ret(0), Bf = c.ret(1);
    with_workspace(c, check_es_gradient_factors(c.arg(0), k.members, Af.shape[1], Bf.shape[1],
                                                k.key, c.i64("population"), Af, Bf),
                   [&](const FactorRowsPlan& q) { cuda::es_gradient_factors(q, s); });
  } else if constexpr (op == Op::perturbed_matmul_int8) {
    const Keyed k = read_keyed(c, 2);
    with_workspace(c, check_perturbed_matmul_int8(forward_view(c, c.arg(0), k.members, false), c.arg(1),
                                                  k.members, k.key,
                                                  forward_view(c, c.ret(0), k.members, true)),
                   [&](const Int8ForwardPlan& q) { cuda::perturbed_matmul_int8(q, s); });
  } else if constexpr (op == Op::int8_update) {
    const Keyed k = read_keyed(c, 2);
    with_workspace(c, check_int8_update(c.arg(0), c.arg(1), c.i64("threshold"), k.key, c.ret(0)),
                   [&](const Int8UpdatePlan& q) { cuda::int8_update(q, s); });
  } else {
    const Shaping kind = op == Op::centered_rank ? Shaping::centered_rank
                         : op == Op::zscore      ? Shaping::zscore
                                                 : Shaping::antithetic_sign;
    cuda::shape_fitness(check_fitness_shaping(kind, c.arg(0), op == Op::zscore ? c.i64("group_size") : 0,
                                              c.ret(0)), s);
  }
}

template <Op op>
ffi::Error op_handler(cudaStream_t stream, int32_t device, ffi::RemainingArgs args,
                      ffi::RemainingRets rets, ffi::Dictionary attrs) {
  return guarded([&] { run<op>(Call{args, rets, attrs, int(device)}, stream); });
}

// The workspace result's size for an op at trace time (bytes; the plan from abstract arrays
// of the given dims, as the handler will see them).
size_t workspace_for(const std::string& op, int64_t M, int64_t b, int64_t m, int64_t n,
                     int64_t rank, bool full_rank, bool perturb, int64_t P) {
  Key key;
  key.rank = rank;
  Members mem = perturb ? Members::range(0, 1, M) : Members::none();
  if (op == "perturbed_matmul" || op == "perturbed_matmul_full") {
    ForwardPlan p;
    p.M = M; p.b = b; p.m = m; p.n = n; p.key = key; p.members = mem;
    p.full_rank = op == "perturbed_matmul_full";
    return cuda::workspace_bytes(p);
  }
  if (op == "es_gradient" || op == "es_gradient_factors") {
    GradientPlan g;
    g.M = M; g.m = m; g.n = n; g.key = key; g.members = mem; g.full_rank = full_rank;
    if (op == "es_gradient") return cuda::workspace_bytes(g);
    FactorRowsPlan f;
    f.g = g;
    return cuda::workspace_bytes(f);
  }
  if (op == "perturbed_matmul_int8") {
    Int8ForwardPlan p;
    p.M = M; p.b = b; p.m = m; p.n = n; p.key = key; p.members = mem;
    return cuda::workspace_bytes(p);
  }
  if (op == "int8_update") {
    Int8UpdatePlan p;
    p.m = m; p.n = n; p.P = P; p.key = key;
    return cuda::workspace_bytes(p);
  }
  return 0;  // perturb_vector, lowrank_factors: device members, no scratch
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
#define EGGROLL_CUDA_OPS(X) EGGROLL_FFI_OPS(X) X(es_gradient_factors)
#define EGGROLL_DEFINE(name)                                                                   \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(eggroll_cuda_##name, op_handler<Op::name>,                        \
                                EGGROLL_CUDA_CTX.RemainingArgs().RemainingRets().Attrs(),       \
                                {ffi::Traits::kCmdBufferCompatible});
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
  mod.def("workspace_bytes", &workspace_for, py::arg("op"), py::arg("M") = 0, py::arg("b") = 1,
          py::arg("m") = 0, py::arg("n") = 0, py::arg("rank") = 1, py::arg("full_rank") = false,
          py::arg("perturb") = true, py::arg("P") = 0,
          "Bytes of the workspace result of a keyed handler (device members: no uploads).");
}
