// CUDA perturbed forwards: the per-member low-rank correction, the full-rank baseline's
// correction, vector perturbation and the explicit factors. The base product x W^T is the
// caller's GEMM (cuBLAS through the framework); these kernels add onto it.
#include <algorithm>
#include <cmath>
#include "common.cuh"

namespace eggroll::cuda {
using namespace detail;

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kAcc = 8;  // (item, rank) dot products one pass accumulates per thread

__device__ inline float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// The run of consecutive members sharing block member i0's noise index: [i0, i1), or an empty
// run when i0 does not start one (its run is done by the block of the run's first member).
__device__ inline int64_t run_end(const Members& members, int64_t M, int64_t i0, bool antithetic) {
  const uint32_t k = noise_index(members[i0], antithetic);
  if (i0 > 0 && noise_index(members[i0 - 1], antithetic) == k) return i0;
  int64_t i1 = i0 + 1;
  while (i1 < M && noise_index(members[i1], antithetic) == k) ++i1;
  return i1;
}

// Low-rank correction: out[i, row, :] += c_i (x[i, row, :] . B_k[:, l]) A_k[:, l] summed over l.
// Decomposition: block (x = run start i0, y = chunk of `rpb` rows) owns the output rows of
// every member of its run in that chunk ("items"). Per pass of up to kAcc (item, l) pairs:
// phase 1 regenerates B_k (thread t owns Philox blocks t, t + 256, ...) and accumulates the
// dot products in registers, reduced over the block into shared memory; phase 2 regenerates
// A_k (thread t owns 4 consecutive outputs o) and adds into out. B_k and A_k never reach
// global memory. FAST: rank 1 with n % 4 == 0, where every Philox block maps onto 4
// consecutive x columns / outputs and all indices are compile-time after unrolling.
template <bool FAST, class TX, class TY>
__global__ void __launch_bounds__(kThreads)
lowrank_correction_kernel(const TX* __restrict__ x, TY* __restrict__ y, int64_t xs,
                          Members members, int64_t M, int64_t b, int64_t n,
                          int64_t m, int r, int rpb, StreamKey key, bool antithetic, float scale) {
  const int64_t i0 = blockIdx.x;
  const int64_t i1 = run_end(members, M, i0, antithetic);
  if (i1 == i0) return;
  const uint32_t k = noise_index(members[i0], antithetic);
  __shared__ float red[kWarps][kAcc];
  __shared__ float tdot[kAcc];
  __shared__ int64_t xrow[kAcc];  // row index (member * b + row) of each item of the pass
  __shared__ int64_t xoff[kAcc];  // its offset in x (member * xs + row * n; xs = 0: shared x)
  __shared__ float coef[kAcc];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int rc = FAST ? 1 : min_of(r, kAcc);  // ranks per pass
  const int ic = kAcc / rc;                 // items per pass
  const int64_t nr = n * r, nchunks = (b + rpb - 1) / rpb;
  for (int64_t chunk = blockIdx.y; chunk < nchunks; chunk += gridDim.y) {
    const int64_t row0 = chunk * rpb, rows = min_of(int64_t(rpb), b - row0);
    const int64_t items = (i1 - i0) * rows;
    for (int l0 = 0; l0 < r; l0 += rc) {
      const int lc = min_of(rc, r - l0);
      for (int64_t it0 = 0; it0 < items; it0 += ic) {
        const int icn = int(min_of(int64_t(ic), items - it0));
        __syncthreads();  // the previous pass is done with xrow / coef / tdot
        if (threadIdx.x < icn) {
          const int64_t item = it0 + threadIdx.x, mi = i0 + item / rows;
          xrow[threadIdx.x] = mi * b + row0 + item % rows;
          xoff[threadIdx.x] = mi * xs + (row0 + item % rows) * n;
          coef[threadIdx.x] = negative(members[mi], antithetic) ? -scale : scale;
        }
        __syncthreads();
        // ---- phase 1: dot products with B_k
        float acc[kAcc];
#pragma unroll
        for (int q = 0; q < kAcc; ++q) acc[q] = 0.0f;
        for (int64_t blk = threadIdx.x; 4 * blk < nr; blk += kThreads) {
          float z[4];
          normal4(key, k, uint32_t(blk), z);
          if (FAST) {
#pragma unroll
            for (int it = 0; it < kAcc; ++it) {
              if (it < icn) {
                const TX* xr = x + xoff[it] + 4 * blk;
#pragma unroll
                for (int q = 0; q < 4; ++q) acc[it] += load(xr + q) * z[q];
              }
            }
          } else {
            for (int q = 0; q < 4; ++q) {
              const int64_t j = 4 * blk + q;
              if (j >= nr) break;
              const int64_t jn = j / r;
              const int l = int(j - jn * r) - l0;
              if (l < 0 || l >= lc) continue;
              for (int it = 0; it < icn; ++it) acc[it * lc + l] += load(x + xoff[it] + jn) * z[q];
            }
          }
        }
        const int nacc = icn * lc;
#pragma unroll
        for (int q = 0; q < kAcc; ++q) {
          if (q < nacc) {
            const float s = warp_sum(acc[q]);
            if (lane == 0) red[warp][q] = s;
          }
        }
        __syncthreads();
        if (threadIdx.x < nacc) {
          float s = 0.0f;
          for (int w = 0; w < kWarps; ++w) s += red[w][threadIdx.x];
          tdot[threadIdx.x] = coef[threadIdx.x / lc] * s;  // t = c_i (x . B_l), as on the CPU
        }
        __syncthreads();
        // ---- phase 2: out += sum_l t_l A_k[:, l]; thread owns outputs 4g .. 4g + 3
        for (int64_t g = threadIdx.x; 4 * g < m; g += kThreads) {
          if (FAST) {
            float z[4];
            normal4(key, k, uint32_t((nr >> 2) + g), z);
#pragma unroll
            for (int it = 0; it < kAcc; ++it) {
              if (it < icn) {
                TY* yr = y + xrow[it] * m + 4 * g;
                const float t = tdot[it];
#pragma unroll
                for (int q = 0; q < 4; ++q)
                  if (4 * g + q < m) store(yr + q, load(yr + q) + t * z[q]);
              }
            }
          } else {
            float ya[4][kAcc];
            for (int q = 0; q < 4; ++q)
              for (int it = 0; it < kAcc; ++it) ya[q][it] = 0.0f;
            const int64_t o_end = min_of(4 * g + 4, m);
            const int64_t p0 = nr + 4 * g * r, p1 = nr + o_end * r;  // stream positions
            for (int64_t blk = p0 >> 2; 4 * blk < p1; ++blk) {
              float z[4];
              normal4(key, k, uint32_t(blk), z);
              for (int q = 0; q < 4; ++q) {
                const int64_t p = 4 * blk + q;
                if (p < p0 || p >= p1) continue;
                const int64_t o = (p - nr) / r;
                const int l = int(p - nr - o * r) - l0;
                if (l < 0 || l >= lc) continue;
                for (int it = 0; it < icn; ++it) ya[o - 4 * g][it] += tdot[it * lc + l] * z[q];
              }
            }
            for (int64_t o = 4 * g; o < o_end; ++o)
              for (int it = 0; it < icn; ++it) {
                TY* yo = y + xrow[it] * m + o;
                store(yo, load(yo) + ya[o - 4 * g][it]);
              }
          }
        }
      }
    }
  }
}

// Full-rank correction: out[i, row, o] += c_i x[i, row, :] . Z_k[o, :].
// Decomposition: block (x = run start, y = group of output rows, grid-stride); warp w owns
// output row o and regenerates Z_k[o, :] (lane l owns Philox blocks l, l + 32, ...) once per
// pass of up to kAcc items (member, row), then a warp reduction; no workspace at all.
template <class TX, class TY>
__global__ void __launch_bounds__(kThreads)
fullrank_correction_kernel(const TX* __restrict__ x, TY* __restrict__ y, int64_t xs,
                           Members members, int64_t M, int64_t b, int64_t n,
                           int64_t m, StreamKey key, bool antithetic, float sigma) {
  const int64_t i0 = blockIdx.x;
  const int64_t i1 = run_end(members, M, i0, antithetic);
  if (i1 == i0) return;
  const uint32_t k = noise_index(members[i0], antithetic);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t items = (i1 - i0) * b;
  for (int64_t o = int64_t(blockIdx.y) * kWarps + warp; o < m; o += int64_t(gridDim.y) * kWarps) {
    const int64_t p0 = o * n, p1 = p0 + n;
    for (int64_t it0 = 0; it0 < items; it0 += kAcc) {
      const int icn = int(min_of(int64_t(kAcc), items - it0));
      float acc[kAcc];
#pragma unroll
      for (int q = 0; q < kAcc; ++q) acc[q] = 0.0f;
      for (int64_t blk = (p0 >> 2) + lane; 4 * blk < p1; blk += 32) {
        float z[4];
        normal4(key, k, uint32_t(blk), z);
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const int64_t p = 4 * blk + q;
          if (p < p0 || p >= p1) continue;
#pragma unroll
          for (int it = 0; it < kAcc; ++it)
            if (it < icn)
              acc[it] += load(x + (i0 + (it0 + it) / b) * xs + ((it0 + it) % b) * n + (p - p0)) * z[q];
        }
      }
#pragma unroll
      for (int it = 0; it < kAcc; ++it) {
        if (it < icn) {
          const float s = warp_sum(acc[it]);
          if (lane == 0) {
            const int64_t row = i0 * b + it0 + it;  // members of a run are consecutive rows
            const float c = negative(members[i0 + (it0 + it) / b], antithetic) ? -sigma : sigma;
            TY* yo = y + row * m + o;
            store(yo, load(yo) + c * s);
          }
        }
      }
    }
  }
}

