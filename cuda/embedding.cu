// CUDA perturbed embedding lookup (docs/ops.md "Perturbed embedding"): the CPU's bits, from the
// plan of the core's check_perturbed_embedding. Decomposition: one thread per (output row,
// group of 4 consecutive columns); it regenerates the r values of A_k's row id and the 4r values
// of B_k it needs (Philox is random access), so neither factor ever reaches global memory and
// no thread waits on another. Device values (ids, index members, a device epoch) are checked
// on the device, never read on the host: a bad one is raised by the next launcher (cuda.h).
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
                                           int64_t T, int64_t V, int64_t d, int r,
                                           KeyArg key_arg, bool antithetic, float scale,
                                           uint8_t* bad_id) {
  const StreamKey key = key_arg.get();
  const int64_t groups = (d + 3) / 4, total = M * T * groups;
  for (int64_t item = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; item < total;
       item += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = item / groups, j0 = 4 * (item % groups), i = row / T, t = row % T;
    const int64_t id = int64_t(ids[i * ids_stride + t]);
    float* o = out + row * d;
    if (id < 0 || id >= V) {  // flagged, and a NaN row rather than a read outside W
      *bad_id = 1;
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

size_t workspace_bytes(const EmbeddingPlan& p) {
  return p.members.index && p.members.device == Device::cpu
             ? scratch_size(size_t(p.members.count) * 8) : 0;  // host members uploaded
}

void perturbed_embedding(const EmbeddingPlan& p, cudaStream_t stream) {
  expect_cuda(p.W, "W");
  OpFrame frame(p.W.device_index, stream);
  if (p.M == 0 || p.T == 0 || p.d == 0) return frame.done("perturbed_embedding");
  const DeviceMembers mem(p.members, stream);
  DeviceValues v;
  v.members = mem.get();
  v.antithetic = p.key.antithetic;
  v.epoch = p.key.epoch_device;
  check_values(v, stream);
  const unsigned grid = grid_for(p.M * p.T * ((p.d + 3) / 4), 256);
  const float scale = float(p.key.sigma / std::sqrt(double(p.key.rank)));
  uint8_t* flag = ids_flag();
  const auto run = [&](auto* ids) {
    perturbed_embedding_kernel<<<grid, 256, 0, stream>>>(
        ids, p.ids_stride, p.W.ptr<const float>(), mem.get(), p.members.given, p.out.ptr<float>(),
        p.M, p.T, p.V, p.d, int(p.key.rank), make_key(p.key), p.key.antithetic, scale, flag);
  };
  if (p.ids.dtype == DType::int64) run(p.ids.ptr<const int64_t>());
  else run(p.ids.ptr<const int32_t>());
  frame.done("perturbed_embedding");
}

}  // namespace eggroll::cuda
