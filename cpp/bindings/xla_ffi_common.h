// What the CPU (xla_ffi.cpp) and CUDA (xla_ffi_cuda.cpp) XLA FFI handlers share: XLA buffers
// as TensorViews, the call's attributes as the core's Key and Members, exceptions turned into
// ffi::Errors (none may cross into XLA), and the PyCapsule that hands a handler to
// jax.ffi.register_ffi_target.
//
// Every handler binds (RemainingArgs, RemainingRets, Attrs). The attributes every keyed call
// carries (python/eggroll/jax/_ffi.py): param_id, sigma, rank, noise_reuse, antithetic,
// fixed_point, sigma_shift (the static key), members (0 none, 1 a range: start, step,
// count; 2 an index array operand), shared (the forwards' x has no member axis), plus the
// op's own (base for the float forwards, full_rank, population, group_size, threshold).
#pragma once
#include <pybind11/pybind11.h>
#include <exception>
#include <string>
#include <type_traits>
#include <vector>
#include "eggroll/eggroll.h"
#include "xla/ffi/api/ffi.h"

namespace eggroll::xla_ffi {

namespace ffi = xla::ffi;

inline DType to_dtype(ffi::DataType dt) {
  switch (dt) {
    case ffi::DataType::F32: return DType::float32;
    case ffi::DataType::F64: return DType::float64;
    case ffi::DataType::F16: return DType::float16;
    case ffi::DataType::BF16: return DType::bfloat16;
    case ffi::DataType::S8: return DType::int8;
    case ffi::DataType::S32: return DType::int32;
    case ffi::DataType::S64: return DType::int64;
    case ffi::DataType::U32: return DType::uint32;
    default: return DType::other;
  }
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

// A forward's x (out: without members, it has no member axis either) as the core sees it:
// a shared input (attribute `shared`) gets a member axis of stride 0.
inline TensorView forward_view(const Call& c, const TensorView& t, const Members& m, bool out) {
  if (!c.flag("shared") || (out && m.given)) return t;
  return with_member_axis(t, m.given ? m.count : 1, out ? "out" : "x");
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

// The ops every platform registers (one handler each, the same binding everywhere).
#define EGGROLL_FFI_OPS(X)                                                                    \
  X(perturbed_matmul) X(perturbed_matmul_full) X(perturb_vector) X(lowrank_factors)          \
  X(es_gradient) X(centered_rank) X(zscore) X(antithetic_sign) X(perturbed_matmul_int8)      \
  X(int8_update) X(perturbed_embedding)

}  // namespace eggroll::xla_ffi
