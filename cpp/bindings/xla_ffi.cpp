// XLA FFI handlers (CPU) for every eggroll op, and the pybind11 module eggroll._xla_ffi that
// hands them to JAX as PyCapsules. Buffers become TensorViews and go through the same
// check_<op> (ops.h's plan makers, through xla_ffi_common.h) and CPU runs the NumPy path calls, so results
// are bit-identical.
// No C++ exception crosses the FFI boundary: the JAX adapter checks everything it can at trace
// time with the same checks, so these only fire on traced values that turn out bad (e.g. a
// negative epoch).
#include <pybind11/pybind11.h>
#include "eggroll/eggroll.h"
#include "xla/ffi/api/ffi.h"
#include "xla_ffi_common.h"

namespace ffi = xla::ffi;
namespace py = pybind11;
using namespace eggroll;
using namespace eggroll::xla_ffi;

namespace {

void schedule_on_xla(void* pool, void (*fn)(void*), void* arg) {
  static_cast<ffi::ThreadPool*>(pool)->Schedule([fn, arg] { fn(arg); });
}

// Runs the op on XLA's intra-op threads (the FFI ThreadPool XLA hands every CPU handler: its
// Eigen workers spin after each XLA op, so a pool of our own would fight them for the cores),
// with IEEE subnormals (XLA's threads flush them), and never lets an exception into XLA.
template <Op op>
ffi::Error op_handler(ffi::ThreadPool pool, ffi::RemainingArgs args, ffi::RemainingRets rets,
                   ffi::Dictionary attrs) {
  return guarded([&] {
    Executor ex;
    ex.threads = int(pool.num_threads());
    ex.schedule = &schedule_on_xla;
    ex.ctx = &pool;
    ScopedExecutor scope(ex.threads >= 1 ? &ex : nullptr);  // no pool: the core's own
    ScopedIeeeFloat ieee;
    Call c{args, rets, attrs, op};
    run(plan<op>(c));
  });
}

}  // namespace

#define EGGROLL_DEFINE(name)                                                                   \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(eggroll_##name, op_handler<Op::name>,                             \
                                ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().RemainingArgs()        \
                                    .RemainingRets().Attrs());
EGGROLL_FFI_OPS(EGGROLL_DEFINE)
#undef EGGROLL_DEFINE

PYBIND11_MODULE(_xla_ffi, mod) {
  mod.doc() = "eggroll XLA FFI handlers (CPU). Used by eggroll.jax; not a public API.";
  // op name -> {platform -> handler capsule}; CUDA handlers join under "CUDA" in CUDA builds.
  mod.def("registrations", [] {
    py::dict cpu;
#define EGGROLL_ADD(name) cpu[#name] = capsule(eggroll_##name);
    EGGROLL_FFI_OPS(EGGROLL_ADD)
#undef EGGROLL_ADD
    return py::dict(py::arg("cpu") = cpu);
  });
}
