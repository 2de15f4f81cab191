// Noise: the checks, the dispatch onto the active ISA path, and the threaded fill
// (docs/noise.md).
#include "eggroll/noise.h"
#include <algorithm>
#include <string>
#include "eggroll/check.h"
#include "eggroll/parallel.h"
#include "noise_isa.h"

namespace eggroll {

void philox4x32(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]) {
  detail::philox4x32_scalar(counter, key, out);
}

void fill_normal(float* out, int64_t count, const NoiseKey& key, uint64_t offset) {
  if (count <= 0) return;
  switch (active_isa()) {
#if defined(EGGROLL_X86_KERNELS)
    case Isa::avx512: detail::fill_normal_avx512(out, count, key, offset); break;
    case Isa::avx2: detail::fill_normal_avx2(out, count, key, offset); break;
#endif
#if defined(EGGROLL_NEON_KERNELS)  // aarch64: NEON is always there, so it is the baseline
    default: detail::fill_normal_neon(out, count, key, offset); break;
#else
    default: detail::fill_normal_scalar(out, count, key, offset); break;
#endif
  }
}

const float* normals_memo(const NoiseKey& key, int64_t count, std::vector<float>& scratch) {
  if (count > kMemoNormals) {
    if (scratch.size() < size_t(count)) scratch.resize(size_t(count));
    fill_normal(scratch.data(), count, key, 0);
    return scratch.data();
  }
  // Direct-mapped by the noise index, so the consecutive k of a block of members (and their
  // antithetic partners) take different slots. The ISA is part of the tag only so that a
  // test switching paths with set_isa really runs the other path.
  struct Slot {
    NoiseKey key;
    int64_t count = -1;
    Isa isa = Isa::scalar;
    std::vector<float> z;
  };
  constexpr uint32_t kSlots = 8;  // 8 x 2048 floats: at most 64 KiB per thread
  thread_local Slot slots[kSlots];
  Slot& s = slots[key.noise_index % kSlots];
  const Isa isa = active_isa();
  if (s.count == count && s.isa == isa && s.key.seed == key.seed &&
      s.key.param_id == key.param_id && s.key.epoch_index == key.epoch_index &&
      s.key.noise_index == key.noise_index)
    return s.z.data();
  if (s.z.size() < size_t(count)) s.z.resize(size_t(count));
  s.count = -1;  // invalid until filled (fill_normal does not throw, but say so)
  fill_normal(s.z.data(), count, key, 0);
  s.key = key; s.count = count; s.isa = isa;
  return s.z.data();
}

NormalPlan check_normal(const TensorView& out, const NoiseKey& key, uint64_t offset) {
  check_dtype(out, "out", DType::float32);
  check_contiguous(out, "out");
  check_writeable(out, "out");
  const int64_t count = out.numel();
  if (offset > kStreamLength || uint64_t(count) > kStreamLength - offset)
    value_error("offset: offset + count must be <= 2^34 (the length of one noise stream), got " +
                std::to_string(offset) + " + " + std::to_string(count));
  NormalPlan p;
  p.out = out; p.key = key; p.offset = offset; p.count = count;
  return p;
}

void normal(const NormalPlan& p) {
  check_cpu(p.out, "out");
  float* out = p.out.ptr<float>();
  const int64_t count = p.count;
  // Chunks of at least 8K values (amortise the dispatch), about 4 per thread (balance);
  // a multiple of 64 so every chunk but the last runs whole SIMD steps.
  const int64_t per = count / (4 * int64_t(num_threads())) / 64 * 64;
  const int64_t kChunk = std::max<int64_t>(8192, std::min<int64_t>(per, 1 << 20));
  int64_t nchunks = (count + kChunk - 1) / kChunk;
  parallel_for(nchunks, 1, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) {
      int64_t lo = c * kChunk, n = std::min(kChunk, count - lo);
      fill_normal(out + lo, n, p.key, p.offset + uint64_t(lo));
    }
  });
}

PhiloxPlan check_philox4x32(const TensorView& counter, const TensorView& key,
                            const TensorView& out) {
  check_dtype(counter, "counter", DType::uint32);
  check_dtype(key, "key", DType::uint32);
  check_dtype(out, "out", DType::uint32);
  check_same_device(key, "key", counter, "counter");
  check_same_device(out, "out", counter, "counter");
  if (counter.ndim < 1 || counter.shape[counter.ndim - 1] != 4)
    value_error("counter: expected shape [..., 4], got " + counter.shape_str());
  if (key.ndim != 1 || key.shape[0] != 2)
    value_error("key: expected shape (2,), got " + key.shape_str());
  check_contiguous(counter, "counter"); check_contiguous(key, "key");
  check_contiguous(out, "out"); check_writeable(out, "out");
  bool same = out.ndim == counter.ndim;
  for (int i = 0; same && i < out.ndim; ++i) same = out.shape[i] == counter.shape[i];
  if (!same) shape_error("out", counter.shape_str(), out);
  check_no_overlap(out, "out", counter, "counter");
  check_no_overlap(out, "out", key, "key");
  PhiloxPlan p;
  p.counter = counter; p.key = key; p.out = out; p.blocks = counter.numel() / 4;
  return p;
}

void philox4x32(const PhiloxPlan& p) {
  check_cpu(p.counter, "counter");
  const uint32_t* c = p.counter.ptr<const uint32_t>();
  const uint32_t* kp = p.key.ptr<const uint32_t>();
  const uint32_t k[2] = {kp[0], kp[1]};
  uint32_t* o = p.out.ptr<uint32_t>();
  parallel_for(p.blocks, 1 << 14, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) philox4x32(c + 4 * i, k, o + 4 * i);
  });
}

}  // namespace eggroll