// out[i, j] = v[j] + c_i z_k[j]: thread per (Philox block, member); the CPU's exact roundings.
__global__ void perturb_vector_kernel(const float* __restrict__ v, float* __restrict__ out,
                                      Members members, int64_t m, StreamKey key,
                                      bool antithetic, float sigma) {
  const int64_t i = blockIdx.y;
  const uint32_t k = noise_index(members[i], antithetic);
  const float c = negative(members[i], antithetic) ? -sigma : sigma;
  for (int64_t blk = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; 4 * blk < m;
       blk += int64_t(gridDim.x) * blockDim.x) {
    float z[4];
    normal4(key, k, uint32_t(blk), z);
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int64_t j = 4 * blk + q;
      if (j < m) out[i * m + j] = __fadd_rn(v[j], __fmul_rn(c, z[q]));
    }
  }
}

// B[i] = z_k[0 : n r], A[i] = c_i z_k[n r : (n + m) r]: thread per (Philox block, member).
__global__ void lowrank_factors_kernel(float* __restrict__ A, float* __restrict__ B,
                                       Members members, int64_t m, int64_t n,
                                       int64_t r, StreamKey key, bool antithetic, float scale) {
  const int64_t i = blockIdx.y, nr = n * r, total = (n + m) * r;
  const uint32_t k = noise_index(members[i], antithetic);
  const float c = negative(members[i], antithetic) ? -scale : scale;
  for (int64_t blk = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; 4 * blk < total;
       blk += int64_t(gridDim.x) * blockDim.x) {
    float z[4];
    normal4(key, k, uint32_t(blk), z);
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int64_t j = 4 * blk + q;
      if (j < nr) B[i * nr + j] = z[q];
      else if (j < total) A[i * m * r + (j - nr)] = __fmul_rn(c, z[q]);
    }
  }
}

}  // namespace

