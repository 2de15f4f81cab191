// eggroll's own dense products (cuda::fallback_gemm): plain tiled GEMMs for the ops' injected
// GEMM where no cuBLAS can be called (CuPy refuses cuBLAS while a stream captures a graph) or
// none was given. Chosen to be obviously correct, not fast: one output per thread, 16 x 16
// shared-memory tiles, float32 accumulation in k order.
#include <algorithm>
#include "common.cuh"

namespace eggroll::cuda {
using namespace detail;

namespace {

constexpr int kTile = 16;

// out[r, o] = sum_j x[r, j] W[o, j]; x [R, n], W [m, n], out [R, m], all contiguous.
// Block (column tile blockIdx.x, row tiles blockIdx.y + k gridDim.y); thread (tx, ty) owns
// out[r0 + ty, o0 + tx]. Padding loads 0, so partial tiles need no special case.
template <class TX, class TY>
__global__ void gemm_nt_kernel(const TX* __restrict__ x, const TX* __restrict__ W,
                               TY* __restrict__ out, int64_t R, int64_t n, int64_t m) {
  __shared__ float xs[kTile][kTile + 1];  // +1: no bank conflicts on the column reads
  __shared__ float ws[kTile][kTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t o0 = int64_t(blockIdx.x) * kTile;
  for (int64_t r0 = int64_t(blockIdx.y) * kTile; r0 < R; r0 += int64_t(gridDim.y) * kTile) {
    float acc = 0.0f;
    for (int64_t j0 = 0; j0 < n; j0 += kTile) {
      const int64_t j = j0 + tx, r = r0 + ty, o = o0 + ty;
      xs[ty][tx] = (r < R && j < n) ? load(x + r * n + j) : 0.0f;
      ws[ty][tx] = (o < m && j < n) ? load(W + o * n + j) : 0.0f;
      __syncthreads();
#pragma unroll
      for (int q = 0; q < kTile; ++q) acc += xs[ty][q] * ws[tx][q];
      __syncthreads();  // the tiles are overwritten next step
    }
    const int64_t r = r0 + ty, o = o0 + tx;
    if (r < R && o < m) store(out + r * m + o, acc);
  }
}

// out[i, j] (+)= sum_c A[c, i] B[c, j]; A [C, m], B [C, n], out [m, n], float32.
// Block (column tile blockIdx.x, row tiles blockIdx.y + k gridDim.y); thread owns out[i, j].
__global__ void gemm_tn_kernel(const float* __restrict__ A, const float* __restrict__ B,
                               float* __restrict__ out, int64_t C, int64_t m, int64_t n,
                               bool accumulate) {
  __shared__ float as[kTile][kTile + 1];
  __shared__ float bs[kTile][kTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t j0 = int64_t(blockIdx.x) * kTile;
  for (int64_t i0 = int64_t(blockIdx.y) * kTile; i0 < m; i0 += int64_t(gridDim.y) * kTile) {
    float acc = 0.0f;
    for (int64_t c0 = 0; c0 < C; c0 += kTile) {
      const int64_t c = c0 + ty;
      as[ty][tx] = (c < C && i0 + tx < m) ? A[c * m + i0 + tx] : 0.0f;  // as[c][i]
      bs[ty][tx] = (c < C && j0 + tx < n) ? B[c * n + j0 + tx] : 0.0f;  // bs[c][j]
      __syncthreads();
#pragma unroll
      for (int q = 0; q < kTile; ++q) acc += as[q][ty] * bs[q][tx];
      __syncthreads();
    }
    const int64_t i = i0 + ty, j = j0 + tx;
    if (i < m && j < n) out[i * n + j] = accumulate ? out[i * n + j] + acc : acc;
  }
}

void check_2d(const TensorView& t, const char* name) {
  if (t.ndim != 2) value_error(std::string(name) + ": expected a 2-D array, got shape " + t.shape_str());
}

dim3 gemm_grid(int64_t rows, int64_t cols) {
  const int64_t gx = (cols + kTile - 1) / kTile, gy = (rows + kTile - 1) / kTile;
  if (gx > 0x7fffffffLL) value_error("out: too many columns for one CUDA grid");
  return dim3(unsigned(gx), unsigned(std::min<int64_t>(gy, 65535)));  // rows: grid-stride
}

}  // namespace

Gemm fallback_gemm() {
  Gemm g;
  g.nt = [](const TensorView& x, const TensorView& W, const TensorView& out, cudaStream_t s) {
    gemm_nt(x, W, out, s);
  };
  g.tn = [](const TensorView& A, const TensorView& B, const TensorView& out, bool accumulate,
            cudaStream_t s) { gemm_tn(A, B, out, accumulate, s); };
  return g;
}

void gemm_nt(const TensorView& x, const TensorView& W, const TensorView& out, cudaStream_t stream) {
  check_device(x, "x"); check_device(W, "W", &x, "x"); check_device(out, "out", &x, "x");
  if (!is_float_storage(x.dtype))
    type_error(std::string("x: expected float32, float16 or bfloat16, got ") + dtype_name(x.dtype));
  if (W.dtype != x.dtype)
    type_error(std::string("W: expected the dtype of x (") + dtype_name(x.dtype) + "), got " + dtype_name(W.dtype));
  if (!is_float_storage(out.dtype))
    type_error(std::string("out: expected float32, float16 or bfloat16, got ") + dtype_name(out.dtype));
  check_2d(x, "x"); check_2d(W, "W"); check_2d(out, "out");
  const int64_t R = x.shape[0], n = x.shape[1], m = W.shape[0];
  if (W.shape[1] != n)
    value_error("W: expected shape (m, " + std::to_string(n) + "), got " + W.shape_str());
  if (out.shape[0] != R || out.shape[1] != m)
    value_error("out: expected shape (" + std::to_string(R) + ", " + std::to_string(m) + "), got " + out.shape_str());
  check_no_overlap(out, "out", x, "x"); check_no_overlap(out, "out", W, "W");
  if (R == 0 || m == 0) return;
  const dim3 grid = gemm_grid(R, m);
  DeviceGuard guard(x.device_index);
  dispatch_float(x.dtype, "x", [&](auto tx) {
    using TX = decltype(tx);
    dispatch_float(out.dtype, "out", [&](auto ty) {
      using TY = decltype(ty);
      gemm_nt_kernel<TX, TY><<<grid, dim3(kTile, kTile), 0, stream>>>(
          x.ptr<const TX>(), W.ptr<const TX>(), out.ptr<TY>(), R, n, m);
    });
  });
  check_launch("gemm_nt");
}

void gemm_tn(const TensorView& A, const TensorView& B, const TensorView& out, bool accumulate,
             cudaStream_t stream) {
  check_device(A, "A"); check_device(B, "B", &A, "A"); check_device(out, "out", &A, "A");
  check_dtype(A, "A", DType::float32); check_dtype(B, "B", DType::float32);
  check_dtype(out, "out", DType::float32);
  check_2d(A, "A"); check_2d(B, "B"); check_2d(out, "out");
  const int64_t C = A.shape[0], m = A.shape[1], n = B.shape[1];
  if (B.shape[0] != C)
    value_error("B: expected shape (" + std::to_string(C) + ", n), got " + B.shape_str());
  if (out.shape[0] != m || out.shape[1] != n)
    value_error("out: expected shape (" + std::to_string(m) + ", " + std::to_string(n) + "), got " + out.shape_str());
  check_no_overlap(out, "out", A, "A"); check_no_overlap(out, "out", B, "B");
  if (m == 0 || n == 0) return;
  const dim3 grid = gemm_grid(m, n);
  DeviceGuard guard(A.device_index);
  gemm_tn_kernel<<<grid, dim3(kTile, kTile), 0, stream>>>(A.ptr<const float>(), B.ptr<const float>(),
                                                         out.ptr<float>(), C, m, n, accumulate);
  check_launch("gemm_tn");
}

}  // namespace eggroll::cuda
