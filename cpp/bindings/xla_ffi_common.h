// What the CPU (xla_ffi.cpp) and CUDA (xla_ffi_cuda.cpp) XLA FFI handlers share: XLA buffers
// as TensorViews, the call's operands and attributes as the core's Key and Members, each op's
// plan (made by the same check_<op> as every other front end), exceptions turned into
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
// operand), shared (the forwards' x has no member axis), plus the op's own (base for the float
// forwards, full_rank, population, group_size, threshold).
#pragma once
#include <pybind11/pybind11.h>
#include <exception>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>
#include "eggroll/eggroll.h"
#include "runs.h"
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

// A contiguous (XLA's default row-major layout) view; `cuda_device` >= 0: on that device.
inline TensorView view(void* data, ffi::DataType dt, ffi::Span<const int64_t> dims, int cuda_device) {
  if (dims.size() > size_t(TensorView::kMaxDims)) value_error("array: at most 8 dimensions");
  TensorView t;
  t.data = data;
  t.dtype = to_dtype(dt);
  t.ndim = int(dims.size());
  int64_t stride = 1;
  for (int i = t.ndim - 1; i >= 0; --i) {
    t.shape[i] = dims[size_t(i)];
    t.strides[i] = stride;
    stride *= dims[size_t(i)];
  }
  if (cuda_device >= 0) { t.device = Device::cuda; t.device_index = cuda_device; }
  return t;
}

template <class T>
T unwrap(ffi::ErrorOr<T> v, const char* what) {
  if (!v.has_value()) value_error(std::string(what) + ": missing or mistyped (eggroll.jax builds it)");
  return v.value();
}

// One handler call: operand / result views and the attributes.
struct Call {
  ffi::RemainingArgs args;
  ffi::RemainingRets rets;
  ffi::Dictionary attrs;
  int device = -1;  // CUDA ordinal, or -1 on the CPU

  ffi::AnyBuffer buffer(size_t i) const { return unwrap(args.get<ffi::AnyBuffer>(i), "operand"); }
  TensorView arg(size_t i) const {
    ffi::AnyBuffer b = buffer(i);
    return view(b.untyped_data(), b.element_type(), b.dimensions(), device);
  }
  TensorView ret(size_t i) const {
    ffi::Result<ffi::AnyBuffer> r = unwrap(rets.get<ffi::AnyBuffer>(i), "result");
    return view(r->untyped_data(), r->element_type(), r->dimensions(), device);
  }
  int64_t i64(const char* name) const { return unwrap(attrs.get<int64_t>(name), name); }
  bool flag(const char* name) const { return unwrap(attrs.get<bool>(name), name); }

  // The static part of the key; seed and epoch come from operands (set by the handler file).
  Key key() const {
    Key k;
    k.param_id = uint32_t(i64("param_id"));
    k.sigma = unwrap(attrs.get<double>("sigma"), "sigma");
    k.rank = i64("rank");
    k.noise_reuse = i64("noise_reuse");
    k.antithetic = flag("antithetic");
    k.fixed_point = i64("fixed_point");
    k.sigma_shift = i64("sigma_shift");
    return k;
  }
  int members_kind() const { return int(i64("members")); }
  Members member_range() const { return Members::range(i64("start"), i64("step"), i64("count")); }
};

// The ops (one handler each, the same binding and target name on every platform).
#define EGGROLL_FFI_OPS(X)                                                                    \
  X(perturbed_matmul) X(perturbed_matmul_full) X(perturb_vector) X(lowrank_factors)          \
  X(es_gradient) X(es_gradient_factors) X(centered_rank) X(zscore) X(antithetic_sign)        \
  X(perturbed_matmul_int8) X(int8_update) X(perturbed_embedding)
#define EGGROLL_FFI_ENUM(name) name,
enum class Op { EGGROLL_FFI_OPS(EGGROLL_FFI_ENUM) };
#undef EGGROLL_FFI_ENUM

// The key and members of a keyed call whose arrays are operands [0, na) (the words above).
struct Keyed {
  Key key;
  Members members;
};
inline Keyed read_keyed(const Call& c, size_t na) {
  Keyed k{c.key(), Members::none()};
  size_t i = na;
  if (c.members_kind() == 1) k.members = c.member_range();
  if (c.members_kind() == 2) {
    const TensorView m = c.arg(i++);
    if (m.dtype != DType::uint32 || m.ndim != 2 || m.shape[1] != 2)
      value_error("members: expected the words of int64 indices, uint32 [M, 2] (eggroll.jax builds them)");
    TensorView idx = make_view(m.data, DType::int64, {m.shape[0]});
    idx.device = m.device;
    idx.device_index = m.device_index;
    k.members = Members::indices(idx);
  }
  const TensorView w = c.arg(i);
  if (w.dtype != DType::uint32 || w.numel() != 4)
    value_error("key: expected uint32 [4], the seed's and the epoch's words (eggroll.jax builds it)");
  const uint32_t* words = w.ptr<const uint32_t>();
  if (c.device >= 0) {  // device memory: the kernels read (and check) them
    k.key.seed_device = words;
    k.key.epoch_device = reinterpret_cast<const int64_t*>(words + 2);
  } else {
    k.key.seed = uint64_t(words[0]) | (uint64_t(words[1]) << 32);
    k.key.epoch = int64_t(uint64_t(words[2]) | (uint64_t(words[3]) << 32));
  }
  return k;
}

