// CUDA perturbed forwards: the low-rank forward (the caller's GEMM for x W^T, the per-member
// correction split around it), the full-rank baseline's correction, vector perturbation and
// the explicit factors.
#include <algorithm>
#include <cmath>
#include "common.cuh"

namespace eggroll::cuda {
using namespace detail;

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kAcc = 16;           // (item, rank) dot products one pass of the dots accumulates
constexpr int kCols = 4 * kThreads;  // output columns per block of the add (4 per thread)
constexpr int kRows = 8;           // rows per register tile of the general add
constexpr int kL = 8;              // ranks per regenerated slice of the general add

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

// Dots: t[row, l] = c_i (x[i, row, :] . B_k[:, l]), c_i = s_i sigma / sqrt(r) (the CPU's t).
// Decomposition: block (x = run start i0, y = chunk of `rpb` rows) owns the rows of every
// member of its run in that chunk ("items"). Per pass of up to kAcc (item, l) pairs, thread t
// regenerates Philox blocks t, t + 256, ... of B_k and accumulates in registers; a block
// reduction gives the pass's dots. B_k never reaches global memory. FAST: rank 1 with
// n % 4 == 0 (every Philox block maps onto 4 consecutive x columns).
template <bool FAST, class TX>
__global__ void __launch_bounds__(kThreads)
lowrank_dots_kernel(const TX* __restrict__ x, int64_t xs, Members members, int64_t M, int64_t b,
                    int64_t n, int r, int rpb, KeyArg key_arg, bool antithetic, float scale,
                    float* __restrict__ t) {
  const int64_t i0 = blockIdx.x;
  const int64_t i1 = run_end(members, M, i0, antithetic);
  if (i1 == i0) return;
  const StreamKey key = key_arg.get();
  const uint32_t k = noise_index(members[i0], antithetic);
  __shared__ float red[kWarps][kAcc];
  __shared__ int64_t trow[kAcc];  // row index (member * b + row) of each item of the pass
  __shared__ int64_t xoff[kAcc];  // its offset in x (member * xs + row * n; xs = 0: shared x)
  __shared__ float coef[kAcc];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int rc = FAST ? 1 : min_of(r, kAcc);  // ranks per pass
  const int ic = kAcc / rc;                   // items per pass
  const int64_t nr = n * r, nchunks = (b + rpb - 1) / rpb;
  for (int64_t chunk = blockIdx.y; chunk < nchunks; chunk += gridDim.y) {
    const int64_t row0 = chunk * rpb, rows = min_of(int64_t(rpb), b - row0);
    const int64_t items = (i1 - i0) * rows;
    for (int l0 = 0; l0 < r; l0 += rc) {
      const int lc = min_of(rc, r - l0);
      for (int64_t it0 = 0; it0 < items; it0 += ic) {
        const int icn = int(min_of(int64_t(ic), items - it0));
        __syncthreads();  // the previous pass is done with trow / xoff / coef
        if (threadIdx.x < icn) {
          const int64_t item = it0 + threadIdx.x, mi = i0 + item / rows;
          trow[threadIdx.x] = mi * b + row0 + item % rows;
          xoff[threadIdx.x] = mi * xs + (row0 + item % rows) * n;
          coef[threadIdx.x] = negative(members[mi], antithetic) ? -scale : scale;
        }
        __syncthreads();
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
          const int it = threadIdx.x / lc, l = threadIdx.x % lc;
          t[trow[it] * r + l0 + l] = coef[it] * s;
        }
      }
    }
  }
}

