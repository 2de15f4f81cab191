// CUDA noise: the raw Philox generator and the normal stream, bit-identical to the CPU.
// Parallel decomposition: one thread per Philox block (4 normals) of the requested range,
// grid-stride; thread t owns output values 4 (b0 + t) .. 4 (b0 + t) + 3 that fall in range.
#include "common.cuh"

namespace eggroll::cuda {
using namespace detail;

namespace {

__global__ void philox_kernel(const uint32_t* counter, const uint32_t* key, uint32_t* out,
                              int64_t count) {
  const uint32_t k0 = key[0], k1 = key[1];
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count;
       i += int64_t(gridDim.x) * blockDim.x) {
    uint32_t c0 = counter[4 * i], c1 = counter[4 * i + 1], c2 = counter[4 * i + 2], c3 = counter[4 * i + 3];
    eggroll::detail::philox_rounds<DeviceOps>(c0, c1, c2, c3, k0, k1);
    out[4 * i] = c0; out[4 * i + 1] = c1; out[4 * i + 2] = c2; out[4 * i + 3] = c3;
  }
}

// out[j - offset] = z[j] for j in [offset, offset + count).
__global__ void normal_kernel(float* out, StreamKey key, uint32_t k, uint64_t offset, uint64_t count) {
  const uint64_t first = offset >> 2, last = (offset + count + 3) >> 2;  // Philox blocks
  for (uint64_t b = first + blockIdx.x * uint64_t(blockDim.x) + threadIdx.x; b < last;
       b += uint64_t(gridDim.x) * blockDim.x) {
    float z[4];
    normal4(key, k, uint32_t(b), z);
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const uint64_t j = 4 * b + q;
      if (j >= offset && j < offset + count) out[j - offset] = z[q];
    }
  }
}

}  // namespace

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error so later calls are unaffected
    return 0;
  }
  return n;
}

RuntimeInfo runtime_info() {
  RuntimeInfo info{0, 0, ""};
  cudaRuntimeGetVersion(&info.runtime_version);
  if (cudaDriverGetVersion(&info.driver_version) != cudaSuccess) info.driver_version = 0;
  int n = 0;
  info.device_count_status = cudaGetErrorString(cudaGetDeviceCount(&n));
  cudaGetLastError();
  return info;
}

void philox4x32(const PhiloxPlan& p, cudaStream_t stream) {
  expect_cuda(p.counter, "counter");
  OpFrame frame(p.counter.device_index, stream);
  if (p.blocks > 0)
    philox_kernel<<<grid_for(p.blocks, 256), 256, 0, stream>>>(
        p.counter.ptr<const uint32_t>(), p.key.ptr<const uint32_t>(), p.out.ptr<uint32_t>(),
        p.blocks);
  frame.done("philox4x32");
}

void normal(const NormalPlan& p, cudaStream_t stream) {
  expect_cuda(p.out, "out");
  const uint64_t count = uint64_t(p.count);
  OpFrame frame(p.out.device_index, stream);
  const StreamKey k{p.key.seed, p.key.param_id, p.key.epoch_index};
  if (count > 0)
    normal_kernel<<<grid_for(int64_t((count + 3) / 4) + 1, 256), 256, 0, stream>>>(
        p.out.ptr<float>(), k, p.key.noise_index, p.offset, count);
  frame.done("normal");
}

}  // namespace eggroll::cuda
