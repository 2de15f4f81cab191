// CUDA perturbed embedding lookup (docs/ops.md "Perturbed embedding"): the CPU's bits, from the
// plan of the core's check_perturbed_embedding. Decomposition: one thread per (output row,
// group of 4 consecutive columns); it regenerates the r values of A_k's row id and the 4r values
// of B_k it needs (Philox is random access), so neither factor ever reaches global memory and
// no thread waits on another.
#include <cmath>
#include "common.cuh"

namespace eggroll::cuda {
using namespace detail;

namespace {

// Stream value p of z(key, k) (one Philox block, one of its 4 normals).
__device__ inline float stream_at(const StreamKey& key, uint32_t k, int64_t p) {
  float z[4];
  normal4(key, k, uint32_t(p >> 2), z);
  return z[p & 3];
}

template <class Id>
__global__ void perturbed_embedding_kernel(const Id* __restrict__ ids, int64_t ids_stride,
                                           const float* __restrict__ W, Members members,
                                           bool perturbed, float* __restrict__ out, int64_t M,
                                           int64_t T, int64_t V, int64_t d, int r, StreamKey key,
                                           bool antithetic, float scale) {
  const int64_t groups = (d + 3) / 4, total = M * T * groups;
  for (int64_t item = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; item < total;
       item += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = item / groups, j0 = 4 * (item % groups), i = row / T, t = row % T;
    const int64_t id = int64_t(ids[i * ids_stride + t]);
    float* o = out + row * d;
    if (id < 0 || id >= V) {  // device ids are not read on the host: never read outside W
      for (int64_t j = j0; j < min_of(j0 + 4, d); ++j) o[j] = __int_as_float(0x7fc00000);
      continue;
    }
    const float* w = W + id * d;
    if (!perturbed) {
      for (int64_t j = j0; j < min_of(j0 + 4, d); ++j) o[j] = w[j];
      continue;
    }
    const int64_t member = members[i];
    const uint32_t k = noise_index(member, antithetic);
    const float c = negative(member, antithetic) ? -scale : scale;
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

void perturbed_embedding(const EmbeddingPlan& p, cudaStream_t stream) {
  expect_cuda(p.W, "W");
  if (p.M == 0 || p.T == 0 || p.d == 0) return;
  DeviceGuard guard(p.W.device_index);
  const unsigned grid = grid_for(p.M * p.T * ((p.d + 3) / 4), 256);
  const float scale = float(p.key.sigma / std::sqrt(double(p.key.rank)));
  const auto run = [&](auto* ids) {
    perturbed_embedding_kernel<<<grid, 256, 0, stream>>>(
        ids, p.ids_stride, p.W.ptr<const float>(), p.members, p.members.given, p.out.ptr<float>(),
        p.M, p.T, p.V, p.d, int(p.key.rank), make_key(p.key), p.key.antithetic, scale);
  };
  if (p.ids.dtype == DType::int64) run(p.ids.ptr<const int64_t>());
  else run(p.ids.ptr<const int32_t>());
  check_launch("perturbed_embedding");
}

}  // namespace eggroll::cuda
