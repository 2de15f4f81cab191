// CUDA integer (int8) path, bit-identical to the CPU (docs/ops.md "Integer path"): the
// perturbed int8 forward and the thresholded +-1 vote update. Every value is exact integer
// arithmetic (int32 where it cannot overflow, int64 elsewhere), so any summation order gives
// the CPU's result. Kernels: (1) t[row, l] = s_i x_row . qB_k[:, l] per run of members
// (B_k regenerated in registers); (2) a tiled int8 GEMM (dp4a) C = X Wt^T whose epilogue
// regenerates qA_k[o, :] for the correction, shifts, divides and clamps; the update builds
// its int8 factor columns in a stream-ordered scratch and runs the same GEMM. A shared input
// (x_stride 0) is read in place by both (row offsets per member).
#include <algorithm>
#include <cmath>
#include <string>
#include "common.cuh"

namespace eggroll::cuda {
using namespace detail;

namespace {

constexpr int kThreads = 256, kWarps = kThreads / 32, kAcc = 8;
constexpr int kTile = 64, kTileK = 64, kPad = 4;  // GEMM: 64 x 64 outputs, K in steps of 64

// q = clamp(trunc(z 2^fp), -127, 127): z 2^fp is exact (a power of two), as on the CPU.
__device__ inline int32_t quant(float z, float scale) {
  return int32_t(fminf(fmaxf(__fmul_rn(z, scale), -127.0f), 127.0f));
}
__device__ inline int64_t floor_div(int64_t v, int64_t d) {  // d > 0
  int64_t q = v / d;
  if (v % d != 0 && v < 0) --q;
  return q;
}

// Kernel 1: t[row * r + l] = s_i * (x_row . qB_k[:, l]) (int32: |.| <= 128 * 127 * 2^16 < 2^31).
// Block (x = run start, y = row chunk of 1 row per member of the run per pass item).
__global__ void __launch_bounds__(kThreads)
int8_dots_kernel(const int8_t* __restrict__ x, int64_t xs, Members members, int64_t M,
                 int64_t b, int64_t n, int r, KeyArg key_arg, bool antithetic, float scale,
                 int32_t* __restrict__ t) {
  const StreamKey key = key_arg.get();
  const int64_t i0 = blockIdx.x;
  const uint32_t k = noise_index(members[i0], antithetic);
  if (i0 > 0 && noise_index(members[i0 - 1], antithetic) == k) return;
  int64_t i1 = i0 + 1;
  while (i1 < M && noise_index(members[i1], antithetic) == k) ++i1;
  __shared__ int32_t red[kWarps][kAcc];
  __shared__ int64_t xrow[kAcc];  // the item's row of t (member * b + row)
  __shared__ int64_t xoff[kAcc];  // its offset in x (member * xs + row * n)
  __shared__ int32_t sgn[kAcc];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int rc = min_of(r, kAcc), ic = kAcc / rc;
  const int64_t items = (i1 - i0) * b, nr = n * r;
  for (int l0 = 0; l0 < r; l0 += rc) {
    const int lc = min_of(rc, r - l0);
    for (int64_t it0 = blockIdx.y * int64_t(ic); it0 < items; it0 += int64_t(gridDim.y) * ic) {
      const int icn = int(min_of(int64_t(ic), items - it0));
      __syncthreads();
      if (threadIdx.x < icn) {
        const int64_t item = it0 + threadIdx.x, mi = i0 + item / b;
        xrow[threadIdx.x] = mi * b + item % b;
        xoff[threadIdx.x] = mi * xs + (item % b) * n;
        sgn[threadIdx.x] = negative(members[mi], antithetic) ? -1 : 1;
      }
      __syncthreads();
      int32_t acc[kAcc];
      for (int q = 0; q < kAcc; ++q) acc[q] = 0;
      for (int64_t blk = threadIdx.x; 4 * blk < nr; blk += kThreads) {
        float z[4];
        normal4(key, k, uint32_t(blk), z);
        for (int q = 0; q < 4; ++q) {
          const int64_t j = 4 * blk + q;
          if (j >= nr) break;
          const int64_t jn = j / r;
          const int l = int(j - jn * r) - l0;
          if (l < 0 || l >= lc) continue;
          const int32_t qv = quant(z[q], scale);
          for (int it = 0; it < icn; ++it) acc[it * lc + l] += int32_t(x[xoff[it] + jn]) * qv;
        }
      }
      const int nacc = icn * lc;
#pragma unroll
      for (int q = 0; q < kAcc; ++q) {
        if (q < nacc) {
          int32_t s = acc[q];
          for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
          if (lane == 0) red[warp][q] = s;
        }
      }
      __syncthreads();
      if (threadIdx.x < nacc) {
        int32_t s = 0;
        for (int w = 0; w < kWarps; ++w) s += red[w][threadIdx.x];
        const int it = threadIdx.x / lc, l = threadIdx.x % lc;
        t[xrow[it] * r + l0 + l] = sgn[it] * s;
      }
    }
  }
}

// The forward epilogue: y = clamp(floor((c + floor(corr / 2^shift)) / D), -127, 127) with
// corr = sum_l t[row, l] qA_k[o, l] (exact in int64: |corr| < 2^31 * 127 * 1024).
struct ForwardEpilogue {
  int8_t* y; int64_t m, n, b; int r;
  const int32_t* t;  // null: unperturbed
  Members members; KeyArg key_arg; bool antithetic; float scale; int shift; int64_t D;
  __device__ void operator()(int64_t row, int64_t o, int64_t c) const {
    int64_t v = c;
    if (t) {
      const StreamKey key = key_arg.get();
      const uint32_t k = noise_index(members[row / b], antithetic);
      const int64_t p0 = n * r + o * r;
      int64_t corr = 0, have = -1;
      float z[4];
      for (int l = 0; l < r; ++l) {
        const int64_t p = p0 + l;
        if ((p >> 2) != have) { have = p >> 2; normal4(key, k, uint32_t(have), z); }
        corr += int64_t(t[row * r + l]) * quant(z[p & 3], scale);
      }
      v += corr >> shift;  // arithmetic shift = floor division by 2^shift
    }
    const int64_t q = floor_div(v, D);
    y[row * m + o] = int8_t(q < -127 ? -127 : (q > 127 ? 127 : q));
  }
};

// The update epilogue: out = clamp(W + [Z >= T] - [Z <= -T], -127, 127) (out may alias W).
struct UpdateEpilogue {
  const int8_t* W; int8_t* out; int64_t n, T;
  __device__ void operator()(int64_t o, int64_t j, int64_t z) const {
    const int64_t v = int64_t(W[o * n + j]) + (z >= T) - (z <= -T);
    out[o * n + j] = int8_t(v < -127 ? -127 : (v > 127 ? 127 : v));
  }
};

// C[row, col] = sum_c X[row, c] Wt[col, c] (int8 in, int64 out), then epi(row, col, C).
// Row `row` of X starts at (row / xb) xs + (row % xb) K: contiguous (xb 1, xs K), or a shared
// input's b rows for every member (xb b, xs 0).
// Block 16 x 16 threads owns a 64 x 64 tile; thread (ty, tx) owns rows ty*4.., cols tx*4..;
// K in steps of 64 through shared memory, 4 products per __dp4a, int32 per step (<= 2^20)
// added into int64 (exact for any K).
template <class Epi>
__global__ void __launch_bounds__(256)
gemm_i8_nt_kernel(const int8_t* __restrict__ X, int64_t xb, int64_t xs,
                  const int8_t* __restrict__ Wt, int64_t R, int64_t Cn, int64_t K, Epi epi) {
  __shared__ __align__(16) int8_t Xs[kTile][kTileK + kPad];
  __shared__ __align__(16) int8_t Ws[kTile][kTileK + kPad];
  __shared__ int64_t xoff[kTile];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t col0 = int64_t(blockIdx.x) * kTile;
  for (int64_t row0 = int64_t(blockIdx.y) * kTile; row0 < R; row0 += int64_t(gridDim.y) * kTile) {
    int64_t acc[4][4];
    for (int a = 0; a < 4; ++a) for (int c = 0; c < 4; ++c) acc[a][c] = 0;
    __syncthreads();  // the previous tile is done with xoff
    if (threadIdx.x < kTile) {
      const int64_t gr = row0 + threadIdx.x;
      xoff[threadIdx.x] = (gr / xb) * xs + (gr % xb) * K;
    }
    for (int64_t k0 = 0; k0 < K; k0 += kTileK) {
      __syncthreads();
      for (int e = threadIdx.x; e < kTile * kTileK; e += 256) {
        const int rr = e / kTileK, kk = e % kTileK;
        const int64_t gr = row0 + rr, gc = col0 + rr, gk = k0 + kk;
        Xs[rr][kk] = (gr < R && gk < K) ? X[xoff[rr] + gk] : int8_t(0);
        Ws[rr][kk] = (gc < Cn && gk < K) ? Wt[gc * K + gk] : int8_t(0);
      }
      __syncthreads();
      int32_t part[4][4];
      for (int a = 0; a < 4; ++a) for (int c = 0; c < 4; ++c) part[a][c] = 0;
#pragma unroll 4
      for (int kk = 0; kk < kTileK; kk += 4) {
        int32_t xa[4], wc[4];
#pragma unroll
        for (int a = 0; a < 4; ++a) xa[a] = *reinterpret_cast<const int32_t*>(&Xs[ty * 4 + a][kk]);
#pragma unroll
        for (int c = 0; c < 4; ++c) wc[c] = *reinterpret_cast<const int32_t*>(&Ws[tx * 4 + c][kk]);
#pragma unroll
        for (int a = 0; a < 4; ++a)
#pragma unroll
          for (int c = 0; c < 4; ++c) part[a][c] = __dp4a(xa[a], wc[c], part[a][c]);
      }
      for (int a = 0; a < 4; ++a) for (int c = 0; c < 4; ++c) acc[a][c] += part[a][c];
    }
    for (int a = 0; a < 4; ++a)
      for (int c = 0; c < 4; ++c) {
        const int64_t row = row0 + ty * 4 + a, col = col0 + tx * 4 + c;
        if (row < R && col < Cn) epi(row, col, acc[a][c]);
      }
  }
}

// Update factors: for pair k (block x) and stream position j (grid-stride over y):
// Bf[j', k r + l] = qB_k[j', l], Af[o, k r + l] = f_k qA_k[o, l]; Af [m, K], Bf [n, K], K = P r.
__global__ void int8_update_factors_kernel(int8_t* __restrict__ Af, int8_t* __restrict__ Bf,
                                           const int8_t* __restrict__ f, int64_t m, int64_t n,
                                           int r, int64_t K, KeyArg key_arg, float scale) {
  const StreamKey key = key_arg.get();
  const int64_t k = blockIdx.x, nr = n * r, total = (n + m) * r;
  const int32_t fk = f[k];
  for (int64_t blk = blockIdx.y * int64_t(blockDim.x) + threadIdx.x; 4 * blk < total;
       blk += int64_t(gridDim.y) * blockDim.x) {
    float z[4];
    normal4(key, uint32_t(k), uint32_t(blk), z);
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int64_t j = 4 * blk + q;
      if (j >= total) break;
      const int32_t qv = quant(z[q], scale);
      if (j < nr) {
        const int64_t jn = j / r, l = j - jn * r;
        Bf[jn * K + k * r + l] = int8_t(qv);
      } else {
        const int64_t p = j - nr, o = p / r, l = p - o * r;
        Af[o * K + k * r + l] = int8_t(fk * qv);
      }
    }
  }
}

int64_t isqrt_host(int64_t n) {
  int64_t s = int64_t(std::sqrt(double(n)));
  while (s * s > n) --s;
  while ((s + 1) * (s + 1) <= n) ++s;
  return s;
}

template <class Epi>
void launch_gemm(const int8_t* X, int64_t xb, int64_t xs, const int8_t* Wt, int64_t R, int64_t Cn,
                 int64_t K, const Epi& epi, cudaStream_t stream) {
  const dim3 grid(unsigned((Cn + kTile - 1) / kTile), unsigned(std::min<int64_t>((R + kTile - 1) / kTile, 65535)));
  gemm_i8_nt_kernel<Epi><<<grid, 256, 0, stream>>>(X, xb, xs, Wt, R, Cn, K, epi);
}

}  // namespace