// Add: out[row, o] += sum_l t[row, l] A_k[o, l] for the rows of a run (consecutive: members
// i0 .. i1 - 1 are rows i0 b .. i1 b - 1). Decomposition: block (x = run start, y = block of
// kCols output columns); thread owns 4 consecutive outputs and regenerates their A_k values
// once for every row of the run (FAST: rank 1, n % 4 == 0: one Philox block = its 4 outputs),
// or, for any rank, slices of kL ranks per tile of kRows rows (float32 sums in registers, one
// rounding per output). A_k never reaches global memory.
template <bool FAST, class TY>
__global__ void __launch_bounds__(kThreads)
lowrank_add_kernel(TY* __restrict__ y, const float* __restrict__ t, Members members, int64_t M,
                   int64_t b, int64_t n, int64_t m, int r, KeyArg key_arg, bool antithetic) {
  const int64_t i0 = blockIdx.x;
  const int64_t i1 = run_end(members, M, i0, antithetic);
  if (i1 == i0) return;
  const StreamKey key = key_arg.get();
  const uint32_t k = noise_index(members[i0], antithetic);
  const int64_t nr = n * r, row0 = i0 * b, rows = (i1 - i0) * b;
  for (int64_t cb = blockIdx.y; cb * kCols < m; cb += gridDim.y) {
    const int64_t o = cb * kCols + 4 * int64_t(threadIdx.x);  // first of the thread's outputs
    if (FAST) {
      __shared__ float tv[kThreads];
      float z[4];
      if (o < m) normal4(key, k, uint32_t((nr >> 2) + (o >> 2)), z);
      for (int64_t r0 = 0; r0 < rows; r0 += kThreads) {
        __syncthreads();
        if (r0 + threadIdx.x < rows) tv[threadIdx.x] = t[row0 + r0 + threadIdx.x];
        __syncthreads();
        if (o >= m) continue;
        const int cnt = int(min_of(int64_t(kThreads), rows - r0));
        for (int j = 0; j < cnt; ++j) {
          TY* yr = y + (row0 + r0 + j) * m + o;
          const float tj = tv[j];
#pragma unroll
          for (int q = 0; q < 4; ++q)
            if (o + q < m) store(yr + q, load(yr + q) + tj * z[q]);
        }
      }
      continue;
    }
    if (o >= m) continue;
    const int no = int(min_of(int64_t(4), m - o));
    for (int64_t r0 = 0; r0 < rows; r0 += kRows) {
      const int nrow = int(min_of(int64_t(kRows), rows - r0));
      float ya[4][kRows];
      for (int q = 0; q < 4; ++q)
        for (int j = 0; j < kRows; ++j) ya[q][j] = 0.0f;
      for (int l0 = 0; l0 < r; l0 += kL) {
        const int lc = min_of(kL, r - l0);
        float a[4][kL];
        if (r <= kL) {  // one slice: the outputs' A_k values are one stretch of the stream
          const int64_t p0 = nr + o * r, p1 = p0 + no * r;
          for (int64_t blk = p0 >> 2; 4 * blk < p1; ++blk) {
            float z[4];
            normal4(key, k, uint32_t(blk), z);
            for (int e = 0; e < 4; ++e) {
              const int64_t p = 4 * blk + e;
              if (p >= p0 && p < p1) a[(p - p0) / r][(p - p0) % r] = z[e];
            }
          }
        } else {
          for (int q = 0; q < no; ++q) {  // A_k[o + q, l0 .. l0 + lc): stream positions p0 ..
            const int64_t p0 = nr + (o + q) * r + l0, p1 = p0 + lc;
            for (int64_t blk = p0 >> 2; 4 * blk < p1; ++blk) {
              float z[4];
              normal4(key, k, uint32_t(blk), z);
              for (int e = 0; e < 4; ++e) {
                const int64_t p = 4 * blk + e;
                if (p >= p0 && p < p1) a[q][p - p0] = z[e];
              }
            }
          }
        }
        for (int j = 0; j < nrow; ++j) {
          const float* tr = t + (row0 + r0 + j) * r + l0;
          for (int l = 0; l < lc; ++l) {
            const float tl = tr[l];
            for (int q = 0; q < no; ++q) ya[q][j] += tl * a[q][l];
          }
        }
      }
      for (int j = 0; j < nrow; ++j) {
        TY* yr = y + (row0 + r0 + j) * m + o;
        for (int q = 0; q < no; ++q) store(yr + q, load(yr + q) + ya[q][j]);
      }
    }
  }
}

