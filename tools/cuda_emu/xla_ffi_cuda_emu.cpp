// cpp/bindings/xla_ffi_cuda.cpp compiled for XLA's CPU backend (tools/cuda_emu/run_jax.sh):
// the CPU backend has no CUDA stream or device ordinal to give, so the handlers bind these two
// stand-ins instead (a null stream, which the emulated runtime ignores, and device 0); every
// other line of the handlers, and the kernels under host emulation, run unchanged.
#include <cuda_runtime_api.h>
#include <optional>
#include "xla/ffi/api/ffi.h"

namespace eggroll_emu {
struct NullStream {};
struct DeviceZero {};
}  // namespace eggroll_emu

namespace xla::ffi {
template <>
struct CtxDecoding<eggroll_emu::NullStream> {
  using Type = cudaStream_t;
  static std::optional<Type> Decode(const XLA_FFI_Api*, XLA_FFI_ExecutionContext*,
                                    DiagnosticEngine&) {
    return cudaStream_t(nullptr);
  }
};
template <>
struct CtxDecoding<eggroll_emu::DeviceZero> {
  using Type = int32_t;
  static std::optional<Type> Decode(const XLA_FFI_Api*, XLA_FFI_ExecutionContext*,
                                    DiagnosticEngine&) {
    return int32_t(0);
  }
};
}  // namespace xla::ffi

#define EGGROLL_CUDA_CTX \
  ffi::Ffi::Bind().Ctx<eggroll_emu::NullStream>().Ctx<eggroll_emu::DeviceZero>()
#include "bindings/xla_ffi_cuda.cpp"