void perturbed_matmul_int8(const Int8ForwardPlan& p, cudaStream_t stream) {
  expect_cuda(p.x, "x");
  const Key& a = p.key;
  const int64_t M = p.M, b = p.b, n = p.n, m = p.m;
  const bool perturb = p.members.given;
  const int r = int(a.rank);
  const int64_t R = M * b;
  if (M > 0x7fffffffLL) value_error("x: at most 2^31 - 1 members per call on CUDA");
  OpFrame frame(p.x.device_index, stream);
  if (R == 0 || m == 0) return frame.done("perturbed_matmul_int8");
  const float scale = float(int64_t(1) << a.fixed_point);
  const DeviceMembers mem(p.members, stream);
  const Scratch t(perturb ? size_t(R * r) * sizeof(int32_t) : 0, stream);
  if (perturb) {
    DeviceValues v;
    v.members = mem.get();
    v.antithetic = a.antithetic;
    v.epoch = a.epoch_device;
    check_values(v, stream);
    const int ic = kAcc / std::min(r, kAcc);
    const dim3 grid(unsigned(M), unsigned(std::min<int64_t>((b * 2 + ic - 1) / ic, 65535)));
    int8_dots_kernel<<<grid, kThreads, 0, stream>>>(p.x.ptr<const int8_t>(), p.x_stride, mem.get(),
                                                    M, b, n, r, make_key(a), a.antithetic, scale,
                                                    t.as<int32_t>());
  }
  ForwardEpilogue epi{p.out.ptr<int8_t>(), m, n, b, r, perturb ? t.as<int32_t>() : nullptr,
                      mem.get(), make_key(a), a.antithetic, scale,
                      int(a.fixed_point + a.sigma_shift),
                      (int64_t(1) << a.fixed_point) * isqrt_host(n)};
  const bool shared = p.x_stride == 0 && M > 1;
  launch_gemm(p.x.ptr<const int8_t>(), shared ? b : 1, shared ? 0 : n, p.W.ptr<const int8_t>(),
              R, m, n, epi, stream);
  frame.done("perturbed_matmul_int8");
}

