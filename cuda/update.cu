// CUDA ES gradient: the low-rank estimate as the CPU's chunk plan (es_gradient_chunks) of
// fitness-scaled factor rows (the CPU's bits) and one injected GEMM per chunk, g (+)= Af^T Bf;
// the streamed full-rank / vector estimate (the CPU's bits). Runs of consecutive members
// sharing a noise index (antithetic pairs) are folded first, as on the CPU, into stream-ordered
// scratch: nothing is read on the host, so the update is capturable in a CUDA graph.
#include <algorithm>
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
// with c_q = float(coef_q / (population sqrt r)). Rows of blocks q >= Q (more rows than runs:
// the bound of a device index array) are zeros. Thread owns Philox blocks (grid-stride over y).
__global__ void factors_kernel(float* __restrict__ Af, float* __restrict__ Bf,
                               Members members, Runs runs, int64_t m,
                               int64_t n, int64_t r, KeyArg key_arg, bool antithetic, double norm) {
  const int64_t q = blockIdx.x;
  const int64_t nr = n * r, total = (n + m) * r;
  const bool run = q < runs.runs[0];
  const StreamKey key = key_arg.get();
  const uint32_t k = run ? noise_index(members[runs.runs[1 + q]], antithetic) : 0u;
  const float c = run ? float(runs.coef[q] * norm) : 0.0f;
  for (int64_t blk = blockIdx.y * int64_t(blockDim.x) + threadIdx.x; 4 * blk < total;
       blk += int64_t(gridDim.y) * blockDim.x) {
    float z[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    if (run) normal4(key, k, uint32_t(blk), z);
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
                                     Members members, Runs runs, KeyArg key_arg,
                                     bool antithetic, double population, bool accumulate) {
  const StreamKey key = key_arg.get();
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

// The runs of members [0, M) (fitness f [M]) in stream-ordered scratch, filled on `stream`.
class RunScratch {
 public:
  RunScratch(const float* f, const Members& members, int64_t M, bool antithetic,
             cudaStream_t stream)
      : mem_(size_t(M + 2) * sizeof(int64_t) + size_t(M) * sizeof(double), stream) {
    runs_.runs = mem_.as<int64_t>();
    runs_.coef = reinterpret_cast<double*>(runs_.runs + M + 2);
    run_starts_kernel<<<1, kScanThreads, 0, stream>>>(members, M, antithetic, runs_.runs);
    run_coef_kernel<<<grid_for(M, 256), 256, 0, stream>>>(f, members, antithetic, runs_);
    check_launch("es_gradient (runs)");
  }
  const Runs& runs() const { return runs_; }
 private:
  Scratch mem_;
  Runs runs_{};
};

// Members [c0, c1) of a call.
Members part(const Members& m, int64_t c0, int64_t c1) {
  Members p = m;
  if (m.index) p.index = m.index + c0;
  else p.start = m.start + c0 * m.step;
  p.count = c1 - c0;
  return p;
}

// Af [C, m] / Bf [C, n] of members (fitness f) on `stream`.
void launch_factors(const float* f, const Members& members, int64_t M, const Key& key,
                    int64_t population, int64_t m, int64_t n, int64_t C, float* Af, float* Bf,
                    cudaStream_t stream) {
  const int64_t r = key.rank;
  const RunScratch scratch(f, members, M, key.antithetic, stream);
  const dim3 grid(unsigned(C / r), grid_for(((n + m) * r + 3) / 4, 256, 65535));
  factors_kernel<<<grid, 256, 0, stream>>>(Af, Bf, members, scratch.runs(), m, n, r,
                                           make_key(key), key.antithetic,
                                           1.0 / (double(population) * std::sqrt(double(r))));
  check_launch("es_gradient_factors");
}

DeviceValues values_of(const GradientPlan& g, const Members& mem) {
  DeviceValues v;
  v.members = mem;
  v.antithetic = g.key.antithetic;
  v.epoch = g.key.epoch_device;
  v.fitness = g.fitness.data;
  v.N = g.M;
  return v;
}

TensorView matrix(float* data, int64_t rows, int64_t cols, const TensorView& like) {
  TensorView t = make_view(data, DType::float32, {rows, cols});
  t.device = Device::cuda;
  t.device_index = like.device_index;
  return t;
}

}  // namespace

void es_gradient_factors(const FactorRowsPlan& p, cudaStream_t stream) {
  const GradientPlan& g = p.g;
  expect_cuda(g.fitness, "fitness");
  OpFrame frame(g.fitness.device_index, stream);
  if (g.M == 0 || p.C == 0) return frame.done("es_gradient_factors");
  const DeviceMembers mem(g.members, stream);
  check_values(values_of(g, mem.get()), stream);
  launch_factors(g.fitness.ptr<const float>(), mem.get(), g.M, g.key, g.population, g.m, g.n,
                 p.C, p.Af.ptr<float>(), p.Bf.ptr<float>(), stream);
  frame.done("es_gradient_factors");
}

void es_gradient(const GradientPlan& p, const Gemm& gemm, cudaStream_t stream) {
  expect_cuda(p.fitness, "fitness");
  OpFrame frame(p.fitness.device_index, stream);
  const int64_t total = p.m * p.n;
  if (p.M == 0) {
    if (!p.accumulate)
      check_cuda(cudaMemsetAsync(p.out.data, 0, size_t(total) * 4, stream), "cudaMemsetAsync");
    return frame.done("es_gradient");
  }
  const DeviceMembers mem(p.members, stream);
  check_values(values_of(p, mem.get()), stream);
  const float* f = p.fitness.ptr<const float>();
  if (p.full_rank) {
    const RunScratch scratch(f, mem.get(), p.M, p.key.antithetic, stream);
    fullrank_grad_kernel<<<grid_for((total + 3) / 4, 256), 256, 0, stream>>>(
        p.out.ptr<float>(), total, mem.get(), scratch.runs(), make_key(p.key), p.key.antithetic,
        double(p.population), p.accumulate);
    return frame.done("es_gradient");
  }
  // Low rank: the chunk plan (from the members as given: a host array's runs are counted on
  // the host), one scratch for the largest chunk's factor rows, reused in stream order (the
  // GEMM of a chunk is queued before the next chunk's factors overwrite them).
  const std::vector<GradientChunk> chunks = es_gradient_chunks(p.members, p.m, p.n, p.key);
  int64_t Cmax = 0;
  for (const GradientChunk& c : chunks) Cmax = std::max(Cmax, c.C);
  const Scratch rows(size_t(Cmax) * size_t(p.m + p.n) * sizeof(float), stream);
  float* Af = rows.as<float>();
  float* Bf = Af + Cmax * p.m;
  for (const GradientChunk& c : chunks) {
    launch_factors(f + c.c0, part(mem.get(), c.c0, c.c1), c.c1 - c.c0, p.key, p.population, p.m,
                   p.n, c.C, Af, Bf, stream);
    const TensorView A = matrix(Af, c.C, p.m, p.fitness), B = matrix(Bf, c.C, p.n, p.fitness);
    const bool add = p.accumulate || c.c0 > 0;
    if (gemm.tn) gemm.tn(A, B, p.out, add, stream);
    else gemm_tn(A, B, p.out, add, stream);
  }
  frame.done("es_gradient");
}

}  // namespace eggroll::cuda