void lowrank_correction(const ForwardPlan& p, cudaStream_t stream) {
  expect_cuda(p.x, "x");
  if (p.full_rank) value_error("full_rank: a full-rank plan takes fullrank_correction");
  if (!p.members.given || p.M == 0 || p.b == 0 || p.m == 0 || p.n == 0) return;
  if (p.M > 0x7fffffffLL) value_error("x: at most 2^31 - 1 members per call on CUDA");
  const int r = int(p.key.rank);
  const bool fast = r == 1 && p.n % 4 == 0;
  const int rc = std::min(r, kAcc), ic = kAcc / rc;
  // Rows per block: a run is usually an antithetic pair, so half the items per pass.
  const int rpb = std::max(1, p.key.antithetic ? ic / 2 : ic);
  const int64_t chunks = (p.b + rpb - 1) / rpb;
  const dim3 grid(unsigned(p.M), unsigned(std::min<int64_t>(chunks, 65535)));
  const float scale = float(p.key.sigma / std::sqrt(double(r)));
  DeviceGuard guard(p.x.device_index);
  dispatch_float(p.x.dtype, "x", [&](auto tx) {
    using TX = decltype(tx);
    dispatch_float(p.out.dtype, "out", [&](auto ty) {
      using TY = decltype(ty);
      auto kernel = fast ? lowrank_correction_kernel<true, TX, TY> : lowrank_correction_kernel<false, TX, TY>;
      kernel<<<grid, kThreads, 0, stream>>>(p.x.ptr<const TX>(), p.out.ptr<TY>(), p.x_stride,
                                            p.members, p.M, p.b, p.n, p.m, r, rpb,
                                            make_key(p.key), p.key.antithetic, scale);
    });
  });
  check_launch("lowrank_correction");
}

