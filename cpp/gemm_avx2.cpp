// AVX2 + FMA micro-tile: 6 rows x 16 columns (12 ymm accumulators), compiled with
// -mavx2 -mfma. Same FMA chains as the scalar tile (gemm_kernel.h): bit-identical to it.
#include "gemm_kernel.h"
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

namespace eggroll::detail {
namespace {

constexpr int MR = 6, NR = 16;

inline __m256i lane_mask(int count) {  // lanes < count set (count clamped to [0, 8])
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(count < 0 ? 0 : count > 8 ? 8 : count), idx);
}

void tile(int64_t kc, const float* Ap, const float* Bp, float* y, int64_t ldy, int mr, int nr,
          bool accumulate) {
  const __m256i m0 = lane_mask(nr), m1 = lane_mask(nr - 8);
  __m256 c0[MR], c1[MR];
  for (int i = 0; i < MR; ++i) c0[i] = c1[i] = _mm256_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_loadu_ps(Bp + k * NR), b1 = _mm256_loadu_ps(Bp + k * NR + 8);
    const float* a = Ap + k * MR;
    for (int i = 0; i < MR; ++i) {
      const __m256 ai = _mm256_broadcast_ss(a + i);
      c0[i] = _mm256_fmadd_ps(ai, b0, c0[i]);
      c1[i] = _mm256_fmadd_ps(ai, b1, c1[i]);
    }
  }
  for (int i = 0; i < mr; ++i) {
    if (accumulate) {
      c0[i] = _mm256_add_ps(_mm256_maskload_ps(y + i * ldy, m0), c0[i]);
      c1[i] = _mm256_add_ps(_mm256_maskload_ps(y + i * ldy + 8, m1), c1[i]);
    }
    _mm256_maskstore_ps(y + i * ldy, m0, c0[i]);
    _mm256_maskstore_ps(y + i * ldy + 8, m1, c1[i]);
  }
}

}  // namespace

GemmKernel gemm_kernel_avx2() { return {MR, NR, &tile, &pack_scalar}; }
}  // namespace eggroll::detail
#else
namespace eggroll::detail {
GemmKernel gemm_kernel_avx2() { return gemm_kernel_scalar(); }
}  // namespace eggroll::detail
#endif
