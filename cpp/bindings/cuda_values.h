// The device values the CUDA launchers leave to their caller (index members, fitness,
// pair_fitness; cuda/eggroll/cuda.h), checked on a host copy with the core's rules and
// messages: one device-to-host copy and one synchronisation of `stream`. Shared by the _cuda
// module and the CUDA XLA FFI handlers.
#pragma once
#include <cuda_runtime_api.h>
#include <cstdint>
#include <vector>
#include "eggroll/eggroll.h"
#include "host_util.h"

namespace eggroll::bridge {

// A host copy of device array t, after everything queued on `stream`.
template <class T>
std::vector<T> to_host(const TensorView& t, cudaStream_t stream) {
  const size_t bytes = size_t(t.numel() * dtype_size(t.dtype));
  std::vector<T> h((bytes + sizeof(T) - 1) / sizeof(T));
  if (h.empty()) return h;
  cuda::detail::DeviceGuard guard(t.device_index);
  cuda::detail::check_cuda(cudaMemcpyAsync(h.data(), t.data, bytes, cudaMemcpyDeviceToHost, stream),
                           "cudaMemcpyAsync");
  cuda::detail::check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  return h;
}

inline void check_member_values(const Members& m, bool antithetic, cudaStream_t stream) {
  if (!m.given || !m.index || m.device != Device::cuda || m.count == 0) return;
  TensorView d = make_view(const_cast<int64_t*>(m.index), DType::int64, {m.count});
  d.device = Device::cuda;
  d.device_index = m.device_index;
  std::vector<int64_t> h = to_host<int64_t>(d, stream);
  check_members(Members::indices(make_view(h.data(), DType::int64, {m.count})), m.count,
                antithetic, "the members");
}

// float32 / float64 values must be finite (other dtypes: the op's check says why).
inline void check_finite_values(const TensorView& f, const char* name, cudaStream_t stream) {
  if (f.numel() == 0 || (f.dtype != DType::float32 && f.dtype != DType::float64)) return;
  std::vector<double> h = to_host<double>(f, stream);
  check_finite(make_view(h.data(), f.dtype, {f.numel()}), name);
}

inline void check_pair_fitness_on_host(const TensorView& f, cudaStream_t stream) {
  if (f.dtype != DType::int8) return;  // the op's check names the dtype
  std::vector<int8_t> h = to_host<int8_t>(f, stream);
  check_pair_fitness_values(make_view(h.data(), DType::int8, {f.numel()}));
}

}  // namespace eggroll::bridge