void fullrank_correction(const ForwardPlan& p, cudaStream_t stream) {
  expect_cuda(p.x, "x");
  if (!p.full_rank) value_error("full_rank: a low-rank plan takes lowrank_correction");
  if (!p.members.given || p.M == 0 || p.b == 0 || p.m == 0 || p.n == 0) return;
  if (p.M > 0x7fffffffLL) value_error("x: at most 2^31 - 1 members per call on CUDA");
  const dim3 grid(unsigned(p.M), unsigned(std::min<int64_t>((p.m + kWarps - 1) / kWarps, 65535)));
  DeviceGuard guard(p.x.device_index);
  dispatch_float(p.x.dtype, "x", [&](auto tx) {
    using TX = decltype(tx);
    dispatch_float(p.out.dtype, "out", [&](auto ty) {
      using TY = decltype(ty);
      fullrank_correction_kernel<TX, TY><<<grid, kThreads, 0, stream>>>(
          p.x.ptr<const TX>(), p.out.ptr<TY>(), p.x_stride, p.members, p.M, p.b, p.n, p.m,
          make_key(p.key), p.key.antithetic, float(p.key.sigma));
    });
  });
  check_launch("fullrank_correction");
}

void perturb_vector(const VectorPlan& p, cudaStream_t stream) {
  expect_cuda(p.v, "v");
  if (p.M == 0 || p.m == 0) return;
  if (p.M > 65535) value_error("members: at most 65535 members per perturb_vector call on CUDA");
  DeviceGuard guard(p.v.device_index);
  const dim3 grid(grid_for((p.m + 3) / 4, 256, 4096), unsigned(p.M));
  perturb_vector_kernel<<<grid, 256, 0, stream>>>(p.v.ptr<const float>(), p.out.ptr<float>(),
                                                  p.members, p.m, make_key(p.key),
                                                  p.key.antithetic, float(p.key.sigma));
  check_launch("perturb_vector");
}

void lowrank_factors(const FactorPlan& p, cudaStream_t stream) {
  expect_cuda(p.A, "A");
  if (p.M == 0) return;
  if (p.M > 65535) value_error("members: at most 65535 members per lowrank_factors call on CUDA");
  const int64_t r = p.key.rank;
  DeviceGuard guard(p.A.device_index);
  const dim3 grid(grid_for(((p.n + p.m) * r + 3) / 4, 256, 4096), unsigned(p.M));
  lowrank_factors_kernel<<<grid, 256, 0, stream>>>(p.A.ptr<float>(), p.B.ptr<float>(), p.members,
                                                   p.m, p.n, r, make_key(p.key), p.key.antithetic,
                                                   float(p.key.sigma / std::sqrt(double(r))));
  check_launch("lowrank_factors");
}

}  // namespace eggroll::cuda
