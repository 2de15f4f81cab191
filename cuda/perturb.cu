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
__device__ inline int64_t run_end(const int64_t* members, int64_t M, int64_t i0, bool antithetic) {
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
lowrank_correction_kernel(const TX* __restrict__ x, TY* __restrict__ y,
                          const int64_t* __restrict__ members, int64_t M, int64_t b, int64_t n,
                          int64_t m, int r, int rpb, Key key, bool antithetic, float scale) {
  const int64_t i0 = blockIdx.x;
  const int64_t i1 = run_end(members, M, i0, antithetic);
  if (i1 == i0) return;
  const uint32_t k = noise_index(members[i0], antithetic);
  __shared__ float red[kWarps][kAcc];
  __shared__ float tdot[kAcc];
  __shared__ int64_t xrow[kAcc];  // row index (member * b + row) of each item of the pass
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
                const TX* xr = x + xrow[it] * n + 4 * blk;
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
              for (int it = 0; it < icn; ++it) acc[it * lc + l] += load(x + xrow[it] * n + jn) * z[q];
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
fullrank_correction_kernel(const TX* __restrict__ x, TY* __restrict__ y,
                           const int64_t* __restrict__ members, int64_t M, int64_t b, int64_t n,
                           int64_t m, Key key, bool antithetic, float sigma) {
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
            if (it < icn) acc[it] += load(x + ((i0 * b) + it0 + it) * n + (p - p0)) * z[q];
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
                                      const int64_t* __restrict__ members, int64_t m, Key key,
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
                                       const int64_t* __restrict__ members, int64_t m, int64_t n,
                                       int64_t r, Key key, bool antithetic, float scale) {
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

struct Fwd { int64_t M, b, n, m; };
// x [M, n] | [M, b, n] and out [M, m] | [M, b, m] on one device, float storage, contiguous.
Fwd check_forward(const TensorView& x, const TensorView& y) {
  check_device(x, "x"); check_device(y, "out", &x, "x");
  if (!is_float_storage(x.dtype))
    type_error(std::string("x: expected float32, float16 or bfloat16, got ") + dtype_name(x.dtype));
  if (!is_float_storage(y.dtype))
    type_error(std::string("out: expected float32, float16 or bfloat16, got ") + dtype_name(y.dtype));
  if (x.ndim != 2 && x.ndim != 3) value_error("x: expected [M, n] or [M, b, n], got shape " + x.shape_str());
  Fwd s{x.shape[0], x.ndim == 3 ? x.shape[1] : 1, x.shape[x.ndim - 1], y.shape[y.ndim - 1]};
  if (y.ndim != x.ndim || y.shape[0] != s.M || (x.ndim == 3 && y.shape[1] != s.b))
    value_error("out: expected shape (M, [b,] m) matching x " + x.shape_str() + ", got " + y.shape_str());
  check_no_overlap(y, "out", x, "x");
  return s;
}

}  // namespace

void lowrank_correction(const TensorView& x, const TensorView& members, const EsArgs& a,
                        const TensorView& out, cudaStream_t stream) {
  check_rank(a);
  const Fwd s = check_forward(x, out);
  const int64_t* mem = check_members(members, s.M, x, "x");
  if ((s.n + s.m) * a.rank > int64_t(kStreamLength)) value_error("rank: (m + n) * rank exceeds the stream length 2^34");
  if (s.M == 0 || s.b == 0 || s.m == 0 || s.n == 0) return;
  if (s.M > 0x7fffffffLL) value_error("x: at most 2^31 - 1 members per call on CUDA");
  const int r = int(a.rank);
  const bool fast = r == 1 && s.n % 4 == 0;
  const int rc = std::min(r, kAcc), ic = kAcc / rc;
  // Rows per block: a run is usually an antithetic pair, so half the items per pass.
  const int rpb = std::max(1, a.antithetic ? ic / 2 : ic);
  const int64_t chunks = (s.b + rpb - 1) / rpb;
  const dim3 grid(unsigned(s.M), unsigned(std::min<int64_t>(chunks, 65535)));
  const float scale = float(a.sigma / std::sqrt(double(r)));
  DeviceGuard guard(x.device_index);
  dispatch_float(x.dtype, "x", [&](auto tx) {
    using TX = decltype(tx);
    dispatch_float(out.dtype, "out", [&](auto ty) {
      using TY = decltype(ty);
      auto kernel = fast ? lowrank_correction_kernel<true, TX, TY> : lowrank_correction_kernel<false, TX, TY>;
      kernel<<<grid, kThreads, 0, stream>>>(x.ptr<const TX>(), out.ptr<TY>(), mem, s.M, s.b, s.n,
                                            s.m, r, rpb, make_key(a), a.antithetic, scale);
    });
  });
  check_launch("lowrank_correction");
}

void fullrank_correction(const TensorView& x, const TensorView& members, const EsArgs& a,
                         const TensorView& out, cudaStream_t stream) {
  validate_args(a);
  const Fwd s = check_forward(x, out);
  const int64_t* mem = check_members(members, s.M, x, "x");
  if (s.m * s.n > int64_t(kStreamLength)) value_error("W: m * n exceeds the stream length 2^34");
  if (s.M == 0 || s.b == 0 || s.m == 0 || s.n == 0) return;
  if (s.M > 0x7fffffffLL) value_error("x: at most 2^31 - 1 members per call on CUDA");
  const dim3 grid(unsigned(s.M), unsigned(std::min<int64_t>((s.m + kWarps - 1) / kWarps, 65535)));
  DeviceGuard guard(x.device_index);
  dispatch_float(x.dtype, "x", [&](auto tx) {
    using TX = decltype(tx);
    dispatch_float(out.dtype, "out", [&](auto ty) {
      using TY = decltype(ty);
      fullrank_correction_kernel<TX, TY><<<grid, kThreads, 0, stream>>>(
          x.ptr<const TX>(), out.ptr<TY>(), mem, s.M, s.b, s.n, s.m, make_key(a), a.antithetic,
          float(a.sigma));
    });
  });
  check_launch("fullrank_correction");
}

void perturb_vector(const TensorView& v, const TensorView& members, const EsArgs& a,
                    const TensorView& out, cudaStream_t stream) {
  validate_args(a);
  check_device(v, "v"); check_dtype(v, "v", DType::float32);
  if (v.ndim != 1) value_error("v: expected a vector [m], got shape " + v.shape_str());
  check_device(out, "out", &v, "v"); check_dtype(out, "out", DType::float32);
  const int64_t m = v.shape[0];
  if (out.ndim != 2 || out.shape[1] != m)
    value_error("out: expected shape (M, " + std::to_string(m) + "), got " + out.shape_str());
  check_no_overlap(out, "out", v, "v");
  const int64_t M = out.shape[0];
  const int64_t* mem = check_members(members, M, v, "v");
  if (M == 0 || m == 0) return;
  if (M > 65535) value_error("members: at most 65535 members per perturb_vector call on CUDA");
  DeviceGuard guard(v.device_index);
  const dim3 grid(grid_for((m + 3) / 4, 256, 4096), unsigned(M));
  perturb_vector_kernel<<<grid, 256, 0, stream>>>(v.ptr<const float>(), out.ptr<float>(), mem, m,
                                                  make_key(a), a.antithetic, float(a.sigma));
  check_launch("perturb_vector");
}

void lowrank_factors(const TensorView& members, int64_t m, int64_t n, const EsArgs& a,
                     const TensorView& A, const TensorView& B, cudaStream_t stream) {
  validate_args(a);
  if (m < 1 || n < 1) value_error("shape: dimensions must be >= 1");
  const int64_t r = a.rank;
  check_device(A, "A"); check_device(B, "B", &A, "A");
  check_dtype(A, "A", DType::float32); check_dtype(B, "B", DType::float32);
  const int64_t M = A.ndim == 3 ? A.shape[0] : -1;
  if (A.ndim != 3 || A.shape[1] != m || A.shape[2] != r)
    value_error("A: expected shape (M, " + std::to_string(m) + ", " + std::to_string(r) + "), got " + A.shape_str());
  if (B.ndim != 3 || B.shape[0] != M || B.shape[1] != n || B.shape[2] != r)
    value_error("B: expected shape (" + std::to_string(M) + ", " + std::to_string(n) + ", " + std::to_string(r) + "), got " + B.shape_str());
  const int64_t* mem = check_members(members, M, A, "A");
  if ((n + m) * r > int64_t(kStreamLength)) value_error("rank: (m + n) * rank exceeds the stream length 2^34");
  if (M == 0) return;
  if (M > 65535) value_error("members: at most 65535 members per lowrank_factors call on CUDA");
  DeviceGuard guard(A.device_index);
  const dim3 grid(grid_for(((n + m) * r + 3) / 4, 256, 4096), unsigned(M));
  lowrank_factors_kernel<<<grid, 256, 0, stream>>>(A.ptr<float>(), B.ptr<float>(), mem, m, n, r,
                                                   make_key(a), a.antithetic,
                                                   float(a.sigma / std::sqrt(double(r))));
  check_launch("lowrank_factors");
}

}  // namespace eggroll::cuda
