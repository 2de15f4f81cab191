// CUDA ES gradient: the fitness-scaled factor rows of the low-rank estimate (the caller then
// does one GEMM, g = Af^T Bf) and the streamed full-rank / vector estimate, both with the
// CPU's bits. Runs of consecutive members sharing a noise index (antithetic pairs) are
// folded first, as on the CPU, into a small stream-ordered scratch (cudaMallocAsync: no
// user-visible allocation, no device synchronisation, capturable in a CUDA graph).
#include <cmath>
#include <string>
#include "common.cuh"

namespace eggroll::cuda {
using namespace detail;

namespace {

constexpr int kScanThreads = 1024;

// Scratch layout: runs[0] = number of runs Q, runs[1 .. Q+1] = run starts then M;
// coef[q] = sum over run q of f_i s_i (double, summed in member order as on the CPU).
struct Runs { int64_t* runs; double* coef; };

// One block: a run starts at i when i == 0 or k_i != k_{i-1}; starts are compacted by a
// block-wide ballot scan, chunk after chunk.
__global__ void __launch_bounds__(kScanThreads)
run_starts_kernel(Members members, int64_t M, bool antithetic, int64_t* runs) {
  __shared__ int warp_total[kScanThreads / 32];
  __shared__ int64_t base;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (threadIdx.x == 0) base = 0;
  __syncthreads();
  for (int64_t c0 = 0; c0 < M; c0 += kScanThreads) {
    const int64_t i = c0 + threadIdx.x;
    const bool flag = i < M && (i == 0 || noise_index(members[i], antithetic) !=
                                              noise_index(members[i - 1], antithetic));
    const unsigned ballot = __ballot_sync(0xffffffffu, flag);
    if (lane == 0) warp_total[warp] = __popc(ballot);
    __syncthreads();
    int before = 0, total = 0;
    for (int w = 0; w < kScanThreads / 32; ++w) {
      if (w < warp) before += warp_total[w];
      total += warp_total[w];
    }
    const int rank = before + __popc(ballot & ((1u << lane) - 1u));
    if (flag) runs[1 + base + rank] = i;
    __syncthreads();  // everyone has read base and warp_total
    if (threadIdx.x == 0) base += total;
    __syncthreads();
  }
  if (threadIdx.x == 0) { runs[0] = base; runs[1 + base] = M; }
}

__global__ void run_coef_kernel(const float* __restrict__ f, Members members,
                                bool antithetic, Runs r) {
  const int64_t Q = r.runs[0];
  for (int64_t q = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; q < Q;
       q += int64_t(gridDim.x) * blockDim.x) {
    double c = 0;
    for (int64_t i = r.runs[1 + q]; i < r.runs[2 + q]; ++i)
      c += negative(members[i], antithetic) ? -double(f[i]) : double(f[i]);
    r.coef[q] = c;
  }
}

// Factor rows of run q (block x): Bf[q r + l, j] = z[j r + l], Af[q r + l, o] = c_q z[n r + o r + l]
// with c_q = float(coef_q / (population sqrt r)). Thread owns Philox blocks (grid-stride over y).
__global__ void factors_kernel(float* __restrict__ Af, float* __restrict__ Bf,
                               Members members, Runs runs, int64_t m,
                               int64_t n, int64_t r, StreamKey key, bool antithetic, double norm) {
  const int64_t q = blockIdx.x;
  if (q >= runs.runs[0]) return;  // fewer runs than Af has rows: caller's C was wrong
  const uint32_t k = noise_index(members[runs.runs[1 + q]], antithetic);
  const float c = float(runs.coef[q] * norm);
  const int64_t nr = n * r, total = (n + m) * r;
  for (int64_t blk = blockIdx.y * int64_t(blockDim.x) + threadIdx.x; 4 * blk < total;
       blk += int64_t(gridDim.y) * blockDim.x) {
    float z[4];
    normal4(key, k, uint32_t(blk), z);
#pragma unroll
    for (int t = 0; t < 4; ++t) {
      const int64_t j = 4 * blk + t;
      if (j < nr) {
        const int64_t jn = j / r, l = j - jn * r;
        Bf[(q * r + l) * n + jn] = z[t];
      } else if (j < total) {
        const int64_t p = j - nr, o = p / r, l = p - o * r;
        Af[(q * r + l) * m + o] = __fmul_rn(c, z[t]);
      }
    }
  }
}

// g[e] (+)= sum over runs q in order of float(coef_q / population) z_kq[e]: thread per Philox
// block of g, each value rounded exactly as the CPU's axpy chain.
__global__ void fullrank_grad_kernel(float* __restrict__ g, int64_t total,
                                     Members members, Runs runs, StreamKey key,
                                     bool antithetic, double population, bool accumulate) {
  const int64_t Q = runs.runs[0];
  for (int64_t blk = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; 4 * blk < total;
       blk += int64_t(gridDim.x) * blockDim.x) {
    float acc[4];
#pragma unroll
    for (int t = 0; t < 4; ++t) {
      const int64_t e = 4 * blk + t;
      acc[t] = (accumulate && e < total) ? g[e] : 0.0f;
    }
    for (int64_t q = 0; q < Q; ++q) {
      const uint32_t k = noise_index(members[runs.runs[1 + q]], antithetic);
      const float c = float(runs.coef[q] / population);
      float z[4];
      normal4(key, k, uint32_t(blk), z);
#pragma unroll
      for (int t = 0; t < 4; ++t) acc[t] = __fadd_rn(acc[t], __fmul_rn(c, z[t]));
    }
#pragma unroll
    for (int t = 0; t < 4; ++t)
      if (4 * blk + t < total) g[4 * blk + t] = acc[t];
  }
}

// Stream-ordered scratch for the runs of M members, filled on `stream`; freed by ~RunScratch
// (also stream-ordered), so nothing waits on the host.
class RunScratch {
 public:
  RunScratch(const TensorView& fitness, const Members& members, int64_t M, bool antithetic,
             cudaStream_t stream) : stream_(stream) {
    const size_t bytes = size_t(M + 2) * sizeof(int64_t) + size_t(M) * sizeof(double);
    check_cuda(cudaMallocAsync(&mem_, bytes, stream), "cudaMallocAsync (es_gradient scratch)");
    runs_.runs = static_cast<int64_t*>(mem_);
    runs_.coef = reinterpret_cast<double*>(runs_.runs + M + 2);
    run_starts_kernel<<<1, kScanThreads, 0, stream>>>(members, M, antithetic, runs_.runs);
    run_coef_kernel<<<grid_for(M, 256), 256, 0, stream>>>(fitness.ptr<const float>(), members,
                                                          antithetic, runs_);
    check_launch("es_gradient (runs)");
  }
  ~RunScratch() { cudaFreeAsync(mem_, stream_); }
  RunScratch(const RunScratch&) = delete;
  RunScratch& operator=(const RunScratch&) = delete;
  const Runs& runs() const { return runs_; }
 private:
  cudaStream_t stream_;
  void* mem_ = nullptr;
  Runs runs_{};
};

}  // namespace

void es_gradient_factors(const FactorRowsPlan& p, cudaStream_t stream) {
  const GradientPlan& g = p.g;
  expect_cuda(g.fitness, "fitness");
  const int64_t r = g.key.rank, M = g.M, C = p.C, m = g.m, n = g.n;
  if (M == 0 || C == 0) return;
  DeviceGuard guard(g.fitness.device_index);
  RunScratch scratch(g.fitness, g.members, M, g.key.antithetic, stream);
  const int64_t Q = C / r;
  const dim3 grid(unsigned(Q), grid_for(((n + m) * r + 3) / 4, 256, 65535));
  factors_kernel<<<grid, 256, 0, stream>>>(p.Af.ptr<float>(), p.Bf.ptr<float>(), g.members,
                                           scratch.runs(), m, n, r, make_key(g.key),
                                           g.key.antithetic,
                                           1.0 / (double(g.population) * std::sqrt(double(r))));
  check_launch("es_gradient_factors");
}

void es_gradient(const GradientPlan& p, cudaStream_t stream) {
  expect_cuda(p.fitness, "fitness");
  if (!p.full_rank)
    value_error("full_rank: the CUDA es_gradient computes full-rank and vector estimates; for "
                "low rank use es_gradient_factors and one GEMM (g = Af^T Bf)");
  const int64_t total = p.m * p.n;
  DeviceGuard guard(p.fitness.device_index);
  if (p.M == 0) {
    if (!p.accumulate)
      check_cuda(cudaMemsetAsync(p.out.data, 0, size_t(total) * 4, stream), "cudaMemsetAsync");
    return;
  }
  RunScratch scratch(p.fitness, p.members, p.M, p.key.antithetic, stream);
  fullrank_grad_kernel<<<grid_for((total + 3) / 4, 256), 256, 0, stream>>>(
      p.out.ptr<float>(), total, p.members, scratch.runs(), make_key(p.key), p.key.antithetic,
      double(p.population), p.accumulate);
  check_launch("es_gradient");
}

}  // namespace eggroll::cuda
