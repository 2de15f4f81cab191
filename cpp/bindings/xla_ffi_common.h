// What the CPU (xla_ffi.cpp) and CUDA (xla_ffi_cuda.cpp) XLA FFI handlers share: XLA buffers
// as TensorViews, the call's operands and attributes as the core's Key and Members, each op's
// plan (ops.h's make_<op>, as every Python entry makes it), exceptions turned into
// ffi::Errors (none may cross into XLA), and the PyCapsule that hands a handler to
// jax.ffi.register_ffi_target. The handler files only run the plans.
//
// Every handler binds (RemainingArgs, RemainingRets, Attrs). Operands of a keyed op: its
// arrays, then the index members (when members is 2) as the words of int64 values (uint32
// [M, 2]: JAX without x64 has no int64), then the key words uint32 [4] (seed low, high; epoch
// as int64 low, high): traced values, so a jitted step compiles once for all epochs; CUDA
// reads them on the device, in place. The attributes every keyed call carries
// (python/eggroll/jax/_ffi.py): param_id, sigma, rank, noise_reuse, antithetic, fixed_point,
// sigma_shift (the static key), members (0 none, 1 a range: start, step, count; 2 an index
// operand), shared (the forwards' x has no member axis), plus the op's own (base for the
// forwards, full_rank, population, accumulate, group_size, threshold).
#pragma once
#include <pybind11/pybind11.h>
#include <exception>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>
#include "eggroll/eggroll.h"
#include "ops.h"
#include "xla/ffi/api/ffi.h"

namespace eggroll::xla_ffi {

namespace ffi = xla::ffi;

inline DType to_dtype(ffi::DataType dt) {
  using D = ffi::DataType;
  const std::pair<D, DType> types[] = {{D::F32, DType::float32}, {D::F64, DType::float64},
      {D::F16, DType::float16}, {D::BF16, DType::bfloat16}, {D::S8, DType::int8},
      {D::S32, DType::int32}, {D::S64, DType::int64}, {D::U32, DType::uint32}};
  for (const auto& [x, d] : types) if (x == dt) return d;
  return DType::other;
}

template <class T>
T unwrap(ffi::ErrorOr<T> v, const char* what) {
  if (!v.has_value()) value_error(std::string(what) + ": missing or mistyped (eggroll.jax builds it)");
  return v.value();
}

// The ops (one handler each, the same binding and target name on every platform).
#define EGGROLL_FFI_OPS(X)                                                                    \
  X(perturbed_matmul) X(perturbed_matmul_full) X(perturb_vector) X(lowrank_factors)          \
  X(es_gradient) X(es_gradient_factors) X(centered_rank) X(zscore) X(antithetic_sign)        \
  X(perturbed_matmul_int8) X(int8_update) X(perturbed_embedding)
#define EGGROLL_FFI_ENUM(name) name,
enum class Op { EGGROLL_FFI_OPS(EGGROLL_FFI_ENUM) };
#undef EGGROLL_FFI_ENUM

// One handler call as the source of ops.h's plan makers (their Python argument names read as
// attributes; the arrays are the leading operands, in the entries' order; `out`s are the
// results, in order). The CUDA forwards' operand 1 is the base product x W^T (XLA's dot,
// xla_ffi_cuda.cpp), not W: W is a stand-in of its shape there.
struct Call {
  ffi::RemainingArgs args;
  ffi::RemainingRets rets;
  ffi::Dictionary attrs;
  Op op;
  int device = -1;  // CUDA ordinal, or -1 on the CPU
  static constexpr bool device_ok = true, abstract = false;
  bool shared = false;
  std::vector<int64_t> result_shape;
  size_t nout = 0;

  // An operand or a result as a contiguous view (XLA's default row-major layout), on the CUDA
  // device when device >= 0.
  TensorView view(const ffi::AnyBuffer& b) const {
    TensorView t;
    t.data = b.untyped_data();
    t.dtype = to_dtype(b.element_type());
    bridge::set_dims(t, int(b.dimensions().size()), b.dimensions().begin(), nullptr, true, "array");
    return placed(t);
  }
  // t on the call's device (the CUDA ordinal when device >= 0).
  TensorView placed(TensorView t) const {
    if (device >= 0) { t.device = Device::cuda; t.device_index = device; }
    return t;
  }
  TensorView arg(size_t i) const { return view(unwrap(args.get<ffi::AnyBuffer>(i), "operand")); }
  TensorView ret(size_t i) const { return view(*unwrap(rets.get<ffi::AnyBuffer>(i), "result")); }
  int64_t int_(Py_ssize_t, const char* name) const { return unwrap(attrs.get<int64_t>(name), name); }
  bool flag(Py_ssize_t, const char* name) const { return unwrap(attrs.get<bool>(name), name); }
  bool none(Py_ssize_t) const { return false; }
  TensorView like_view(Py_ssize_t) const { return {}; }

