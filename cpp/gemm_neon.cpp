// aarch64 NEON GEMM micro-tile: 8 rows x 12 columns (24 q-register accumulators), the
// baseline path on 64-bit ARM (Advanced SIMD is part of ARMv8-A, so every aarch64 CPU runs it;
// set_isa calls it 'scalar'). vfmaq_laneq_f32 is one fused multiply-add per lane, so each
// accumulator lane is exactly the scalar tile's std::fma chain (gemm_kernel.h): same bits.
#include "gemm_kernel.h"
#if defined(__aarch64__)
#include <arm_neon.h>

namespace eggroll::detail {
namespace {

constexpr int MR = 8, NR = 12;

// 24 accumulators + 3 B vectors + 2 A vectors = 29 of the 32 registers, all named (an array
// indexed at run time would live on the stack).
#define EGGROLL_NEON_ROWS(X) X(0, a0, 0) X(1, a0, 1) X(2, a0, 2) X(3, a0, 3) \
                             X(4, a1, 0) X(5, a1, 1) X(6, a1, 2) X(7, a1, 3)

template <bool kFull>
inline void tile_impl(int64_t kc, const float* Ap, const float* Bp, float* y, int64_t ldy,
                      int mr, int nr, bool accumulate) {
#define DECL(i, v, l) float32x4_t c##i##0 = vdupq_n_f32(0.0f), c##i##1 = c##i##0, c##i##2 = c##i##0;
  EGGROLL_NEON_ROWS(DECL)
#undef DECL
  for (int64_t k = 0; k < kc; ++k) {
    const float32x4_t b0 = vld1q_f32(Bp + k * NR), b1 = vld1q_f32(Bp + k * NR + 4),
                      b2 = vld1q_f32(Bp + k * NR + 8);
    const float32x4_t a0 = vld1q_f32(Ap + k * MR), a1 = vld1q_f32(Ap + k * MR + 4);
#define STEP(i, v, l)                          \
  c##i##0 = vfmaq_laneq_f32(c##i##0, b0, v, l); \
  c##i##1 = vfmaq_laneq_f32(c##i##1, b1, v, l); \
  c##i##2 = vfmaq_laneq_f32(c##i##2, b2, v, l);
    EGGROLL_NEON_ROWS(STEP)
#undef STEP
  }
  if (kFull) {
#define PUT(i, v, l)                                                      \
  {                                                                       \
    float* yr = y + i * ldy;                                              \
    if (accumulate) {                                                     \
      c##i##0 = vaddq_f32(vld1q_f32(yr), c##i##0);                        \
      c##i##1 = vaddq_f32(vld1q_f32(yr + 4), c##i##1);                    \
      c##i##2 = vaddq_f32(vld1q_f32(yr + 8), c##i##2);                    \
    }                                                                     \
    vst1q_f32(yr, c##i##0); vst1q_f32(yr + 4, c##i##1); vst1q_f32(yr + 8, c##i##2); \
  }
    EGGROLL_NEON_ROWS(PUT)
#undef PUT
  } else {
    float buf[MR * NR];
#define SPILL(i, v, l) vst1q_f32(buf + i * NR, c##i##0); vst1q_f32(buf + i * NR + 4, c##i##1); \
                       vst1q_f32(buf + i * NR + 8, c##i##2);
    EGGROLL_NEON_ROWS(SPILL)
#undef SPILL
    for (int i = 0; i < mr; ++i)
      for (int j = 0; j < nr; ++j)
        y[i * ldy + j] = accumulate ? y[i * ldy + j] + buf[i * NR + j] : buf[i * NR + j];
  }
}
#undef EGGROLL_NEON_ROWS

void tile(int64_t kc, const float* Ap, const float* Bp, float* y, int64_t ldy, int mr, int nr,
          bool accumulate) {
  if (mr == MR && nr == NR) tile_impl<true>(kc, Ap, Bp, y, ldy, mr, nr, accumulate);
  else tile_impl<false>(kc, Ap, Bp, y, ldy, mr, nr, accumulate);
}

}  // namespace

GemmKernel gemm_kernel_neon() { return {MR, NR, &tile, &pack_scalar}; }
}  // namespace eggroll::detail
#endif
