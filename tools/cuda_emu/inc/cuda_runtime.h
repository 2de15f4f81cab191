// Host emulation of the CUDA runtime subset eggroll's kernels use (tools/cuda_emu/run.sh):
// blocks run one after another, each as real std::threads (one per CUDA thread) with a
// barrier for __syncthreads and per-warp barriers for shuffles and ballots, so the kernels'
// indexing, synchronisation and arithmetic run unchanged on a machine without a GPU. The
// barriers sleep (mutex + condition variable) instead of spinning: hundreds of waiting threads
// on a few cores would otherwise keep the whole machine busy.
// "Device" memory is host memory; streams are ignored (everything is synchronous).
#pragma once
#include <algorithm>
#include <condition_variable>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(x)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
struct CUstream_st;
typedef CUstream_st* cudaStream_t;
typedef int cudaError_t;
constexpr cudaError_t cudaSuccess = 0;
struct dim3 { unsigned x = 1, y = 1, z = 1; dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {} };
namespace emu {
class Barrier {
 public:
  explicit Barrier(unsigned n) : n_(n), left_(n) {}
  void arrive_and_wait() {
    std::unique_lock<std::mutex> lock(m_);
    const unsigned gen = gen_;
    if (--left_ == 0) { ++gen_; left_ = n_; cv_.notify_all(); return; }
    cv_.wait(lock, [&] { return gen != gen_; });
  }
 private:
  std::mutex m_;
  std::condition_variable cv_;
  unsigned n_, left_, gen_ = 0;
};
inline thread_local dim3 tIdx, bIdx, bDim, gDim;
inline Barrier* block_bar = nullptr;
struct Warp { Barrier bar{32}; uint64_t buf[32]; };
inline std::vector<std::unique_ptr<Warp>>* warps = nullptr;
inline std::mutex launch_mutex;  // callers on several threads (XLA's CPU runtime): one launch at a time
// One team of threads per launch runs the blocks one after another (a barrier between
// blocks, so that the next block's threads find __shared__ memory as the last one left it,
// as a real SM's next resident block may): thread creation per launch, not per block.
template <class K, class... A>
void run(dim3 grid, dim3 block, K kernel, A... args) {
  std::lock_guard<std::mutex> lock(launch_mutex);
  const unsigned nt = block.x * block.y * block.z;
  Barrier bar(nt);
  std::vector<std::unique_ptr<Warp>> ws;
  for (unsigned w = 0; w < (nt + 31) / 32; ++w) ws.emplace_back(new Warp);
  block_bar = &bar; warps = &ws;
  std::vector<std::thread> th;
  for (unsigned t = 0; t < nt; ++t)
    th.emplace_back([=, &bar] {
      tIdx = dim3(t % block.x, t / block.x); bDim = block; gDim = grid;
      for (unsigned by = 0; by < grid.y; ++by)
        for (unsigned bx = 0; bx < grid.x; ++bx) {
          bIdx = dim3(bx, by);
          kernel(args...);
          bar.arrive_and_wait();  // the block is done (its threads may have returned early)
        }
    });
  for (auto& x : th) x.join();
}
struct Launch {
  dim3 g, b;
  template <class K> auto operator()(K k) { return [g = g, b = b, k](auto... a) { run(g, b, k, a...); }; }
};
template <class T> T shfl_xor(T v, int o) {
  const unsigned t = tIdx.x + tIdx.y * bDim.x;
  Warp& w = *(*warps)[t / 32];
  uint64_t bits = 0; std::memcpy(&bits, &v, sizeof(T));
  w.buf[t % 32] = bits; w.bar.arrive_and_wait();
  uint64_t got = w.buf[(t % 32) ^ o]; w.bar.arrive_and_wait();
  T r; std::memcpy(&r, &got, sizeof(T)); return r;
}
inline unsigned ballot(bool p) {
  const unsigned t = tIdx.x + tIdx.y * bDim.x;
  Warp& w = *(*warps)[t / 32];
  w.buf[t % 32] = p; w.bar.arrive_and_wait();
  unsigned r = 0; for (int l = 0; l < 32; ++l) r |= unsigned(w.buf[l] != 0) << l;
  w.bar.arrive_and_wait(); return r;
}
}  // namespace emu
#define threadIdx emu::tIdx
#define blockIdx emu::bIdx
#define blockDim emu::bDim
#define gridDim emu::gDim
#define EMU_LAUNCH(k, g, b, ...) emu::Launch{dim3(g), dim3(b)}(k)
inline void __syncthreads() { emu::block_bar->arrive_and_wait(); }
template <class T> T __shfl_xor_sync(unsigned, T v, int o) { return emu::shfl_xor(v, o); }
inline unsigned __ballot_sync(unsigned, bool p) { return emu::ballot(p); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline uint32_t __umulhi(uint32_t a, uint32_t b) { return uint32_t((uint64_t(a) * b) >> 32); }
inline int __dp4a(int a, int b, int c) {
  for (int i = 0; i < 4; ++i) c += int(int8_t(a >> (8 * i))) * int(int8_t(b >> (8 * i)));
  return c;
}
inline float __fadd_rn(float a, float b) { volatile float r = a + b; return r; }
inline float __fsub_rn(float a, float b) { volatile float r = a - b; return r; }
inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }
inline float __fdiv_rn(float a, float b) { volatile float r = a / b; return r; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline float __int2float_rn(int a) { return float(a); }
inline float __uint_as_float(uint32_t a) { float f; std::memcpy(&f, &a, 4); return f; }
inline uint32_t __float_as_uint(float f) { uint32_t a; std::memcpy(&a, &f, 4); return a; }
inline float __int_as_float(int a) { float f; std::memcpy(&f, &a, 4); return f; }
using std::fminf; using std::fmaxf; using std::sqrt; using std::isfinite;
inline cudaError_t cudaGetDevice(int* d) { *d = 0; return 0; }
inline cudaError_t cudaSetDevice(int) { return 0; }
inline cudaError_t cudaGetLastError() { return 0; }
inline const char* cudaGetErrorString(cudaError_t) { return "emu"; }
inline cudaError_t cudaGetDeviceCount(int* n) { *n = 1; return 0; }
inline cudaError_t cudaRuntimeGetVersion(int* v) { *v = 0; return 0; }
inline cudaError_t cudaDriverGetVersion(int* v) { *v = 0; return 0; }
inline cudaError_t cudaMallocAsync(void** p, size_t n, cudaStream_t) { *p = std::malloc(n ? n : 1); return 0; }
template <class T> cudaError_t cudaMallocAsync(T** p, size_t n, cudaStream_t s) { return cudaMallocAsync(reinterpret_cast<void**>(p), n, s); }
inline cudaError_t cudaFreeAsync(void* p, cudaStream_t) { std::free(p); return 0; }
inline cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t) { std::memset(p, v, n); return 0; }
enum cudaMemcpyKind { cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost,
                      cudaMemcpyDeviceToDevice, cudaMemcpyDefault };
