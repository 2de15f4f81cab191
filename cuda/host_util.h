// Host-side CUDA helpers shared by the kernels' launchers (common.cuh) and the XLA FFI CUDA
// handlers (cpp/bindings/xla_ffi_cuda.cpp): plain C++ against the runtime API, no device code.
#pragma once
#include <cuda_runtime_api.h>
#include <stdexcept>
#include <string>

namespace eggroll::cuda::detail {

// Throws std::runtime_error (RuntimeError in Python) carrying CUDA's message.
inline void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(err));
}

// Makes `device` current for the scope (launches and copies go to that GPU), then restores.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    check_cuda(cudaGetDevice(&prev_), "cudaGetDevice");
    if (prev_ != device) check_cuda(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceGuard() { cudaSetDevice(prev_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;
 private:
  int prev_ = 0;
};

}  // namespace eggroll::cuda::detail
