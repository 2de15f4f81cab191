// CUDA perturbed embedding lookup (docs/ops.md "Perturbed embedding"): the CPU's bits.
// Decomposition: one thread per (output row, group of 4 consecutive columns); it regenerates
// the r values of A_k's row id and the 4r values of B_k it needs (Philox is random access),
// so neither factor ever reaches global memory and no thread waits on another.
#include <cmath>
#include "common.cuh"

namespace eggroll::cuda {
using namespace detail;

namespace {

// Stream value p of z(key, k) (one Philox block, one of its 4 normals).
__device__ inline float stream_at(const Key& key, uint32_t k, int64_t p) {
  float z[4];
  normal4(key, k, uint32_t(p >> 2), z);
  return z[p & 3];
}

template <class Id>
__global__ void perturbed_embedding_kernel(const Id* __restrict__ ids, int64_t stride0,
                                           const float* __restrict__ W,
                                           const int64_t* __restrict__ members,
                                           float* __restrict__ out, int64_t M, int64_t T,
                                           int64_t V, int64_t d, int r, Key key, bool antithetic,
                                           float scale) {
  const int64_t groups = (d + 3) / 4, total = M * T * groups;
  for (int64_t item = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; item < total;
       item += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = item / groups, j0 = 4 * (item % groups), i = row / T, t = row % T;
    const int64_t id = int64_t(ids[i * stride0 + t]);
    float* o = out + row * d;
    if (id < 0 || id >= V) {  // the adapter checks ids first; never read outside W
      for (int64_t j = j0; j < min_of(j0 + 4, d); ++j) o[j] = __int_as_float(0x7fc00000);
      continue;
    }
    const float* w = W + id * d;
    if (!members) {
      for (int64_t j = j0; j < min_of(j0 + 4, d); ++j) o[j] = w[j];
      continue;
    }
    const uint32_t k = noise_index(members[i], antithetic);
    const float c = negative(members[i], antithetic) ? -scale : scale;
    const int64_t arow = int64_t(d) * r + id * r;  // A_k's row id in the stream
    float corr[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int l = 0; l < r; ++l) {
      const float tl = __fmul_rn(c, stream_at(key, k, arow + l));
      for (int q = 0; q < 4 && j0 + q < d; ++q) {
        const float p = __fmul_rn(tl, stream_at(key, k, (j0 + q) * r + l));  // B_k[j, l]
        corr[q] = l == 0 ? p : __fadd_rn(corr[q], p);
      }
    }
    for (int q = 0; q < 4 && j0 + q < d; ++q) o[j0 + q] = __fadd_rn(w[j0 + q], corr[q]);
  }
}

}  // namespace

void perturbed_embedding(const TensorView& ids, const TensorView& W, const TensorView& members,
                         const EsArgs& a, const TensorView& out, cudaStream_t stream) {
  check_rank(a);
  check_device(W, "W"); check_dtype(W, "W", DType::float32);
  if (ids.device != Device::cuda || ids.device_index != W.device_index)
    value_error("ids: expected a CUDA array on W's device");
  if (ids.dtype != DType::int64 && ids.dtype != DType::int32)
    type_error(std::string("ids: expected int64 or int32 token ids, got ") + dtype_name(ids.dtype));
  if (ids.ndim != 2) value_error("ids: expected [M, T], got shape " + ids.shape_str());
  const int64_t M = ids.shape[0], T = ids.shape[1];
  if (T > 1 && ids.strides[1] != 1) value_error("ids: each member's row of ids must be contiguous");
  const int64_t stride0 = M > 1 ? ids.strides[0] : T;
  if (stride0 != 0 && stride0 != T) value_error("ids: axis 0 must be contiguous or broadcast (stride 0)");
  if (W.ndim != 2) value_error("W: expected a table [V, d], got shape " + W.shape_str());
  const int64_t V = W.shape[0], d = W.shape[1];
  check_device(out, "out", &W, "W"); check_dtype(out, "out", DType::float32);
  if (out.ndim != 3 || out.shape[0] != M || out.shape[1] != T || out.shape[2] != d)
    value_error("out: expected shape (" + std::to_string(M) + ", " + std::to_string(T) + ", " +
                std::to_string(d) + "), got " + out.shape_str());
  check_no_overlap(out, "out", W, "W");
  const int64_t* mem = members.data ? check_members(members, M, W, "W") : nullptr;
  if (mem && (V + d) * a.rank > int64_t(kStreamLength))
    value_error("rank: (V + d) * rank exceeds the stream length 2^34");
  if (M == 0 || T == 0 || d == 0) return;
  DeviceGuard guard(W.device_index);
  const unsigned grid = grid_for(M * T * ((d + 3) / 4), 256);
  const float scale = float(a.sigma / std::sqrt(double(a.rank)));
  if (ids.dtype == DType::int64)
    perturbed_embedding_kernel<<<grid, 256, 0, stream>>>(ids.ptr<const int64_t>(), stride0,
        W.ptr<const float>(), mem, out.ptr<float>(), M, T, V, d, int(a.rank), make_key(a),
        a.antithetic, scale);
  else
    perturbed_embedding_kernel<<<grid, 256, 0, stream>>>(ids.ptr<const int32_t>(), stride0,
        W.ptr<const float>(), mem, out.ptr<float>(), M, T, V, d, int(a.rank), make_key(a),
        a.antithetic, scale);
  check_launch("perturbed_embedding");
}

}  // namespace eggroll::cuda