inline cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind, cudaStream_t) {
  std::memmove(d, s, n); return 0;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return 0; }
// Streams, events and graph capture: everything runs in launch order on the calling thread,
// which is one valid schedule of any stream graph; nothing is ever captured.
enum cudaStreamCaptureStatus { cudaStreamCaptureStatusNone, cudaStreamCaptureStatusActive,
                               cudaStreamCaptureStatusInvalidated };
enum cudaStreamCaptureMode { cudaStreamCaptureModeGlobal, cudaStreamCaptureModeThreadLocal,
                             cudaStreamCaptureModeRelaxed };
inline cudaError_t cudaStreamIsCapturing(cudaStream_t, cudaStreamCaptureStatus* s) {
  *s = cudaStreamCaptureStatusNone; return 0;
}
inline cudaError_t cudaThreadExchangeStreamCaptureMode(cudaStreamCaptureMode*) { return 0; }
struct CUevent_st;
typedef CUevent_st* cudaEvent_t;
constexpr unsigned cudaEventDisableTiming = 2, cudaStreamNonBlocking = 1;
inline cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) {
  *e = reinterpret_cast<cudaEvent_t>(uintptr_t(1)); return 0;
}
inline cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return 0; }
inline cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned) { return 0; }
inline cudaError_t cudaDeviceGetStreamPriorityRange(int* lo, int* hi) { *lo = 0; *hi = -5; return 0; }
inline cudaError_t cudaStreamCreateWithPriority(cudaStream_t* s, unsigned, int) {
  *s = reinterpret_cast<cudaStream_t>(uintptr_t(2)); return 0;
}
// Host-mapped memory is host memory.
constexpr unsigned cudaHostAllocPortable = 1, cudaHostAllocMapped = 2;
inline cudaError_t cudaHostAlloc(void** p, size_t n, unsigned) { *p = std::calloc(1, n ? n : 1); return 0; }
inline cudaError_t cudaHostGetDevicePointer(void** d, void* h, unsigned) { *d = h; return 0; }
struct cudaPointerAttributes { int device = 0; };
inline cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* a, const void*) { a->device = 0; return 0; }
