// AVX-512 micro-tile: 14 rows x 32 columns (28 zmm accumulators), compiled with
// -mavx512f -mfma. Each accumulator lane is one output's FMA chain over k, exactly the
// scalar tile's sequence (gemm_kernel.h), so results are bit-identical to it.
#include "gemm_kernel.h"
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

namespace eggroll::detail {
namespace {

constexpr int MR = 14, NR = 32;

template <bool kFull>
inline void tile_impl(int64_t kc, const float* Ap, const float* Bp, float* y, int64_t ldy,
                      int mr, int nr, bool accumulate) {
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
  if constexpr (kFull) {
    // Full tile: compile-time loops keep the accumulators in registers (no spill to a
    // stack array indexed by the run-time row count).
    if (accumulate) {
      for (int i = 0; i < MR; ++i) {
        _mm512_storeu_ps(y + i * ldy, _mm512_add_ps(_mm512_loadu_ps(y + i * ldy), c0[i]));
        _mm512_storeu_ps(y + i * ldy + 16, _mm512_add_ps(_mm512_loadu_ps(y + i * ldy + 16), c1[i]));
      }
    } else {
      for (int i = 0; i < MR; ++i) {
        _mm512_storeu_ps(y + i * ldy, c0[i]);
        _mm512_storeu_ps(y + i * ldy + 16, c1[i]);
      }
    }
  } else {
    const __mmask16 m0 = __mmask16(nr >= 16 ? 0xFFFF : (1u << nr) - 1u);
    const __mmask16 m1 = __mmask16(nr >= 32 ? 0xFFFF : nr <= 16 ? 0 : (1u << (nr - 16)) - 1u);
    for (int i = 0; i < mr; ++i) {
      if (accumulate) {
        c0[i] = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, y + i * ldy), c0[i]);
        c1[i] = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, y + i * ldy + 16), c1[i]);
      }
      _mm512_mask_storeu_ps(y + i * ldy, m0, c0[i]);
      _mm512_mask_storeu_ps(y + i * ldy + 16, m1, c1[i]);
    }
  }
}

void tile(int64_t kc, const float* Ap, const float* Bp, float* y, int64_t ldy, int mr, int nr,
          bool accumulate) {
  if (mr == MR && nr == NR) tile_impl<true>(kc, Ap, Bp, y, ldy, mr, nr, accumulate);
  else tile_impl<false>(kc, Ap, Bp, y, ldy, mr, nr, accumulate);
}

// In-register 16 x 16 transpose: r[i] (row i) becomes column i. Four shuffle stages:
// pairs of rows (unpack), quads (shuffle_ps), then 128-bit chunks across quads (twice).
inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int g = 0; g < 4; ++g) {  // r[4g + e], chunk q: rows 4g..4g+3 at column 4q + e
    r[4 * g + 0] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
    r[4 * g + 1] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
    r[4 * g + 2] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
    r[4 * g + 3] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
  }
  for (int e = 0; e < 4; ++e) {
    t[4 * e + 0] = _mm512_shuffle_f32x4(r[e], r[4 + e], 0x88);
    t[4 * e + 1] = _mm512_shuffle_f32x4(r[e], r[4 + e], 0xDD);
    t[4 * e + 2] = _mm512_shuffle_f32x4(r[8 + e], r[12 + e], 0x88);
    t[4 * e + 3] = _mm512_shuffle_f32x4(r[8 + e], r[12 + e], 0xDD);
  }
  for (int e = 0; e < 4; ++e) {
    r[e] = _mm512_shuffle_f32x4(t[4 * e], t[4 * e + 2], 0x88);
    r[e + 8] = _mm512_shuffle_f32x4(t[4 * e], t[4 * e + 2], 0xDD);
    r[e + 4] = _mm512_shuffle_f32x4(t[4 * e + 1], t[4 * e + 3], 0x88);
    r[e + 12] = _mm512_shuffle_f32x4(t[4 * e + 1], t[4 * e + 3], 0xDD);
  }
}

// Same result as pack_scalar, 16 x 16 blocks at a time through transpose16.
void pack(const float* src, int64_t ld, int64_t valid, int64_t R, int64_t kc, float* dst) {
  const int64_t kfull = kc / 16 * 16;
  for (int64_t i0 = 0; i0 < R; i0 += 16) {
    const int64_t width = R - i0 < 16 ? R - i0 : 16;  // lanes of dst rows owned by this band
    const __mmask16 wm = __mmask16(width >= 16 ? 0xFFFF : (1u << width) - 1u);
    for (int64_t k = 0; k < kfull; k += 16) {
      __m512 r[16];
      for (int i = 0; i < 16; ++i)
        r[i] = (i0 + i < valid && i < width) ? _mm512_loadu_ps(src + (i0 + i) * ld + k) : _mm512_setzero_ps();
      transpose16(r);
      for (int kk = 0; kk < 16; ++kk) _mm512_mask_storeu_ps(dst + (k + kk) * R + i0, wm, r[kk]);
    }
  }
  for (int64_t i = 0; i < R; ++i)
    for (int64_t k = kfull; k < kc; ++k) dst[k * R + i] = i < valid ? src[i * ld + k] : 0.0f;
}

}  // namespace

// The small-row path is the AVX2 one: with at most 8 rows a zmm's 16 lanes would be half empty.
GemmKernel gemm_kernel_avx512() { return {MR, NR, &tile, &pack, gemm_kernel_avx2().small}; }
}  // namespace eggroll::detail
#else
namespace eggroll::detail {
GemmKernel gemm_kernel_avx512() { return gemm_kernel_scalar(); }
}  // namespace eggroll::detail
#endif
