// Noise: validation, run-time ISA dispatch, and the threaded fill (spec/noise.md).
#include "eggroll/noise.h"
#include <algorithm>
#include <atomic>
#include <string>
#include "eggroll/check.h"
#include "eggroll/parallel.h"
#include "noise_isa.h"

namespace eggroll {
namespace {

// The x86 paths exist only where their kernels were built (EGGROLL_X86_KERNELS, set by the
// build on x86-64); elsewhere only the scalar path, and no CPUID.
bool cpu_has(Isa isa) {
#if defined(EGGROLL_X86_KERNELS) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  switch (isa) {
    case Isa::scalar: return true;
    // The GEMM tiles of both paths are FMA chains (vfmadd): no CPU with AVX2 lacks FMA3 in
    // practice, but a path is only offered where every instruction it uses exists.
    case Isa::avx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Isa::avx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("fma");
  }
  return false;
#else
  return isa == Isa::scalar;
#endif
}

std::atomic<int> g_isa{-1};

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::scalar: return "scalar";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
  }
  return "unknown";
}

Isa best_isa() {
  if (cpu_has(Isa::avx512)) return Isa::avx512;
  if (cpu_has(Isa::avx2)) return Isa::avx2;
  return Isa::scalar;
}

Isa active_isa() {
  int v = g_isa.load();
  if (v < 0) { v = int(best_isa()); g_isa.store(v); }
  return Isa(v);
}

void set_isa(Isa isa) {
  if (!cpu_has(isa))
    value_error(std::string("name: this CPU does not support ") + isa_name(isa));
  g_isa.store(int(isa));
}

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

void normal(const TensorView& out, const NoiseKey& key, uint64_t offset) {
  check_cpu(out, "out");
  check_dtype(out, "out", DType::float32);
  check_contiguous(out, "out");
  const int64_t count = out.numel();
  if (offset > kStreamLength || uint64_t(count) > kStreamLength - offset)
    value_error("offset: offset + count must be <= 2^34 (the length of one noise stream)");
  float* p = out.ptr<float>();
  // Chunks of at least 8K values (amortise the dispatch), about 4 per thread (balance);
  // a multiple of 64 so every chunk but the last runs whole SIMD steps.
  const int64_t per = count / (4 * int64_t(num_threads())) / 64 * 64;
  const int64_t kChunk = std::max<int64_t>(8192, std::min<int64_t>(per, 1 << 20));
  int64_t nchunks = (count + kChunk - 1) / kChunk;
  parallel_for(nchunks, 1, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) {
      int64_t lo = c * kChunk, n = std::min(kChunk, count - lo);
      fill_normal(p + lo, n, key, offset + uint64_t(lo));
    }
  });
}

void philox4x32(const TensorView& counter, const TensorView& key, const TensorView& out) {
  check_cpu(counter, "counter"); check_cpu(key, "key"); check_cpu(out, "out");
  check_dtype(counter, "counter", DType::uint32);
  check_dtype(key, "key", DType::uint32);
  check_dtype(out, "out", DType::uint32);
  check_contiguous(counter, "counter"); check_contiguous(out, "out");
  if (counter.ndim < 1 || counter.shape[counter.ndim - 1] != 4)
    value_error("counter: expected shape [..., 4], got " + counter.shape_str());
  if (key.ndim != 1 || key.shape[0] != 2)
    value_error("key: expected shape (2,), got " + key.shape_str());
  if (out.numel() != counter.numel())
    value_error("out: expected " + counter.shape_str() + ", got " + out.shape_str());
  const uint32_t* c = counter.ptr<const uint32_t>();
  const uint32_t* kp = key.ptr<const uint32_t>();
  uint32_t k[2] = {kp[0], kp[key.strides[0]]};
  uint32_t* o = out.ptr<uint32_t>();
  for (int64_t i = 0; i < counter.numel() / 4; ++i) philox4x32(c + 4 * i, k, o + 4 * i);
}

}  // namespace eggroll
