// AVX-512 VNNI int8 GEMM kernel (vpdpbusd: u8 x s8 -> int32, 64 multiply-adds per
// instruction). x is fed as u8 (x + 128, a sign-bit flip) and 128 * sum_k W[j][k] is
// subtracted at the end: exact, because int32 wrap-around in the partial sums cancels.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#include "int8_kernel.h"

namespace eggroll::detail {
namespace {

// RR rows x CC blocks of 16 columns: RR * CC zmm accumulators over the k-groups [g0, g1).
// first: start from zero (else from C); last: subtract 128 * wsum (the u8 offset).
template <int RR, int CC>
inline void tile(const int8_t* Xp, int64_t Kp, const int8_t* Wp, const int32_t* wsum,
                 int32_t* C, int64_t ldc, int64_t g0, int64_t g1, bool first, bool last) {
  __m512i acc[RR][CC];
  for (int i = 0; i < RR; ++i)
    for (int c = 0; c < CC; ++c)
      acc[i][c] = first ? _mm512_setzero_si512() : _mm512_loadu_si512(C + i * ldc + c * 16);
  const __m512i flip = _mm512_set1_epi32(int32_t(0x80808080u));
  for (int64_t g = g0; g < g1; ++g) {
    __m512i w[CC];
    for (int c = 0; c < CC; ++c)
      w[c] = _mm512_loadu_si512(reinterpret_cast<const void*>(Wp + c * Kp * 16 + g * 64));
    for (int i = 0; i < RR; ++i) {
      int32_t xv;
      __builtin_memcpy(&xv, Xp + i * Kp + g * 4, 4);
      const __m512i xb = _mm512_xor_si512(_mm512_set1_epi32(xv), flip);
      for (int c = 0; c < CC; ++c) acc[i][c] = _mm512_dpbusd_epi32(acc[i][c], xb, w[c]);
    }
  }
  for (int c = 0; c < CC; ++c) {
    const __m512i corr = last ? _mm512_slli_epi32(_mm512_loadu_si512(wsum + c * 16), 7)
                              : _mm512_setzero_si512();
    for (int i = 0; i < RR; ++i)
      _mm512_storeu_si512(C + i * ldc + c * 16, _mm512_sub_epi32(acc[i][c], corr));
  }
}

}  // namespace

// K is split into slices of kSliceGroups groups so that the W panel of one micro-tile
// (4 blocks x 128 groups x 64 bytes = 32 KiB) stays in L1 while every row group of the
// task streams past it; partial sums wait in C (wrapping int32: exact, see the top).
void int8_gemm_avx512_vnni(const int8_t* Xp, int64_t rows, int64_t Kp, const int8_t* Wp,
                           const int32_t* wsum, int64_t nb, int32_t* C, int64_t ldc) {
  constexpr int64_t kSliceGroups = 128;
  const int64_t G = Kp / 4;
  for (int64_t g0 = 0; g0 < G; g0 += kSliceGroups) {
    const int64_t g1 = g0 + kSliceGroups < G ? g0 + kSliceGroups : G;
    const bool first = g0 == 0, last = g1 == G;
    int64_t jb = 0;
    for (; jb + 4 <= nb; jb += 4)
      for (int64_t i = 0; i < rows; i += 4)  // rows is a multiple of 16
        tile<4, 4>(Xp + i * Kp, Kp, Wp + jb * Kp * 16, wsum + jb * 16, C + i * ldc + jb * 16,
                   ldc, g0, g1, first, last);
    for (; jb < nb; ++jb)
      for (int64_t i = 0; i < rows; i += 4)
        tile<4, 1>(Xp + i * Kp, Kp, Wp + jb * Kp * 16, wsum + jb * 16, C + i * ldc + jb * 16,
                   ldc, g0, g1, first, last);
  }
}

}  // namespace eggroll::detail

#else  // not built for this target: cpu_has() never selects it; callers get the scalar kernel
#include "int8_kernel.h"
namespace eggroll::detail {
void int8_gemm_avx512_vnni(const int8_t* Xp, int64_t rows, int64_t Kp, const int8_t* Wp, const int32_t* wsum,
          int64_t nb, int32_t* C, int64_t ldc) {
  int8_gemm_scalar(Xp, rows, Kp, Wp, wsum, nb, C, ldc);
}
}  // namespace eggroll::detail
#endif
