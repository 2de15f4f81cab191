// Private helpers shared by the CUDA kernels: the one-lane device instantiation of the CPU
// noise kernel (cpp/noise_kernel.h), dtype load/store, argument checks and error handling.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cstdint>
#include <stdexcept>
#include <string>
#include "eggroll/check.h"
#include "eggroll/cuda.h"
#include "eggroll/key.h"
#include "host_util.h"
#include "noise_kernel.h"

namespace eggroll::cuda::detail {

// ---- noise: the CPU template with one lane, every float step an explicitly rounded IEEE
// operation (__fadd_rn & co. are never contracted into FMA, whatever --fmad says), so the
// bits equal the CPU's and reference.py's.
struct DeviceOps {
  static constexpr int L = 1;
  using U = uint32_t; using F = float;
  __device__ static U set1(uint32_t a) { return a; }
  __device__ static U iota() { return 0u; }
  __device__ static U add(U a, U b) { return a + b; }
  __device__ static U sub(U a, U b) { return a - b; }
  __device__ static U bxor(U a, U b) { return a ^ b; }
  __device__ static U band(U a, U b) { return a & b; }
  __device__ static U bor(U a, U b) { return a | b; }
  __device__ static U shr(U a, int n) { return a >> n; }
  __device__ static U shl(U a, int n) { return a << n; }
  __device__ static U gt_i32(U a, U b) { return int32_t(a) > int32_t(b) ? ~0u : 0u; }
  __device__ static U neg_mask(U a) { return 0u - a; }
  __device__ static U select(U m, U a, U b) { return (a & m) | (b & ~m); }
  __device__ static void philox10(U& c0, U& c1, U& c2, U& c3, uint32_t k0, uint32_t k1) {
    eggroll::detail::philox_rounds<DeviceOps>(c0, c1, c2, c3, k0, k1);
  }
  __device__ static void mulhilo(U a, uint32_t m, U& hi, U& lo) { hi = __umulhi(a, m); lo = a * m; }
  __device__ static F cvt_i32(U a) { return __int2float_rn(int32_t(a)); }
  __device__ static F u2f(U a) { return __uint_as_float(a); }
  __device__ static U f2u(F f) { return __float_as_uint(f); }
  __device__ static F fset1(float a) { return a; }
  __device__ static F fadd(F a, F b) { return __fadd_rn(a, b); }
  __device__ static F fsub(F a, F b) { return __fsub_rn(a, b); }
  __device__ static F fmul(F a, F b) { return __fmul_rn(a, b); }
  __device__ static F fdiv(F a, F b) { return __fdiv_rn(a, b); }
  __device__ static F fsqrt(F a) { return __fsqrt_rn(a); }
  __device__ static void store4_interleaved(float* o, F a, F b, F c, F d) {
    o[0] = a; o[1] = b; o[2] = c; o[3] = d;
  }
};

// The key of one call's streams, as plain words (kernel arguments stay trivially copyable).
struct StreamKey { uint64_t seed; uint32_t param_id, epoch_index; };
inline StreamKey make_key(const eggroll::Key& a) { return {a.seed, a.param_id, a.epoch_index()}; }

// Normals 4 block .. 4 block + 3 of stream z(key, k).
__device__ inline void normal4(const StreamKey& key, uint32_t k, uint32_t block, float z[4]) {
  NoiseKey nk;
  nk.seed = key.seed; nk.param_id = key.param_id; nk.epoch_index = key.epoch_index;
  nk.noise_index = k;
  eggroll::detail::normal_blocks<DeviceOps>(z, nk, block);
}

// Member i's noise index and sign (ops.md "Which noise a member sees").
__device__ inline uint32_t noise_index(int64_t member, bool antithetic) {
  return antithetic ? uint32_t(member >> 1) : uint32_t(member);
}
__device__ inline bool negative(int64_t member, bool antithetic) { return antithetic && (member & 1); }

// min on device for any integer type (int64_t is `long` here, which the CUDA overloads miss).
template <class T> __host__ __device__ inline T min_of(T a, T b) { return b < a ? b : a; }

// ---- dtypes: float32 / float16 / bfloat16 storage, float32 arithmetic.
__device__ inline float load(const float* p) { return *p; }
__device__ inline float load(const __half* p) { return __half2float(*p); }
__device__ inline float load(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ inline void store(float* p, float v) { *p = v; }
__device__ inline void store(__half* p, float v) { *p = __float2half_rn(v); }
__device__ inline void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

// ---- host side
// check_cuda and DeviceGuard: host_util.h.
// After a launch: configuration errors surface here (asynchronous faults surface later, on
// the caller's next synchronising call, as with any CUDA library).
inline void check_launch(const char* what) { check_cuda(cudaGetLastError(), what); }

// name: on a CUDA device (the one of `ref` when given), contiguous.
inline void check_device(const TensorView& t, const char* name, const TensorView* ref = nullptr,
                         const char* ref_name = nullptr) {
  if (t.device != Device::cuda)
    type_error(std::string(name) + ": expected a CUDA array, got a CPU one");
  if (ref && t.device_index != ref->device_index)
    value_error(std::string(name) + ": on device cuda:" + std::to_string(t.device_index) + " but " +
                ref_name + " is on cuda:" + std::to_string(ref->device_index));
  if (!t.is_contiguous()) value_error(std::string(name) + ": must be contiguous");
}
inline bool is_float_storage(DType d) {
  return d == DType::float32 || d == DType::float16 || d == DType::bfloat16;
}
// A plan's arrays must be on a CUDA device (plans come from the core's check_<op>).
inline void expect_cuda(const TensorView& t, const char* name) {
  if (t.device != Device::cuda)
    type_error(std::string(name) + ": expected a CUDA array, got a CPU one");
}
inline unsigned grid_for(int64_t work, int threads, int64_t cap = 65535LL * 32) {
  int64_t g = (work + threads - 1) / threads;
  if (g < 1) g = 1;
  return unsigned(g < cap ? g : cap);
}

// Calls f.template operator()<T>() with T the storage type of dtype d (float/half/bfloat16).
template <class Fn>
void dispatch_float(DType d, const char* name, Fn&& f) {
  switch (d) {
    case DType::float32: f(float{}); break;
    case DType::float16: f(__half{}); break;
    case DType::bfloat16: f(__nv_bfloat16{}); break;
    default:
      type_error(std::string(name) + ": expected float32, float16 or bfloat16, got " + dtype_name(d));
  }
}

}  // namespace eggroll::cuda::detail
