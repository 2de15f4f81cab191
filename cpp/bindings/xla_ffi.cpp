// XLA FFI handlers (CPU) for every eggroll op, and the pybind11 module eggroll._xla_ffi that
// hands them to JAX as PyCapsules. The only code that knows XLA. Buffers become TensorViews
// and go to the same core functions the NumPy adapter calls, so results are bit-identical.
//
// Traced values (the arrays, members, seed, epoch) are operands; everything that shapes the
// computation (rank, sigma, noise_reuse, antithetic, param_id; for int8 also fixed_point,
// sigma_shift, threshold) is a static attribute, so a
// jitted step compiles once for all epochs. No C++ exception crosses the FFI boundary: every
// handler catches and returns an ffi::Error (the JAX adapter validates at trace time, so these
// only fire on traced values that turn out bad, e.g. a negative epoch).
#include <pybind11/pybind11.h>
#include <cstdint>
#include <exception>
#include <string>
#include <vector>
#include "eggroll/eggroll.h"
#include "xla/ffi/api/ffi.h"
#include "xla_ffi_common.h"

namespace ffi = xla::ffi;
namespace py = pybind11;
using namespace eggroll;
using eggroll::xla_ffi::view;
using eggroll::xla_ffi::capsule;

namespace {

// members arrive as int32 (JAX's default) or int64; the core takes int64 [M].
std::vector<int64_t> member_indices(ffi::AnyBuffer members) {
  const size_t M = members.element_count();
  std::vector<int64_t> out(M);
  if (members.element_type() == ffi::DataType::S32) {
    const int32_t* p = static_cast<const int32_t*>(members.untyped_data());
    for (size_t i = 0; i < M; ++i) out[i] = p[i];
  } else if (members.element_type() == ffi::DataType::S64) {
    const int64_t* p = static_cast<const int64_t*>(members.untyped_data());
    for (size_t i = 0; i < M; ++i) out[i] = p[i];
  } else {
    type_error("members: expected int32 or int64 indices");
  }
  return out;
}

// The noise key from its traced parts: seed uint32 [2] = (low, high) words, epoch an integer
// scalar (int32, uint32 or int64), and the static attributes.
EsArgs es_args(ffi::Buffer<ffi::U32> seed, ffi::AnyBuffer epoch, int64_t param_id, double sigma,
               int64_t rank, int64_t noise_reuse, bool antithetic) {
  if (seed.element_count() != 2) value_error("seed: expected uint32 [2] (low, high words)");
  if (epoch.element_count() != 1) value_error("epoch: expected a scalar");
  EsArgs a;
  a.seed = uint64_t(seed.typed_data()[0]) | (uint64_t(seed.typed_data()[1]) << 32);
  a.param_id = uint32_t(param_id);
  switch (epoch.element_type()) {
    case ffi::DataType::S32: a.epoch = *static_cast<const int32_t*>(epoch.untyped_data()); break;
    case ffi::DataType::U32: a.epoch = *static_cast<const uint32_t*>(epoch.untyped_data()); break;
    case ffi::DataType::S64: a.epoch = *static_cast<const int64_t*>(epoch.untyped_data()); break;
    default: type_error("epoch: expected an int32, uint32 or int64 scalar");
  }
  a.noise_reuse = noise_reuse;
  a.antithetic = antithetic;
  a.sigma = sigma;
  a.rank = rank;
  validate_args(a);
  return a;
}

void schedule_on_xla(void* pool, void (*fn)(void*), void* arg) {
  static_cast<ffi::ThreadPool*>(pool)->Schedule([fn, arg] { fn(arg); });
}

// Runs body on XLA's intra-op threads (the FFI ThreadPool XLA hands every CPU handler: its
// Eigen workers spin after each XLA op, so a pool of our own would fight them for the cores)
// and turns any exception into an FFI error (never lets one cross into XLA).
template <class F>
ffi::Error guarded(ffi::ThreadPool& pool, F&& body) {
  return eggroll::xla_ffi::guarded([&] {
    Executor ex;
    ex.threads = int(pool.num_threads());
    ex.schedule = &schedule_on_xla;
    ex.ctx = &pool;
    ScopedExecutor scope(ex.threads >= 1 ? &ex : nullptr);  // no pool: the core's own
    body();
  });
}

// x [M, n] | [M, b, n], W [m, n], members [M] -> y [M, (b,) m]. perturb == 0: y = x W^T.
ffi::Error forward_impl(ffi::ThreadPool& pool, bool full, ffi::AnyBuffer x, ffi::AnyBuffer W,
                        ffi::AnyBuffer members,
                        ffi::Buffer<ffi::U32> seed, ffi::AnyBuffer epoch,
                        ffi::Result<ffi::AnyBuffer> y, int64_t param_id, double sigma,
                        int64_t rank, int64_t noise_reuse, bool antithetic, bool perturb) {
  return guarded(pool, [&] {
    EsArgs a = es_args(seed, epoch, param_id, sigma, rank, noise_reuse, antithetic);
    std::vector<int64_t> mem;
    TensorView mv;  // null view: no perturbation
    if (perturb) {
      mem = member_indices(members);
      mv = make_view(mem.data(), DType::int64, {int64_t(mem.size())});
    }
    if (full) perturbed_matmul_full(view(x), view(W), mv, a, view(y));
    else perturbed_matmul(view(x), view(W), mv, a, view(y));
  });
}

ffi::Error perturbed_matmul_ffi(ffi::ThreadPool pool,
                                ffi::AnyBuffer x, ffi::AnyBuffer W, ffi::AnyBuffer members,
                                ffi::Buffer<ffi::U32> seed, ffi::AnyBuffer epoch,
                                ffi::Result<ffi::AnyBuffer> y, int64_t param_id, double sigma,
                                int64_t rank, int64_t noise_reuse, bool antithetic, bool perturb) {
  return forward_impl(pool, false, x, W, members, seed, epoch, y, param_id, sigma, rank, noise_reuse,
                      antithetic, perturb);
}
ffi::Error perturbed_matmul_full_ffi(ffi::ThreadPool pool,
                                     ffi::AnyBuffer x, ffi::AnyBuffer W, ffi::AnyBuffer members,
                                     ffi::Buffer<ffi::U32> seed, ffi::AnyBuffer epoch,
                                     ffi::Result<ffi::AnyBuffer> y, int64_t param_id,
                                     double sigma, int64_t rank, int64_t noise_reuse,
                                     bool antithetic, bool perturb) {
  return forward_impl(pool, true, x, W, members, seed, epoch, y, param_id, sigma, rank, noise_reuse,
                      antithetic, perturb);
}

// v [m], members [M] -> out [M, m].
ffi::Error perturb_vector_ffi(ffi::ThreadPool pool,
                              ffi::AnyBuffer v, ffi::AnyBuffer members, ffi::Buffer<ffi::U32> seed,
                              ffi::AnyBuffer epoch, ffi::Result<ffi::AnyBuffer> out,
                              int64_t param_id, double sigma, int64_t noise_reuse, bool antithetic) {
  return guarded(pool, [&] {
    EsArgs a = es_args(seed, epoch, param_id, sigma, 1, noise_reuse, antithetic);
    std::vector<int64_t> mem = member_indices(members);
    perturb_vector(view(v), make_view(mem.data(), DType::int64, {int64_t(mem.size())}), a,
                   view(out));
  });
}

// members [M] -> A [M, m, r], B [M, n, r] (m, n from the result shapes).
ffi::Error lowrank_factors_ffi(ffi::ThreadPool pool,
                               ffi::AnyBuffer members, ffi::Buffer<ffi::U32> seed,
                               ffi::AnyBuffer epoch, ffi::Result<ffi::AnyBuffer> A,
                               ffi::Result<ffi::AnyBuffer> B, int64_t param_id, double sigma,
                               int64_t rank, int64_t noise_reuse, bool antithetic) {
  return guarded(pool, [&] {
    EsArgs a = es_args(seed, epoch, param_id, sigma, rank, noise_reuse, antithetic);
    std::vector<int64_t> mem = member_indices(members);
    TensorView Av = view(A), Bv = view(B);
    if (Av.ndim != 3 || Bv.ndim != 3) value_error("A: expected [M, m, r] and B [M, n, r]");
    lowrank_factors(make_view(mem.data(), DType::int64, {int64_t(mem.size())}), Av.shape[1],
                    Bv.shape[1], a, Av, Bv);
  });
}

// fitness [N], members [N] -> g [m, n] or [m] (full rank for 1-D g or full_rank).
ffi::Error es_gradient_ffi(ffi::ThreadPool pool,
                           ffi::AnyBuffer fitness, ffi::AnyBuffer members,
                           ffi::Buffer<ffi::U32> seed, ffi::AnyBuffer epoch,
                           ffi::Result<ffi::AnyBuffer> g, int64_t param_id, double sigma,
                           int64_t rank, int64_t noise_reuse, bool antithetic, bool full_rank) {
  return guarded(pool, [&] {
    EsArgs a = es_args(seed, epoch, param_id, sigma, rank, noise_reuse, antithetic);
    std::vector<int64_t> mem = member_indices(members);
    TensorView f = view(fitness);
    es_gradient(f, make_view(mem.data(), DType::int64, {int64_t(mem.size())}), a, full_rank,
                f.numel(), false, view(g));
  });
}

ffi::Error centered_rank_ffi(ffi::ThreadPool pool,
                             ffi::AnyBuffer f, ffi::Result<ffi::AnyBuffer> out) {
  return guarded(pool, [&] { centered_rank(view(f), view(out)); });
}
ffi::Error zscore_ffi(ffi::ThreadPool pool,
                      ffi::AnyBuffer f, ffi::Result<ffi::AnyBuffer> out, int64_t group_size) {
  return guarded(pool, [&] { zscore(view(f), group_size, view(out)); });
}
ffi::Error antithetic_sign_ffi(ffi::ThreadPool pool,
                               ffi::AnyBuffer f, ffi::Result<ffi::AnyBuffer> out) {
  return guarded(pool, [&] { antithetic_sign(view(f), view(out)); });
}

// The int8 key from its traced parts (seed uint32 [2], epoch scalar) and static attributes.
Int8Args int8_args(ffi::Buffer<ffi::U32> seed, ffi::AnyBuffer epoch, int64_t param_id,
                   int64_t rank, int64_t noise_reuse, bool antithetic, int64_t fixed_point,
                   int64_t sigma_shift) {
  // es_args decodes seed and epoch (and checks them); sigma = 1 is a placeholder it validates.
  EsArgs e = es_args(seed, epoch, param_id, 1.0, 1, noise_reuse, antithetic);
  Int8Args a;
  a.seed = e.seed;
  a.param_id = e.param_id;
  a.epoch = e.epoch;
  a.noise_reuse = noise_reuse;
  a.antithetic = antithetic;
  a.rank = rank;
  a.fixed_point = fixed_point;
  a.sigma_shift = sigma_shift;
  validate_int8_args(a);
  return a;
}

// x int8 [M, n] | [M, b, n], W int8 [m, n], members [M] -> y int8 [M, (b,) m].
// perturb == 0: the unperturbed product (members ignored).
ffi::Error perturbed_matmul_int8_ffi(ffi::ThreadPool pool,
                                     ffi::AnyBuffer x, ffi::AnyBuffer W, ffi::AnyBuffer members,
                                     ffi::Buffer<ffi::U32> seed, ffi::AnyBuffer epoch,
                                     ffi::Result<ffi::AnyBuffer> y, int64_t param_id,
                                     int64_t rank, int64_t noise_reuse, bool antithetic,
                                     int64_t fixed_point, int64_t sigma_shift, bool perturb) {
  return guarded(pool, [&] {
    Int8Args a = int8_args(seed, epoch, param_id, rank, noise_reuse, antithetic, fixed_point,
                           sigma_shift);
    std::vector<int64_t> mem;
    TensorView mv;  // null view: no perturbation
    if (perturb) {
      mem = member_indices(members);
      mv = make_view(mem.data(), DType::int64, {int64_t(mem.size())});
    }
    perturbed_matmul_int8(view(x), view(W), mv, a, view(y));
  });
}

// W int8 [m, n], pair_fitness int8 [P] in {-1, 0, 1} -> out int8 [m, n].
ffi::Error int8_update_ffi(ffi::ThreadPool pool,
                           ffi::AnyBuffer W, ffi::AnyBuffer pair_fitness,
                           ffi::Buffer<ffi::U32> seed, ffi::AnyBuffer epoch,
                           ffi::Result<ffi::AnyBuffer> out, int64_t threshold, int64_t param_id,
                           int64_t rank, int64_t noise_reuse, int64_t fixed_point) {
  return guarded(pool, [&] {
    Int8Args a = int8_args(seed, epoch, param_id, rank, noise_reuse, true, fixed_point, 0);
    int8_update(view(W), view(pair_fitness), threshold, a, view(out));
  });
}

// The noise-key operands and attributes every keyed op binds, in this order.
#define EGGROLL_KEY_OPERANDS .Arg<ffi::Buffer<ffi::U32>>().Arg<ffi::AnyBuffer>()

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    eggroll_perturbed_matmul, perturbed_matmul_ffi,
    ffi::Ffi::Bind().Ctx<ffi::ThreadPool>()
        .Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>()
        EGGROLL_KEY_OPERANDS.Ret<ffi::AnyBuffer>()
        .Attr<int64_t>("param_id").Attr<double>("sigma").Attr<int64_t>("rank")
        .Attr<int64_t>("noise_reuse").Attr<bool>("antithetic").Attr<bool>("perturb"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    eggroll_perturbed_matmul_full, perturbed_matmul_full_ffi,
    ffi::Ffi::Bind().Ctx<ffi::ThreadPool>()
        .Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>()
        EGGROLL_KEY_OPERANDS.Ret<ffi::AnyBuffer>()
        .Attr<int64_t>("param_id").Attr<double>("sigma").Attr<int64_t>("rank")
        .Attr<int64_t>("noise_reuse").Attr<bool>("antithetic").Attr<bool>("perturb"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    eggroll_perturb_vector, perturb_vector_ffi,
    ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>()
        EGGROLL_KEY_OPERANDS.Ret<ffi::AnyBuffer>()
        .Attr<int64_t>("param_id").Attr<double>("sigma").Attr<int64_t>("noise_reuse")
        .Attr<bool>("antithetic"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    eggroll_lowrank_factors, lowrank_factors_ffi,
    ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<ffi::AnyBuffer>() EGGROLL_KEY_OPERANDS
        .Ret<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>()
        .Attr<int64_t>("param_id").Attr<double>("sigma").Attr<int64_t>("rank")
        .Attr<int64_t>("noise_reuse").Attr<bool>("antithetic"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    eggroll_es_gradient, es_gradient_ffi,
    ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>()
        EGGROLL_KEY_OPERANDS.Ret<ffi::AnyBuffer>()
        .Attr<int64_t>("param_id").Attr<double>("sigma").Attr<int64_t>("rank")
        .Attr<int64_t>("noise_reuse").Attr<bool>("antithetic").Attr<bool>("full_rank"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    eggroll_perturbed_matmul_int8, perturbed_matmul_int8_ffi,
    ffi::Ffi::Bind().Ctx<ffi::ThreadPool>()
        .Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>()
        EGGROLL_KEY_OPERANDS.Ret<ffi::AnyBuffer>()
        .Attr<int64_t>("param_id").Attr<int64_t>("rank").Attr<int64_t>("noise_reuse")
        .Attr<bool>("antithetic").Attr<int64_t>("fixed_point").Attr<int64_t>("sigma_shift")
        .Attr<bool>("perturb"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    eggroll_int8_update, int8_update_ffi,
    ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>()
        EGGROLL_KEY_OPERANDS.Ret<ffi::AnyBuffer>()
        .Attr<int64_t>("threshold").Attr<int64_t>("param_id").Attr<int64_t>("rank")
        .Attr<int64_t>("noise_reuse").Attr<int64_t>("fixed_point"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(eggroll_centered_rank, centered_rank_ffi,
                              ffi::Ffi::Bind().Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(eggroll_zscore, zscore_ffi,
                              ffi::Ffi::Bind().Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("group_size"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(eggroll_antithetic_sign, antithetic_sign_ffi,
                              ffi::Ffi::Bind().Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>());

PYBIND11_MODULE(_xla_ffi, mod) {
  mod.doc() = "eggroll XLA FFI handlers (CPU). Used by eggroll.jax; not a public API.";
  // op name -> {platform -> handler capsule}; CUDA handlers join under "CUDA" in CUDA builds.
  mod.def("registrations", [] {
    py::dict cpu;
    cpu["perturbed_matmul"] = capsule(eggroll_perturbed_matmul);
    cpu["perturbed_matmul_full"] = capsule(eggroll_perturbed_matmul_full);
    cpu["perturb_vector"] = capsule(eggroll_perturb_vector);
    cpu["lowrank_factors"] = capsule(eggroll_lowrank_factors);
    cpu["es_gradient"] = capsule(eggroll_es_gradient);
    cpu["centered_rank"] = capsule(eggroll_centered_rank);
    cpu["zscore"] = capsule(eggroll_zscore);
    cpu["antithetic_sign"] = capsule(eggroll_antithetic_sign);
    cpu["perturbed_matmul_int8"] = capsule(eggroll_perturbed_matmul_int8);
    cpu["int8_update"] = capsule(eggroll_int8_update);
    py::dict out;
    out["cpu"] = cpu;
    return out;
  });
}
