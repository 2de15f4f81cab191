// What every CUDA launcher shares at run time: values that live on the device checked without
// a host synchronisation (a kernel on the op's stream flags bad values in host-mapped memory,
// and each launcher raises its device's flagged errors when it starts), the sync mode
// (EGGROLL_CUDA_CHECKS=sync) that checks every op before it returns, and the caller's
// Workspace that scratch is carved from (cuda/eggroll/cuda.h).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include "common.cuh"

namespace eggroll::cuda {
using namespace detail;

namespace {

// One byte per (device, kind): a kernel stores 1 (plain stores of one value, so no atomics are
// needed on mapped memory); the host reads and clears. Bytes of devices >= kMaxDevices share
// the last row.
enum Flag : int { kMembers = 0, kEpoch, kFitness, kShaping, kPairFitness, kIds, kFlags };
constexpr int kMaxDevices = 64;

struct Flags {
  volatile uint8_t* host = nullptr;  // kMaxDevices * kFlags bytes, pinned and mapped
  uint8_t* device = nullptr;         // the same memory as the kernels address it
};

std::mutex g_flags_mutex;
std::atomic<uint8_t*> g_device_flags{nullptr};
volatile uint8_t* g_host_flags = nullptr;

// Allocated once, on first use. cudaHostAlloc is not a stream operation, but stream capture
// forbids such calls in its default mode: the thread's mode is relaxed around it (the capture
// is unaffected, the allocation outlives every graph).
Flags flags() {
  uint8_t* dev = g_device_flags.load(std::memory_order_acquire);
  if (dev) return {g_host_flags, dev};
  std::lock_guard<std::mutex> lock(g_flags_mutex);
  dev = g_device_flags.load(std::memory_order_relaxed);
  if (dev) return {g_host_flags, dev};
  cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
  check_cuda(cudaThreadExchangeStreamCaptureMode(&mode), "cudaThreadExchangeStreamCaptureMode");
  void* host = nullptr;
  const cudaError_t err = cudaHostAlloc(&host, kMaxDevices * kFlags,
                                        cudaHostAllocMapped | cudaHostAllocPortable);
  void* mapped = nullptr;
  const cudaError_t err2 = err == cudaSuccess ? cudaHostGetDevicePointer(&mapped, host, 0) : err;
  cudaThreadExchangeStreamCaptureMode(&mode);
  check_cuda(err, "cudaHostAlloc (device value flags)");
  check_cuda(err2, "cudaHostGetDevicePointer (device value flags)");
  std::memset(host, 0, kMaxDevices * kFlags);
  g_host_flags = static_cast<volatile uint8_t*>(host);
  g_device_flags.store(static_cast<uint8_t*>(mapped), std::memory_order_release);
  return {g_host_flags, static_cast<uint8_t*>(mapped)};
}

int row(int device) { return device < 0 ? 0 : (device < kMaxDevices ? device : kMaxDevices - 1); }

bool env_sync() {
  const char* v = std::getenv("EGGROLL_CUDA_CHECKS");
  return v && std::string(v) == "sync";
}
std::atomic<bool> g_sync{env_sync()};

// Thread per value, grid-stride over max(M, N, P); block 0 thread 0 checks the epoch.
__global__ void check_values_kernel(Members members, int64_t M, bool antithetic,
                                    const int64_t* epoch, const void* fitness, bool f64,
                                    int64_t N, int fitness_flag, const int8_t* pair, int64_t P,
                                    uint8_t* flags) {
  const int64_t limit = antithetic ? (int64_t(1) << 33) : (int64_t(1) << 32);
  const int64_t total = M > N ? (M > P ? M : P) : (N > P ? N : P);
  const int64_t first = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (first == 0 && epoch && (*epoch < 0 || *epoch > int64_t(0xffffffffLL))) flags[kEpoch] = 1;
  for (int64_t i = first; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    if (i < M) {
      const int64_t v = members[i];
      if (v < 0 || v >= limit) flags[kMembers] = 1;
    }
    if (i < N) {
      const double f = f64 ? static_cast<const double*>(fitness)[i]
                           : double(static_cast<const float*>(fitness)[i]);
      if (!isfinite(f)) flags[fitness_flag] = 1;
    }
    if (i < P) {
      const int8_t q = pair[i];
      if (q < -1 || q > 1) flags[kPairFitness] = 1;
    }
  }
}

const char* message(int flag) {
  switch (flag) {
    case kMembers: return "members: indices must be >= 0 with a noise index < 2^32";
    case kEpoch: return "epoch: must be in [0, 2^32)";
    case kFitness: return "fitness: contains NaN or inf";
    case kShaping: return "f: contains NaN or inf";
    case kIds: return "ids: every id must be in [0, V) (the rows of W)";
    default: return "pair_fitness: values must be exactly -1, 0 or 1 (e.g. eggroll.antithetic_sign(fitness))";
  }
}

}  // namespace

namespace detail {

Arena& arena() {
  thread_local Arena a;
  return a;
}

uint8_t* ids_flag() {
  int device = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  return flags().device + row(device) * kFlags + kIds;
}

void check_values(const DeviceValues& v, cudaStream_t stream) {
  const int64_t M = v.members.index && v.members.device == Device::cuda ? v.members.count : 0;
  const int64_t N = v.fitness ? v.N : 0, P = v.pair_fitness ? v.P : 0;
  if (M == 0 && N == 0 && P == 0 && !v.epoch) return;
  int device = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  uint8_t* f = flags().device + row(device) * kFlags;
  const int64_t total = std::max<int64_t>(1, std::max(M, std::max(N, P)));
  check_values_kernel<<<grid_for(total, 256, 1024), 256, 0, stream>>>(
      v.members, M, v.antithetic, v.epoch, v.fitness, v.fitness_f64, N,
      v.shaping ? kShaping : kFitness, v.pair_fitness, P, f);
  check_launch("check_values");
}

}  // namespace detail

void raise_device_errors(int device) {
  if (!g_device_flags.load(std::memory_order_acquire)) return;  // nothing launched a check yet
  volatile uint8_t* f = g_host_flags + row(device) * kFlags;
  std::string msg;
  for (int k = 0; k < kFlags; ++k) {
    if (!f[k]) continue;
    f[k] = 0;
    if (msg.empty()) msg = message(k);
    else msg += std::string("; and ") + message(k);
  }
  if (!msg.empty())
    value_error(msg + " (a device value given to an earlier eggroll call on cuda:" +
                std::to_string(device) + ", found by its kernels after the call had returned: "
                "that call's results are invalid)");
}

void sync_and_raise(int device, cudaStream_t stream) {
  check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  raise_device_errors(device);
}

Workspace::Workspace(void* data, size_t bytes) {
  Arena& a = arena();
  prev_active_ = a.active; prev_data_ = a.data; prev_bytes_ = a.bytes; prev_used_ = a.used;
  a.active = true;
  a.data = static_cast<char*>(data);
  a.bytes = data ? bytes : 0;
  a.used = 0;
}

Workspace::~Workspace() {
  Arena& a = arena();
  a.active = prev_active_;
  a.data = static_cast<char*>(prev_data_); a.bytes = prev_bytes_; a.used = prev_used_;
}

namespace {

// The scratch each launcher takes (keep in step with their Scratch objects): host index
// members uploaded, then the op's own.
size_t upload(const Members& m) {
  return m.index && m.device == Device::cpu ? scratch_size(size_t(m.count) * 8) : 0;
}
size_t runs(int64_t M) { return scratch_size(size_t(M + 2) * 8 + size_t(M) * 8); }

}  // namespace

size_t workspace_bytes(const ForwardPlan& p) {
  const bool low = !p.full_rank && p.members.given && p.M > 0 && p.b > 0 && p.m > 0 && p.n > 0;
  return upload(p.members) + (low ? scratch_size(size_t(p.M * p.b * p.key.rank) * 4) : 0);
}
size_t workspace_bytes(const FactorRowsPlan& p) { return upload(p.g.members) + runs(p.g.M); }
size_t workspace_bytes(const GradientPlan& p) {
  if (p.M == 0) return 0;
  if (p.full_rank) return upload(p.members) + runs(p.M);
  size_t rows = 0, run = 0;
  for (const GradientChunk& c : es_gradient_chunks(p.members, p.m, p.n, p.key)) {
    rows = std::max(rows, scratch_size(size_t(c.C) * size_t(p.m + p.n) * 4));
    run = std::max(run, runs(c.c1 - c.c0));
  }
  return upload(p.members) + rows + run;
}
size_t workspace_bytes(const Int8ForwardPlan& p) {
  return upload(p.members) +
         (p.members.given ? scratch_size(size_t(p.M * p.b * p.key.rank) * 4) : 0);
}
size_t workspace_bytes(const Int8UpdatePlan& p) {
  return scratch_size(size_t((p.m + p.n) * p.P * p.key.rank));
}
size_t workspace_bytes(const VectorPlan& p) { return upload(p.members); }
size_t workspace_bytes(const FactorPlan& p) { return upload(p.members); }

bool sync_checks() { return g_sync.load(std::memory_order_relaxed); }
bool set_sync_checks(bool on) { return g_sync.exchange(on); }

}  // namespace eggroll::cuda