// A forward's x (out: without members, it has no member axis either) as the core sees it:
// a shared input (attribute `shared`) gets a member axis of stride 0.
inline TensorView forward_view(const Call& c, const TensorView& t, const Members& m, bool out) {
  if (!c.flag("shared") || (out && m.given)) return t;
  return with_member_axis(t, m.given ? m.count : 1, out ? "out" : "x");
}

// The plan of op `op` for call c. The CUDA forwards' operand 1 is the base product x W^T
// (XLA's dot, xla_ffi_cuda.cpp), not W: W is a stand-in of its shape there.
template <Op op>
auto plan(const Call& c) {
  const size_t arrays = op == Op::perturb_vector || op == Op::es_gradient ||
                        op == Op::es_gradient_factors ? 1 : op == Op::lowrank_factors ? 0 : 2;
  Keyed k;
  if constexpr (op != Op::centered_rank && op != Op::zscore && op != Op::antithetic_sign)
    k = read_keyed(c, arrays);
  if constexpr (op == Op::perturbed_matmul || op == Op::perturbed_matmul_full ||
                op == Op::perturbed_matmul_int8) {
    const TensorView x = forward_view(c, c.arg(0), k.members, false);
    const TensorView y = forward_view(c, c.ret(0), k.members, true);
    TensorView W = c.arg(1);
    if (c.device >= 0 && op != Op::perturbed_matmul_int8) {
      W = make_view(nullptr, x.dtype, {y.shape[y.ndim - 1], x.shape[x.ndim - 1]});
      W.device = Device::cuda;
      W.device_index = c.device;
    }
    if constexpr (op == Op::perturbed_matmul_int8) {
      return check_perturbed_matmul_int8(x, W, k.members, k.key, y);
    } else {
      ForwardPlan p = check_perturbed_matmul(x, W, k.members, k.key, y, op == Op::perturbed_matmul_full);
      p.base = c.flag("base");
      return p;
    }
  } else if constexpr (op == Op::perturbed_embedding) {
    const TensorView rows = embedding_rows(forward_view(c, c.arg(0), k.members, false));
    return check_perturbed_embedding(rows, c.arg(1), k.members, k.key,
                                     embedding_out(forward_view(c, c.ret(0), k.members, true), rows));
  } else if constexpr (op == Op::perturb_vector) {
    return check_perturb_vector(c.arg(0), k.members, k.key, c.ret(0));
  } else if constexpr (op == Op::lowrank_factors) {
    const TensorView A = c.ret(0), B = c.ret(1);
    return check_lowrank_factors(k.members, A.ndim == 3 ? A.shape[1] : 0, B.ndim == 3 ? B.shape[1] : 0,
                                 k.key, A, B);
  } else if constexpr (op == Op::es_gradient) {
    return check_es_gradient(c.arg(0), k.members, k.key, c.flag("full_rank"), c.i64("population"),
                             false, c.ret(0));
  } else if constexpr (op == Op::es_gradient_factors) {
    // Af [C, m], Bf [C, n]: C from the chunk plan (the bound for traced index members, whose
    // rows past the runs are written as zeros).
    const TensorView Af = c.ret(0), Bf = c.ret(1);
    return check_es_gradient_factors(c.arg(0), k.members, Af.ndim == 2 ? Af.shape[1] : 0,
                                     Bf.ndim == 2 ? Bf.shape[1] : 0, k.key, c.i64("population"), Af, Bf);
  } else if constexpr (op == Op::int8_update) {
    return check_int8_update(c.arg(0), c.arg(1), c.i64("threshold"), k.key, c.ret(0));
  } else {
    const Shaping kind = op == Op::centered_rank ? Shaping::centered_rank
                         : op == Op::zscore      ? Shaping::zscore
                                                 : Shaping::antithetic_sign;
    return check_fitness_shaping(kind, c.arg(0), op == Op::zscore ? c.i64("group_size") : 0, c.ret(0));
  }
}

// Runs body and turns any exception into an FFI error: ValueError / TypeError become
// INVALID_ARGUMENT with the core's message, anything else INTERNAL.
template <class F>
ffi::Error guarded(F&& body) {
  try {
    body();
    return ffi::Error::Success();
  } catch (const ValueError& e) {
    return ffi::Error::InvalidArgument(e.what());
  } catch (const TypeError& e) {
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