void int8_update(const Int8UpdatePlan& p, cudaStream_t stream) {
  expect_cuda(p.W, "W");
  const Key& a = p.key;
  const int64_t m = p.m, n = p.n, P = p.P, r = a.rank;
  if (P > (int64_t(1) << 31) - 1) value_error("pair_fitness: at most 2^31 - 1 pairs on CUDA");
  const int64_t K = P * r;
  if ((m + n) * K > (int64_t(1) << 32))
    value_error("pair_fitness: (m + n) * pairs * rank must be <= 2^32 (the CUDA factor scratch)");
  OpFrame frame(p.W.device_index, stream);
  if (m == 0 || n == 0) return frame.done("int8_update");
  const Scratch scratch(size_t((m + n) * K), stream);
  int8_t* f = scratch.as<int8_t>();
  if (K > 0) {
    DeviceValues v;
    v.epoch = a.epoch_device;
    v.pair_fitness = p.pair_fitness.ptr<const int8_t>();
    v.P = P;
    check_values(v, stream);
    const dim3 grid(unsigned(P), grid_for(((n + m) * r + 3) / 4, 256, 65535));
    int8_update_factors_kernel<<<grid, 256, 0, stream>>>(f, f + m * K,
        p.pair_fitness.ptr<const int8_t>(), m, n, int(r), K, make_key(a),
        float(int64_t(1) << a.fixed_point));
  }
  UpdateEpilogue epi{p.W.ptr<const int8_t>(), p.out.ptr<int8_t>(), n, p.threshold};
  launch_gemm(f, 1, K, f ? f + m * K : nullptr, m, n, K, epi, stream);
  frame.done("int8_update");
}

}  // namespace eggroll::cuda
