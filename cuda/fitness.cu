// CUDA fitness shaping (ops.md): centered_rank, zscore, antithetic_sign on device arrays.
// centered_rank and antithetic_sign give the CPU's bits (the same double expressions);
// zscore's sums are reduced in a different order (float tolerance). Finite inputs are checked
// on the device (check_values: raised by the next launcher, or at once in sync mode).
#include <string>
#include "common.cuh"

namespace eggroll::cuda {
using namespace detail;

namespace {

constexpr int kThreads = 256;

template <class T>
__device__ inline double val(const T* f, int64_t i) { return double(f[i]); }

// out[i] = (rank_i / (N - 1)) - 0.5 with rank_i = #{f_j < f_i} + (#{f_j == f_i} - 1) / 2:
// the mean of the tied sorted positions, exactly the CPU's 0.5 (s + e). Thread per i, f
// tiled through shared memory: O(N^2) compares, fine for population sizes (~1e5 in ms).
template <class T>
__global__ void __launch_bounds__(kThreads)
centered_rank_kernel(const T* __restrict__ f, float* __restrict__ out, int64_t N) {
  __shared__ double tile[kThreads];
  const int64_t i = blockIdx.x * int64_t(kThreads) + threadIdx.x;
  const double fi = i < N ? val(f, i) : 0.0;
  int64_t less = 0, equal = 0;
  for (int64_t t0 = 0; t0 < N; t0 += kThreads) {
    __syncthreads();
    if (t0 + threadIdx.x < N) tile[threadIdx.x] = val(f, t0 + threadIdx.x);
    __syncthreads();
    const int cnt = int(min_of(int64_t(kThreads), N - t0));
    for (int j = 0; j < cnt; ++j) {
      less += tile[j] < fi;
      equal += tile[j] == fi;
    }
  }
  if (i < N) {
    const double rank = 0.5 * double(less + less + equal - 1);
    out[i] = N > 1 ? float(rank / double(N - 1) - 0.5) : 0.0f;
  }
}

__device__ inline double block_sum(double v, double* red) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
  __syncthreads();
  double s = 0;
  for (int w = 0; w < kThreads / 32; ++w) s += red[w];
  return s;
}

__device__ inline double block_max(double v, double* red) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
  __syncthreads();
  double s = 0;
  for (int w = 0; w < kThreads / 32; ++w) s = fmax(s, red[w]);
  return s;
}

// One block: global mean and variance (double), then each group's mean: one thread per group
// when groups are small (summed in member order, as on the CPU), else a block reduction.
// Values beyond ~1e150 are scaled by a power of two first (exact; the CPU does the same), so
// that the squares cannot overflow.
template <class T>
__global__ void __launch_bounds__(kThreads)
zscore_kernel(const T* __restrict__ f, float* __restrict__ out, int64_t N, int64_t G) {
  __shared__ double red[kThreads / 32];
  double big = 0;
  for (int64_t i = threadIdx.x; i < N; i += kThreads) big = fmax(big, fabs(val(f, i)));
  big = block_max(big, red);
  int e = 0;
  if (big > 0x1p500) frexp(big, &e);
  double s = 0;
  for (int64_t i = threadIdx.x; i < N; i += kThreads) s += ldexp(val(f, i), -e);
  const double mean = block_sum(s, red) / double(N);
  double v = 0;
  for (int64_t i = threadIdx.x; i < N; i += kThreads) {
    const double d = ldexp(val(f, i), -e) - mean;
    v += d * d;
  }
  const double inv = 1.0 / sqrt(block_sum(v, red) / double(N) + ldexp(1e-5, -2 * e));
  if (G < 256) {
    for (int64_t g0 = int64_t(threadIdx.x) * G; g0 < N; g0 += int64_t(kThreads) * G) {
      double gm = 0;
      for (int64_t i = g0; i < g0 + G; ++i) gm += ldexp(val(f, i), -e);
      gm /= double(G);
      for (int64_t i = g0; i < g0 + G; ++i) out[i] = float((ldexp(val(f, i), -e) - gm) * inv);
    }
  } else {
    for (int64_t g0 = 0; g0 < N; g0 += G) {
      double gs = 0;
      for (int64_t i = g0 + threadIdx.x; i < g0 + G; i += kThreads) gs += ldexp(val(f, i), -e);
      const double gm = block_sum(gs, red) / double(G);
      for (int64_t i = g0 + threadIdx.x; i < g0 + G; i += kThreads)
        out[i] = float((ldexp(val(f, i), -e) - gm) * inv);
    }
  }
}

template <class T>
__global__ void antithetic_sign_kernel(const T* __restrict__ f, float* __restrict__ out, int64_t P) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < P; k += int64_t(gridDim.x) * blockDim.x) {
    const double d = val(f, 2 * k) - val(f, 2 * k + 1);
    out[k] = d > 0 ? 1.0f : (d < 0 ? -1.0f : 0.0f);
  }
}

template <class Fn>
void dispatch_fitness(DType d, Fn&& fn) {
  if (d == DType::float32) fn(float{}); else fn(double{});
}

}  // namespace

void shape_fitness(const ShapingPlan& p, cudaStream_t stream) {
  expect_cuda(p.f, "f");
  const int64_t N = p.N;
  OpFrame frame(p.f.device_index, stream);
  if (N == 0) return frame.done("shape_fitness");
  DeviceValues v;
  v.fitness = p.f.data;
  v.fitness_f64 = p.f.dtype == DType::float64;
  v.N = N;
  v.shaping = true;
  check_values(v, stream);
  dispatch_fitness(p.f.dtype, [&](auto t) {
    using T = decltype(t);
    const T* f = p.f.ptr<const T>();
    float* out = p.out.ptr<float>();
    switch (p.kind) {
      case Shaping::centered_rank:
        centered_rank_kernel<T><<<unsigned((N + kThreads - 1) / kThreads), kThreads, 0, stream>>>(f, out, N);
        break;
      case Shaping::zscore:
        zscore_kernel<T><<<1, kThreads, 0, stream>>>(f, out, N, p.group_size > 0 ? p.group_size : N);
        break;
      case Shaping::antithetic_sign:
        antithetic_sign_kernel<T><<<grid_for(N / 2, 256), 256, 0, stream>>>(f, out, N / 2);
        break;
    }
  });
  frame.done("shape_fitness");
}

}  // namespace eggroll::cuda