// Full-rank correction: out[i, row, o] += c_i x[i, row, :] . Z_k[o, :].
// Decomposition: block (x = run start, y = group of output rows, grid-stride); warp w owns
// output row o and regenerates Z_k[o, :] (lane l owns Philox blocks l, l + 32, ...) once per
// pass of up to 8 items (member, row), then a warp reduction; no workspace at all.
template <class TX, class TY>
__global__ void __launch_bounds__(kThreads)
fullrank_correction_kernel(const TX* __restrict__ x, TY* __restrict__ y, int64_t xs,
                           Members members, int64_t M, int64_t b, int64_t n,
                           int64_t m, KeyArg key_arg, bool antithetic, float sigma) {
  constexpr int kItems = 8;
  const int64_t i0 = blockIdx.x;
  const int64_t i1 = run_end(members, M, i0, antithetic);
  if (i1 == i0) return;
  const StreamKey key = key_arg.get();
  const uint32_t k = noise_index(members[i0], antithetic);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t items = (i1 - i0) * b;
  for (int64_t o = int64_t(blockIdx.y) * kWarps + warp; o < m; o += int64_t(gridDim.y) * kWarps) {
    const int64_t p0 = o * n, p1 = p0 + n;
    for (int64_t it0 = 0; it0 < items; it0 += kItems) {
      const int icn = int(min_of(int64_t(kItems), items - it0));
      float acc[kItems];
#pragma unroll
      for (int q = 0; q < kItems; ++q) acc[q] = 0.0f;
      for (int64_t blk = (p0 >> 2) + lane; 4 * blk < p1; blk += 32) {
        float z[4];
        normal4(key, k, uint32_t(blk), z);
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const int64_t p = 4 * blk + q;
          if (p < p0 || p >= p1) continue;
#pragma unroll
          for (int it = 0; it < kItems; ++it)
            if (it < icn)
              acc[it] += load(x + (i0 + (it0 + it) / b) * xs + ((it0 + it) % b) * n + (p - p0)) * z[q];
        }
      }
#pragma unroll
      for (int it = 0; it < kItems; ++it) {
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
                                      Members members, int64_t m, KeyArg key_arg,
                                      bool antithetic, float sigma) {
  const StreamKey key = key_arg.get();
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
                                       int64_t r, KeyArg key_arg, bool antithetic, float scale) {
  const StreamKey key = key_arg.get();
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

// out[i] = out[0] for members i = 1 .. M - 1 (the product of a shared input, made once).
// Thread per element of a member's rows, grid-stride; T: a word of the element's size.
template <class T>
__global__ void broadcast_rows_kernel(T* __restrict__ out, int64_t per_member, int64_t M) {
  const int64_t total = per_member * (M - 1);
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x)
    out[per_member + e] = out[e % per_member];
}

// A second stream of the calling thread on the current device (high priority: the dots, which
// the add waits for, get SMs first while the GEMM runs), forked from `stream` with an event and
// joined back when the scope ends (also on an exception, so scratch freed on `stream` afterwards
// is never in use). Fork and join are events, so a graph capture of `stream` takes the second
// stream's work in as a parallel branch.
class Fork {
 public:
  explicit Fork(cudaStream_t stream) : stream_(stream) {
    int device = 0;
    check_cuda(cudaGetDevice(&device), "cudaGetDevice");
    Side& s = side(device);
    side_ = s.stream;
    join_ = s.join;
    check_cuda(cudaEventRecord(s.fork, stream), "cudaEventRecord (fork)");
    check_cuda(cudaStreamWaitEvent(side_, s.fork, 0), "cudaStreamWaitEvent (fork)");
  }
  ~Fork() {
    cudaEventRecord(join_, side_);
    cudaStreamWaitEvent(stream_, join_, 0);
  }
  Fork(const Fork&) = delete;
  Fork& operator=(const Fork&) = delete;
  cudaStream_t side() const { return side_; }

 private:
  struct Side { cudaStream_t stream = nullptr; cudaEvent_t fork = nullptr, join = nullptr; };
  // Created once per (thread, device) and kept for the thread's life; creation is not a
  // stream operation, so a capture in progress is told to tolerate it (relaxed mode).
  static Side& side(int device) {
    constexpr int kMaxDevices = 64;
    thread_local Side sides[kMaxDevices];
    Side& s = sides[device < kMaxDevices ? device : kMaxDevices - 1];
    if (s.stream) return s;
    cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
    check_cuda(cudaThreadExchangeStreamCaptureMode(&mode), "cudaThreadExchangeStreamCaptureMode");
    int lo = 0, hi = 0;
    cudaError_t err = cudaDeviceGetStreamPriorityRange(&lo, &hi);
    if (err == cudaSuccess) err = cudaStreamCreateWithPriority(&s.stream, cudaStreamNonBlocking, hi);
    if (err == cudaSuccess) err = cudaEventCreateWithFlags(&s.fork, cudaEventDisableTiming);
    if (err == cudaSuccess) err = cudaEventCreateWithFlags(&s.join, cudaEventDisableTiming);
    cudaThreadExchangeStreamCaptureMode(&mode);
    if (err != cudaSuccess) s.stream = nullptr;
    check_cuda(err, "creating eggroll's second stream");
    return s;
  }
  cudaStream_t stream_, side_;
  cudaEvent_t join_;
};

bool fast_lowrank(const ForwardPlan& p) { return p.key.rank == 1 && p.n % 4 == 0; }

// t [M b, r] (float32 scratch) = the dots of every member's rows, on `stream`.
void launch_dots(const ForwardPlan& p, const Members& mem, float* t, cudaStream_t stream) {
  const int r = int(p.key.rank);
  const int rc = std::min(r, kAcc), ic = kAcc / rc;
  // Rows per block: a run is usually an antithetic pair, so half the items per pass.
  const int rpb = std::max(1, p.key.antithetic ? ic / 2 : ic);
  const int64_t chunks = (p.b + rpb - 1) / rpb;
  const dim3 grid(unsigned(p.M), unsigned(std::min<int64_t>(chunks, 65535)));
  const float scale = float(p.key.sigma / std::sqrt(double(r)));
  dispatch_float(p.x.dtype, "x", [&](auto tx) {
    using TX = decltype(tx);
    auto kernel = fast_lowrank(p) ? lowrank_dots_kernel<true, TX> : lowrank_dots_kernel<false, TX>;
    kernel<<<grid, kThreads, 0, stream>>>(p.x.ptr<const TX>(), p.x_stride, mem, p.M, p.b, p.n,
                                          r, rpb, make_key(p.key), p.key.antithetic, scale, t);
  });
  check_launch("lowrank_correction (dots)");
}

// out += t A^T, on `stream`.
void launch_add(const ForwardPlan& p, const Members& mem, const float* t, cudaStream_t stream) {
  const dim3 grid(unsigned(p.M), unsigned(std::min<int64_t>((p.m + kCols - 1) / kCols, 65535)));
  dispatch_float(p.out.dtype, "out", [&](auto ty) {
    using TY = decltype(ty);
    auto kernel = fast_lowrank(p) ? lowrank_add_kernel<true, TY> : lowrank_add_kernel<false, TY>;
    kernel<<<grid, kThreads, 0, stream>>>(p.out.ptr<TY>(), t, mem, p.M, p.b, p.n, p.m,
                                          int(p.key.rank), make_key(p.key), p.key.antithetic);
  });
  check_launch("lowrank_correction (add)");
}

void launch_fullrank(const ForwardPlan& p, const Members& mem, cudaStream_t stream) {
  const dim3 grid(unsigned(p.M), unsigned(std::min<int64_t>((p.m + kWarps - 1) / kWarps, 65535)));
  dispatch_float(p.x.dtype, "x", [&](auto tx) {
    using TX = decltype(tx);
    dispatch_float(p.out.dtype, "out", [&](auto ty) {
      using TY = decltype(ty);
      fullrank_correction_kernel<TX, TY><<<grid, kThreads, 0, stream>>>(
          p.x.ptr<const TX>(), p.out.ptr<TY>(), p.x_stride, mem, p.M, p.b, p.n, p.m,
          make_key(p.key), p.key.antithetic, float(p.key.sigma));
    });
  });
  check_launch("fullrank_correction");
}

DeviceValues values_of(const Members& mem, const Key& key) {
  DeviceValues v;
  v.members = mem;
  v.antithetic = key.antithetic;
  v.epoch = key.epoch_device;
  return v;
}

// A plan with a correction to add: members given, and something to add it to.
bool corrected(const ForwardPlan& p) {
  return p.members.given && p.M > 0 && p.b > 0 && p.m > 0 && p.n > 0;
}

void check_members_per_call(const ForwardPlan& p) {
  if (p.M > 0x7fffffffLL) value_error("x: at most 2^31 - 1 members per call on CUDA");
}

// A 2-D view [rows, cols] of a contiguous array's memory.
TensorView rows_view(const TensorView& t, int64_t rows, int64_t cols) {
  TensorView v = t;
  v.ndim = 2;
  v.shape[0] = rows; v.shape[1] = cols;
  v.strides[0] = cols; v.strides[1] = 1;
  return v;
}

}  // namespace

void perturbed_matmul(const ForwardPlan& p, const Gemm& gemm, cudaStream_t stream) {
  expect_cuda(p.x, "x");
  check_members_per_call(p);
  OpFrame frame(p.x.device_index, stream);
  if (p.M == 0 || p.b == 0 || p.m == 0) return frame.done("perturbed_matmul");
  // A shared input: its b rows are multiplied once, into member 0's rows of out.
  const bool shared = p.x_stride == 0 && p.M > 1;
  const int64_t R = shared ? p.b : p.M * p.b;
  const TensorView x2 = rows_view(p.x, R, p.n), out2 = rows_view(p.out, R, p.m);
  auto product = [&] {
    if (!p.base) {  // the correction alone: the caller adds its own x W^T (docs/ops.md)
      check_cuda(cudaMemsetAsync(p.out.data, 0, size_t(p.out.numel() * dtype_size(p.out.dtype)), stream),
                 "cudaMemsetAsync");
      return;
    }
    if (gemm.nt) gemm.nt(x2, p.W, out2, stream);
    else gemm_nt(x2, p.W, out2, stream);
    if (!shared) return;
    const int64_t per_member = p.b * p.m;
    const unsigned grid = grid_for(per_member * (p.M - 1), 256);
    if (dtype_size(p.out.dtype) == 4)
      broadcast_rows_kernel<uint32_t><<<grid, 256, 0, stream>>>(p.out.ptr<uint32_t>(), per_member, p.M);
    else
      broadcast_rows_kernel<uint16_t><<<grid, 256, 0, stream>>>(p.out.ptr<uint16_t>(), per_member, p.M);
    check_launch("perturbed_matmul (shared input)");
  };
  if (!corrected(p)) {
    product();
    return frame.done("perturbed_matmul");
  }
  const DeviceMembers mem(p.members, stream);
  if (p.full_rank) {
    product();
    check_values(values_of(mem.get(), p.key), stream);
    launch_fullrank(p, mem.get(), stream);
    return frame.done("perturbed_matmul_full");
  }
  // Low rank: the dots (and the value checks) on a second stream while the GEMM runs on
  // `stream`; the add waits for both.
  const Scratch t(size_t(p.M * p.b * p.key.rank) * sizeof(float), stream);
  {
    const Fork fork(stream);
    check_values(values_of(mem.get(), p.key), fork.side());
    launch_dots(p, mem.get(), t.as<float>(), fork.side());
    product();
  }  // joined: `stream` now waits for the dots
  launch_add(p, mem.get(), t.as<float>(), stream);
  frame.done("perturbed_matmul");
}

void lowrank_correction(const ForwardPlan& p, cudaStream_t stream) {
  expect_cuda(p.x, "x");
  if (p.full_rank) value_error("full_rank: a full-rank plan takes fullrank_correction");
  check_members_per_call(p);
  OpFrame frame(p.x.device_index, stream);
  if (!corrected(p)) return frame.done("lowrank_correction");
  const DeviceMembers mem(p.members, stream);
  check_values(values_of(mem.get(), p.key), stream);
  const Scratch t(size_t(p.M * p.b * p.key.rank) * sizeof(float), stream);
  launch_dots(p, mem.get(), t.as<float>(), stream);
  launch_add(p, mem.get(), t.as<float>(), stream);
  frame.done("lowrank_correction");
}

void fullrank_correction(const ForwardPlan& p, cudaStream_t stream) {
  expect_cuda(p.x, "x");
  if (!p.full_rank) value_error("full_rank: a low-rank plan takes lowrank_correction");
  check_members_per_call(p);
  OpFrame frame(p.x.device_index, stream);
  if (!corrected(p)) return frame.done("fullrank_correction");
  const DeviceMembers mem(p.members, stream);
  check_values(values_of(mem.get(), p.key), stream);
  launch_fullrank(p, mem.get(), stream);
  frame.done("fullrank_correction");
}

void perturb_vector(const VectorPlan& p, cudaStream_t stream) {
  expect_cuda(p.v, "v");
  if (p.M > 65535) value_error("members: at most 65535 members per perturb_vector call on CUDA");
  OpFrame frame(p.v.device_index, stream);
  if (p.M == 0 || p.m == 0) return frame.done("perturb_vector");
  const DeviceMembers mem(p.members, stream);
  check_values(values_of(mem.get(), p.key), stream);
  const dim3 grid(grid_for((p.m + 3) / 4, 256, 4096), unsigned(p.M));
  perturb_vector_kernel<<<grid, 256, 0, stream>>>(p.v.ptr<const float>(), p.out.ptr<float>(),
                                                  mem.get(), p.m, make_key(p.key),
                                                  p.key.antithetic, float(p.key.sigma));
  frame.done("perturb_vector");
}

void lowrank_factors(const FactorPlan& p, cudaStream_t stream) {
  expect_cuda(p.A, "A");
  if (p.M > 65535) value_error("members: at most 65535 members per lowrank_factors call on CUDA");
  OpFrame frame(p.A.device_index, stream);
  if (p.M == 0) return frame.done("lowrank_factors");
  const DeviceMembers mem(p.members, stream);
  check_values(values_of(mem.get(), p.key), stream);
  const int64_t r = p.key.rank;
  const dim3 grid(grid_for(((p.n + p.m) * r + 3) / 4, 256, 4096), unsigned(p.M));
  lowrank_factors_kernel<<<grid, 256, 0, stream>>>(p.A.ptr<float>(), p.B.ptr<float>(), mem.get(),
                                                   p.m, p.n, r, make_key(p.key), p.key.antithetic,
                                                   float(p.key.sigma / std::sqrt(double(r))));
  frame.done("lowrank_factors");
}

}  // namespace eggroll::cuda
