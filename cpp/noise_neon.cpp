// aarch64 NEON (4 lanes) instantiation of the noise kernel, the baseline path on 64-bit ARM
// (Advanced SIMD is part of ARMv8-A). Every float step is one correctly rounded NEON
// operation (vaddq/vmulq/vdivq/vsqrtq, never vfma; built with -ffp-contract=off), so the bits
// are those of every other path.
#include "noise_isa.h"
#if defined(__aarch64__)
#include <arm_neon.h>
#include "noise_kernel.h"

namespace eggroll::detail {
namespace {
struct Neon {
  static constexpr int L = 4;
  using U = uint32x4_t; using F = float32x4_t;
  static U set1(uint32_t a) { return vdupq_n_u32(a); }
  static U iota() { static const uint32_t k[4] = {0, 1, 2, 3}; return vld1q_u32(k); }
  static U add(U a, U b) { return vaddq_u32(a, b); }
  static U sub(U a, U b) { return vsubq_u32(a, b); }
  static U bxor(U a, U b) { return veorq_u32(a, b); }
  static U band(U a, U b) { return vandq_u32(a, b); }
  static U bor(U a, U b) { return vorrq_u32(a, b); }
  // Shifts by a register count (vshrq_n needs an immediate): a negative count shifts right.
  static U shr(U a, int n) { return vshlq_u32(a, vdupq_n_s32(-n)); }
  static U shl(U a, int n) { return vshlq_u32(a, vdupq_n_s32(n)); }
  static U gt_i32(U a, U b) { return vcgtq_s32(vreinterpretq_s32_u32(a), vreinterpretq_s32_u32(b)); }
  static U neg_mask(U a) { return vsubq_u32(vdupq_n_u32(0), a); }
  static U select(U m, U a, U b) { return vbslq_u32(m, a, b); }
  static void philox10(U& c0, U& c1, U& c2, U& c3, uint32_t k0, uint32_t k1) {
    philox_rounds<Neon>(c0, c1, c2, c3, k0, k1);
  }
  // 32 x 32 -> 64-bit products of lanes 0-1 and 2-3, then the high and low words unzipped.
  static void mulhilo(U a, uint32_t m, U& hi, U& lo) {
    const uint32x4_t p01 = vreinterpretq_u32_u64(vmull_u32(vget_low_u32(a), vdup_n_u32(m)));
    const uint32x4_t p23 = vreinterpretq_u32_u64(vmull_high_u32(a, vdupq_n_u32(m)));
    lo = vuzp1q_u32(p01, p23);
    hi = vuzp2q_u32(p01, p23);
  }
  static F cvt_i32(U a) { return vcvtq_f32_s32(vreinterpretq_s32_u32(a)); }
  static F u2f(U a) { return vreinterpretq_f32_u32(a); }
  static U f2u(F f) { return vreinterpretq_u32_f32(f); }
  static F fset1(float a) { return vdupq_n_f32(a); }
  static F fadd(F a, F b) { return vaddq_f32(a, b); }
  static F fsub(F a, F b) { return vsubq_f32(a, b); }
  static F fmul(F a, F b) { return vmulq_f32(a, b); }
  static F fdiv(F a, F b) { return vdivq_f32(a, b); }
  static F fsqrt(F a) { return vsqrtq_f32(a); }
  // a..d hold words 0..3 of blocks 0..3; vst4q writes them block-major (a0 b0 c0 d0 a1 ...).
  static void store4_interleaved(float* o, F a, F b, F c, F d) {
    vst4q_f32(o, float32x4x4_t{{a, b, c, d}});
  }
};
}  // namespace

void fill_normal_neon(float* out, int64_t count, const NoiseKey& key, uint64_t offset) {
  fill_normal_impl<Twice<Twice<Neon>>, Neon>(out, count, key, offset);
}
}  // namespace eggroll::detail
#endif
