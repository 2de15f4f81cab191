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

// The key as kernels take it: host values, or the seed / epoch in device memory
// (Key::seed_device, Key::epoch_device), read by each thread when the kernel starts (as
// flash-attention unpacks its Philox state), so no launch reads a device value on the host.
struct KeyArg {
  uint64_t seed;
  uint32_t param_id, epoch_index;
  int64_t noise_reuse;
  const uint32_t* seed_words;  // uint32 [2] (low, high) or null
  const int64_t* epoch;        // int64 [1] or null
  __device__ StreamKey get() const {
    StreamKey k{seed, param_id, epoch_index};
    if (seed_words) k.seed = uint64_t(seed_words[0]) | (uint64_t(seed_words[1]) << 32);
    if (epoch) k.epoch_index = noise_reuse > 0 ? uint32_t(*epoch / noise_reuse) : 0u;
    return k;
  }
};
inline KeyArg make_key(const eggroll::Key& a) {
  return {a.seed, a.param_id, a.epoch_index(), a.noise_reuse, a.seed_device, a.epoch_device};
}

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

inline bool capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  check_cuda(cudaStreamIsCapturing(stream, &st), "cudaStreamIsCapturing");
  return st != cudaStreamCaptureStatusNone;
}

// Every launcher's frame: the plan's GPU current, the errors its device's kernels flagged
// raised first, and (sync_checks) the stream waited for and checked at the end (done()).
class OpFrame {
 public:
  OpFrame(int device, cudaStream_t stream) : guard_(device), device_(device), stream_(stream) {
    raise_device_errors(device);
  }
  void done(const char* what) {
    check_launch(what);
    if (sync_checks() && !capturing(stream_)) sync_and_raise(device_, stream_);
  }
 private:
  DeviceGuard guard_;
  int device_;
  cudaStream_t stream_;
};

// The calling thread's Workspace (cuda.h): a region scratch is carved from, last in first out.
struct Arena { bool active = false; char* data = nullptr; size_t bytes = 0, used = 0; };
Arena& arena();
// Scratch sizes are rounded up to this (every carved piece stays aligned for any type).
constexpr size_t kScratchAlign = 256;
inline size_t scratch_size(size_t bytes) { return (bytes + kScratchAlign - 1) / kScratchAlign * kScratchAlign; }

// Scratch for one launch, freed when the scope ends: carved from the thread's Workspace when
// one is in scope, else stream-ordered memory (cudaMallocAsync / cudaFreeAsync: no
// synchronisation, capturable in a CUDA graph).
class Scratch {
 public:
  Scratch(size_t bytes, cudaStream_t stream) : stream_(stream) {
    if (!bytes) return;
    Arena& a = arena();
    if (a.active) {
      const size_t need = scratch_size(bytes);
      if (a.used + need > a.bytes)
        throw std::runtime_error("eggroll: the CUDA workspace is smaller than workspace_bytes()");
      mem_ = a.data + a.used;
      mark_ = a.used;
      a.used += need;
      carved_ = true;
      return;
    }
    check_cuda(cudaMallocAsync(&mem_, bytes, stream), "cudaMallocAsync (scratch)");
  }
  ~Scratch() {
    if (carved_) arena().used = mark_;
    else if (mem_) cudaFreeAsync(mem_, stream_);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  template <class T> T* as() const { return static_cast<T*>(mem_); }
 private:
  cudaStream_t stream_;
  void* mem_ = nullptr;
  size_t mark_ = 0;
  bool carved_ = false;
};

// The members as kernels read them: a range or device indices as given; host indices (checked
// on the host by check_members) uploaded into stream-ordered scratch. An upload while the
// stream captures a graph would bake a copy from memory the graph does not own: ValueError.
class DeviceMembers {
 public:
  DeviceMembers(const Members& m, cudaStream_t stream)
      : members_(m), scratch_(m.index && m.device == Device::cpu ? size_t(m.count) * 8 : 0, stream) {
    if (!(m.index && m.device == Device::cpu) || m.count == 0) return;
    if (capturing(stream))
      value_error("members: while a CUDA graph is captured, pass a range or an index array on "
                  "the device (a host array would be uploaded from memory the graph does not own)");
    check_cuda(cudaMemcpyAsync(scratch_.as<int64_t>(), m.index, size_t(m.count) * 8,
                               cudaMemcpyHostToDevice, stream), "cudaMemcpyAsync (members)");
    members_.index = scratch_.as<int64_t>();
    members_.device = Device::cuda;
  }
  const Members& get() const { return members_; }
 private:
  Members members_;
  Scratch scratch_;
};

// The values of a call that live on the device, checked by check_values (cuda/checks.cu) on
// the stream; a kind is skipped when its pointer is null.
struct DeviceValues {
  Members members;               // checked when its indices are on the device
  bool antithetic = false;
  const int64_t* epoch = nullptr;
  const void* fitness = nullptr;  // float32 [N] (float64 when fitness_f64)
  bool fitness_f64 = false;
  int64_t N = 0;
  bool shaping = false;           // fitness is shaping's "f" (the flag's name)
  const int8_t* pair_fitness = nullptr;  // int8 [P], values in {-1, 0, 1}
  int64_t P = 0;
};
void check_values(const DeviceValues& v, cudaStream_t stream);
// The current device's flag for an embedding id outside [0, V) (set by the lookup kernel
// itself, which reads every id anyway; raised as "ids: ..." by the next launcher).
uint8_t* ids_flag();

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
