// AVX2 int8 GEMM kernel (no VNNI): int8 sign-extended to int16, then vpmaddwd (int16 pairs
// -> int32), which is exact for every int8 input (vpmaddubsw would saturate).
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#include "int8_kernel.h"

namespace eggroll::detail {
namespace {

// RR rows x one 16-column block. A group of 16 bytes of Wp (4 columns x 4 k) widens to 16
// int16; vpmaddwd with (x0..x3) repeated gives lanes [c0: k0+k1, c0: k2+k3, c1: ..., ...].
template <int RR>
inline void tile(const int8_t* Xp, int64_t Kp, const int8_t* Wp, int32_t* C, int64_t ldc) {
  __m256i acc[RR][4];
  for (int i = 0; i < RR; ++i)
    for (int c = 0; c < 4; ++c) acc[i][c] = _mm256_setzero_si256();
  for (int64_t g = 0; g < Kp / 4; ++g) {
    __m256i w[4];
    for (int c = 0; c < 4; ++c)
      w[c] = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(Wp + g * 64 + c * 16)));
    for (int i = 0; i < RR; ++i) {
      int32_t xv;
      __builtin_memcpy(&xv, Xp + i * Kp + g * 4, 4);
      const __m128i x16 = _mm_cvtepi8_epi16(_mm_cvtsi32_si128(xv));
      const __m256i xb = _mm256_set1_epi64x(_mm_cvtsi128_si64(x16));
      for (int c = 0; c < 4; ++c) acc[i][c] = _mm256_add_epi32(acc[i][c], _mm256_madd_epi16(xb, w[c]));
    }
  }
  for (int i = 0; i < RR; ++i)
    for (int h = 0; h < 2; ++h) {
      // hadd within 128-bit lanes: [c0 c1 c4 c5 | c2 c3 c6 c7] -> reorder the 64-bit pairs.
      const __m256i s = _mm256_hadd_epi32(acc[i][2 * h], acc[i][2 * h + 1]);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(C + i * ldc + h * 8),
                          _mm256_permute4x64_epi64(s, 0xD8));
    }
}

}  // namespace

void int8_gemm_avx2(const int8_t* Xp, int64_t rows, int64_t Kp, const int8_t* Wp,
                    const int32_t*, int64_t nb, int32_t* C, int64_t ldc) {
  for (int64_t i = 0; i < rows; i += 2)
    for (int64_t jb = 0; jb < nb; ++jb)
      tile<2>(Xp + i * Kp, Kp, Wp + jb * Kp * 16, C + i * ldc + jb * 16, ldc);
}

}  // namespace eggroll::detail

#else  // not built for this target: cpu_has() never selects it; callers get the scalar kernel
#include "int8_kernel.h"
namespace eggroll::detail {
void int8_gemm_avx2(const int8_t* Xp, int64_t rows, int64_t Kp, const int8_t* Wp, const int32_t* wsum,
          int64_t nb, int32_t* C, int64_t ldc) {
  int8_gemm_scalar(Xp, rows, Kp, Wp, wsum, nb, C, ldc);
}
}  // namespace eggroll::detail
#endif
