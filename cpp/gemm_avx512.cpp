// AVX-512 micro-tile: 12 rows x 32 columns (24 zmm accumulators), compiled with
// -mavx512f -mfma. Each accumulator lane is one output's FMA chain over k, exactly the
// scalar tile's sequence (gemm_kernel.h), so results are bit-identical to it.
#include "gemm_kernel.h"
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

namespace eggroll::detail {
namespace {

constexpr int MR = 12, NR = 32;

void tile(int64_t kc, const float* Ap, const float* Bp, float* y, int64_t ldy, int mr, int nr,
          bool accumulate) {
  const __mmask16 m0 = __mmask16(nr >= 16 ? 0xFFFF : (1u << nr) - 1u);
  const __mmask16 m1 = __mmask16(nr >= 32 ? 0xFFFF : nr <= 16 ? 0 : (1u << (nr - 16)) - 1u);
  __m512 c0[MR], c1[MR];
  for (int i = 0; i < MR; ++i) c0[i] = c1[i] = _mm512_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    const __m512 b0 = _mm512_loadu_ps(Bp + k * NR), b1 = _mm512_loadu_ps(Bp + k * NR + 16);
    const float* a = Ap + k * MR;
    for (int i = 0; i < MR; ++i) {
      const __m512 ai = _mm512_set1_ps(a[i]);
      c0[i] = _mm512_fmadd_ps(ai, b0, c0[i]);
      c1[i] = _mm512_fmadd_ps(ai, b1, c1[i]);
    }
  }
  for (int i = 0; i < mr; ++i) {
    if (accumulate) {
      c0[i] = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, y + i * ldy), c0[i]);
      c1[i] = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, y + i * ldy + 16), c1[i]);
    }
    _mm512_mask_storeu_ps(y + i * ldy, m0, c0[i]);
    _mm512_mask_storeu_ps(y + i * ldy + 16, m1, c1[i]);
  }
}

}  // namespace

GemmKernel gemm_kernel_avx512() { return {MR, NR, &tile}; }
}  // namespace eggroll::detail
#else
namespace eggroll::detail {
GemmKernel gemm_kernel_avx512() { return gemm_kernel_scalar(); }
}  // namespace eggroll::detail
#endif