  TensorView array(Py_ssize_t i, const char*) const { return arg(size_t(i)); }
  TensorView shaping_array(Py_ssize_t i, const char*) const { return arg(size_t(i)); }
  template <class... A> TensorView exact(Py_ssize_t i, const char*, A...) const { return arg(size_t(i)); }
  TensorView float_array(Py_ssize_t i, const char*) const {
    if (i != 1 || device < 0 || (op != Op::perturbed_matmul && op != Op::perturbed_matmul_full))
      return arg(size_t(i));
    const TensorView x = arg(0), y = ret(0);
    return placed(make_view(nullptr, x.dtype, {y.shape[y.ndim - 1], x.shape[x.ndim - 1]}));
  }
  TensorView out(Py_ssize_t, const std::vector<int64_t>&, DType, const TensorView&, bool add_axis) {
    const TensorView o = ret(nout++);
    return add_axis ? with_member_axis(o, 1, "out") : o;
  }
  // shape (m, n) or (m,): the gradient's, or the factors' second dimensions (A [M, m, r],
  // B [M, n, r]; Af [C, m], Bf [C, n]).
  std::vector<int64_t> dims(Py_ssize_t, const char*) const {
    const TensorView a = ret(0);
    if (op == Op::es_gradient) return std::vector<int64_t>(a.shape, a.shape + a.ndim);
    return {a.ndim >= 2 ? a.shape[1] : 0, ret(1).ndim >= 2 ? ret(1).shape[1] : 0};
  }

  // The key: the static part from the attributes, seed and epoch from the last operand.
  Key key(Py_ssize_t, bool) const {
    Key k;
    k.param_id = uint32_t(int_(0, "param_id"));
    k.sigma = unwrap(attrs.get<double>("sigma"), "sigma");
    k.rank = int_(0, "rank");
    k.noise_reuse = int_(0, "noise_reuse");
    k.antithetic = flag(0, "antithetic");
    k.fixed_point = int_(0, "fixed_point");
    k.sigma_shift = int_(0, "sigma_shift");
    const TensorView w = arg(args.size() - 1);
    if (w.dtype != DType::uint32 || w.numel() != 4)
      value_error("key: expected uint32 [4], the seed's and the epoch's words (eggroll.jax builds it)");
    const uint32_t* words = w.ptr<const uint32_t>();
    if (device >= 0) {  // device memory: the kernels read (and check) them
      k.seed_device = words;
      k.epoch_device = reinterpret_cast<const int64_t*>(words + 2);
    } else {
      k.seed = uint64_t(words[0]) | (uint64_t(words[1]) << 32);
      k.epoch = int64_t(uint64_t(words[2]) | (uint64_t(words[3]) << 32));
    }
    return k;
  }
  // The members: a range (attributes) or the operand before the key's.
  Members members(Py_ssize_t, bool) const {
    const int64_t kind = int_(0, "members");
    if (kind == 1) return Members::range(int_(0, "start"), int_(0, "step"), int_(0, "count"));
    if (kind != 2) return Members::none();
    const TensorView m = arg(args.size() - 2);
    if (m.dtype != DType::uint32 || m.ndim != 2 || m.shape[1] != 2)
      value_error("members: expected the words of int64 indices, uint32 [M, 2] (eggroll.jax builds them)");
    return Members::indices(placed(make_view(m.data, DType::int64, {m.shape[0]})));
  }
};

// The plan of op `op` for call c: ops.h's make_<op>, as every Python entry makes it.
template <Op op>
auto plan(Call& c) {
#define EGGROLL_FFI_PLAN(name) if constexpr (op == Op::name) return bridge::make_##name(c); else
  EGGROLL_FFI_OPS(EGGROLL_FFI_PLAN) {}
#undef EGGROLL_FFI_PLAN
}

// Runs body and turns any exception into an FFI error: ValueError / TypeError become
// INVALID_ARGUMENT with the core's message, anything else INTERNAL.
template <class F>
ffi::Error guarded(F&& body) {
  try {
    body();
    return ffi::Error::Success();
  } catch (const eggroll::Error& e) {  // ValueError, TypeError
    return ffi::Error::InvalidArgument(e.what());
  } catch (const std::exception& e) {
    return ffi::Error::Internal(std::string("eggroll: ") + e.what());
  } catch (...) {
    return ffi::Error::Internal("eggroll: unknown C++ exception");
  }
}

// A handler symbol (XLA_FFI_DEFINE_HANDLER_SYMBOL) as the capsule JAX registers.
template <class T>
pybind11::capsule capsule(T* fn) {
  static_assert(std::is_invocable_r_v<XLA_FFI_Error*, T, XLA_FFI_CallFrame*>,
                "an XLA FFI handler takes a call frame");
  return pybind11::capsule(reinterpret_cast<void*>(fn));
}

}  // namespace eggroll::xla_ffi
