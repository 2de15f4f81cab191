// XLA FFI handlers (CPU) for every eggroll op, and the pybind11 module eggroll._xla_ffi that
// hands them to JAX as PyCapsules. Buffers become TensorViews and go through the same
// check_<op> and CPU runs the NumPy path calls, so results are bit-identical.
//
// Operands: the op's arrays, then (index members), seed uint32 [2] (low, high words) and epoch
// (an integer scalar): traced values, so a jitted step compiles once for all epochs. The
// static key, a range of members and the op's options are attributes (xla_ffi_common.h).
// No C++ exception crosses the FFI boundary: the JAX adapter checks everything it can at trace
// time with the same checks, so these only fire on traced values that turn out bad (e.g. a
// negative epoch).
#include <pybind11/pybind11.h>
#include <cstdint>
#include <string>
#include <vector>
#include "eggroll/eggroll.h"
#include "xla/ffi/api/ffi.h"
#include "xla_ffi_common.h"

namespace ffi = xla::ffi;
namespace py = pybind11;
using namespace eggroll;
using namespace eggroll::xla_ffi;

namespace {

enum class Op { perturbed_matmul, perturbed_matmul_full, perturb_vector, lowrank_factors,
                es_gradient, centered_rank, zscore, antithetic_sign, perturbed_matmul_int8,
                int8_update, perturbed_embedding };

// The key and members of a keyed call whose arrays are operands [0, na).
struct Keyed {
  Key key;
  Members members;
  std::vector<int64_t> index;  // an index operand as int64
};

int64_t scalar(const TensorView& t, const char* name) {
  if (t.numel() != 1) value_error(std::string(name) + ": expected a scalar");
  switch (t.dtype) {
    case DType::int32: return *t.ptr<const int32_t>();
    case DType::uint32: return *t.ptr<const uint32_t>();
    case DType::int64: return *t.ptr<const int64_t>();
    default: type_error(std::string(name) + ": expected an int32, uint32 or int64 scalar");
  }
}

void read_keyed(const Call& c, size_t na, Keyed& k) {
  k.key = c.key();
  size_t i = na;
  if (c.members_kind() == 1) k.members = c.member_range();
  if (c.members_kind() == 2) {
    const TensorView m = c.arg(i++);
    if (m.dtype != DType::int32 && m.dtype != DType::int64)
      type_error("members: expected int32 or int64 indices");
    k.index.resize(size_t(m.numel()));
    for (int64_t j = 0; j < m.numel(); ++j)
      k.index[size_t(j)] = m.dtype == DType::int32 ? m.ptr<const int32_t>()[j] : m.ptr<const int64_t>()[j];
    k.members = Members::indices(make_view(k.index.data(), DType::int64, {m.numel()}));
  }
  const TensorView seed = c.arg(i);
  if (seed.dtype != DType::uint32 || seed.numel() != 2)
    value_error("seed: expected uint32 [2] (low, high words)");
  k.key.seed = uint64_t(seed.ptr<const uint32_t>()[0]) | (uint64_t(seed.ptr<const uint32_t>()[1]) << 32);
  k.key.epoch = scalar(c.arg(i + 1), "epoch");
}

template <Op op>
void run(const Call& c) {
  Keyed k;
  if constexpr (op == Op::perturbed_matmul || op == Op::perturbed_matmul_full) {
    read_keyed(c, 2, k);
    ForwardPlan p = check_perturbed_matmul(forward_view(c, c.arg(0), k.members, false), c.arg(1),
                                           k.members, k.key, forward_view(c, c.ret(0), k.members, true),
                                           op == Op::perturbed_matmul_full);
    p.base = c.flag("base");
    perturbed_matmul(p);
  } else if constexpr (op == Op::perturbed_matmul_int8) {
    read_keyed(c, 2, k);
    perturbed_matmul_int8(check_perturbed_matmul_int8(forward_view(c, c.arg(0), k.members, false),
                                                      c.arg(1), k.members, k.key,
                                                      forward_view(c, c.ret(0), k.members, true)));
  } else if constexpr (op == Op::perturbed_embedding) {
    read_keyed(c, 2, k);
    const TensorView rows = embedding_rows(forward_view(c, c.arg(0), k.members, false));
    perturbed_embedding(check_perturbed_embedding(
        rows, c.arg(1), k.members, k.key, embedding_out(forward_view(c, c.ret(0), k.members, true), rows)));
  } else if constexpr (op == Op::perturb_vector) {
    read_keyed(c, 1, k);
    perturb_vector(check_perturb_vector(c.arg(0), k.members, k.key, c.ret(0)));
  } else if constexpr (op == Op::lowrank_factors) {
    read_keyed(c, 0, k);
    const TensorView A = c.ret(0), B = c.ret(1);
    lowrank_factors(check_lowrank_factors(k.members, A.ndim == 3 ? A.shape[1] : 0,
                                          B.ndim == 3 ? B.shape[1] : 0, k.key, A, B));
  } else if constexpr (op == Op::es_gradient) {
    read_keyed(c, 1, k);
    es_gradient(check_es_gradient(c.arg(0), k.members, k.key, c.flag("full_rank"),
                                  c.i64("population"), false, c.ret(0)));
  } else if constexpr (op == Op::int8_update) {
    read_keyed(c, 2, k);
    int8_update(check_int8_update(c.arg(0), c.arg(1), c.i64("threshold"), k.key, c.ret(0)));
  } else {
    const Shaping kind = op == Op::centered_rank ? Shaping::centered_rank
                         : op == Op::zscore      ? Shaping::zscore
                                                 : Shaping::antithetic_sign;
    shape_fitness(check_fitness_shaping(kind, c.arg(0), op == Op::zscore ? c.i64("group_size") : 0,
                                        c.ret(0)));
  }
}

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
    run<op>(Call{args, rets, attrs});
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
