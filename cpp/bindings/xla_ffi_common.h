// What the CPU (xla_ffi.cpp) and CUDA (xla_ffi_cuda.cpp) XLA FFI handlers share: XLA buffers
// as TensorViews, exceptions turned into ffi::Errors (none may cross into XLA), and the
// PyCapsule that hands a handler to jax.ffi.register_ffi_target.
#pragma once
#include <pybind11/pybind11.h>
#include <exception>
#include <type_traits>
#include <string>
#include "eggroll/eggroll.h"
#include "xla/ffi/api/ffi.h"

namespace eggroll::xla_ffi {

namespace ffi = xla::ffi;

inline DType to_dtype(ffi::DataType dt) {
  switch (dt) {
    case ffi::DataType::F32: return DType::float32;
    case ffi::DataType::F64: return DType::float64;
    case ffi::DataType::S8: return DType::int8;
    case ffi::DataType::S32: return DType::int32;
    case ffi::DataType::S64: return DType::int64;
    case ffi::DataType::U32: return DType::uint32;
    default: type_error("array: unsupported XLA element type " + std::to_string(int(dt)));
  }
}

// A contiguous (XLA's default row-major layout) view over an XLA buffer; `cuda_device` >= 0:
// on that CUDA device, else host memory.
inline TensorView view(void* data, ffi::DataType dt, ffi::Span<const int64_t> dims,
                       int cuda_device = -1) {
  if (dims.size() > size_t(TensorView::kMaxDims)) value_error("array: at most 4 dimensions");
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
  if (cuda_device >= 0) {
    t.device = Device::cuda;
    t.device_index = cuda_device;
  }
  return t;
}
inline TensorView view(ffi::AnyBuffer b, int cuda_device = -1) {
  return view(b.untyped_data(), b.element_type(), b.dimensions(), cuda_device);
}
inline TensorView view(ffi::Result<ffi::AnyBuffer> b, int cuda_device = -1) {
  return view(b->untyped_data(), b->element_type(), b->dimensions(), cuda_device);
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
