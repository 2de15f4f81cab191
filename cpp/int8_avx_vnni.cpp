// AVX-VNNI int8 GEMM kernel (the VEX-encoded vpdpbusd on ymm: 32 multiply-adds per
// instruction) for CPUs with AVX-VNNI but no AVX-512. Same u8 trick as cpp/int8_avx512.cpp.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#include "int8_kernel.h"

namespace eggroll::detail {
namespace {

// RR rows x one 16-column block (two ymm halves of 8 columns each).
template <int RR>
inline void tile(const int8_t* Xp, int64_t Kp, const int8_t* Wp, const int32_t* wsum,
                 int32_t* C, int64_t ldc) {
  __m256i acc[RR][2];
  for (int i = 0; i < RR; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_si256();
  const __m256i flip = _mm256_set1_epi32(int32_t(0x80808080u));
  for (int64_t g = 0; g < Kp / 4; ++g) {
    const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(Wp + g * 64));
    const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(Wp + g * 64 + 32));
    for (int i = 0; i < RR; ++i) {
      int32_t xv;
      __builtin_memcpy(&xv, Xp + i * Kp + g * 4, 4);
      const __m256i xb = _mm256_xor_si256(_mm256_set1_epi32(xv), flip);
      acc[i][0] = _mm256_dpbusd_avx_epi32(acc[i][0], xb, w0);
      acc[i][1] = _mm256_dpbusd_avx_epi32(acc[i][1], xb, w1);
    }
  }
  for (int h = 0; h < 2; ++h) {
    const __m256i corr = _mm256_slli_epi32(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wsum + h * 8)), 7);
    for (int i = 0; i < RR; ++i)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(C + i * ldc + h * 8),
                          _mm256_sub_epi32(acc[i][h], corr));
  }
}

}  // namespace

void int8_gemm_avx_vnni(const int8_t* Xp, int64_t rows, int64_t Kp, const int8_t* Wp,
                        const int32_t* wsum, int64_t nb, int32_t* C, int64_t ldc) {
  for (int64_t i = 0; i < rows; i += 4)
    for (int64_t jb = 0; jb < nb; ++jb)
      tile<4>(Xp + i * Kp, Kp, Wp + jb * Kp * 16, wsum + jb * 16, C + i * ldc + jb * 16, ldc);
}

}  // namespace eggroll::detail

#else  // not built for this target: cpu_has() never selects it; callers get the scalar kernel
#include "int8_kernel.h"
namespace eggroll::detail {
void int8_gemm_avx_vnni(const int8_t* Xp, int64_t rows, int64_t Kp, const int8_t* Wp, const int32_t* wsum,
          int64_t nb, int32_t* C, int64_t ldc) {
  int8_gemm_scalar(Xp, rows, Kp, Wp, wsum, nb, C, ldc);
}
}  // namespace eggroll::detail
#endif
