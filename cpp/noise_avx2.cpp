// AVX2 (8 lanes) instantiation of the noise kernel; compiled with -mavx2 only (no FMA).
#include "noise_isa.h"
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#include "noise_kernel.h"

namespace eggroll::detail {
namespace {
struct Avx2 {
  static constexpr int L = 8;
  using U = __m256i; using F = __m256;
  static U set1(uint32_t a) { return _mm256_set1_epi32(int(a)); }
  static U iota() { return _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7); }
  static U add(U a, U b) { return _mm256_add_epi32(a, b); }
  static U sub(U a, U b) { return _mm256_sub_epi32(a, b); }
  static U bxor(U a, U b) { return _mm256_xor_si256(a, b); }
  static U band(U a, U b) { return _mm256_and_si256(a, b); }
  static U bor(U a, U b) { return _mm256_or_si256(a, b); }
  static U shr(U a, int n) { return _mm256_srli_epi32(a, n); }
  static U shl(U a, int n) { return _mm256_slli_epi32(a, n); }
  static U gt_i32(U a, U b) { return _mm256_cmpgt_epi32(a, b); }
  static U neg_mask(U a) { return _mm256_sub_epi32(_mm256_setzero_si256(), a); }
  static U select(U m, U a, U b) { return _mm256_blendv_epi8(b, a, m); }
  static void philox10(U& c0, U& c1, U& c2, U& c3, uint32_t k0, uint32_t k1) {
    philox_rounds<Avx2>(c0, c1, c2, c3, k0, k1);
  }
  static void mulhilo(U a, uint32_t m, U& hi, U& lo) {
    U mm = _mm256_set1_epi32(int(m));
    U pe = _mm256_mul_epu32(a, mm);                          // lanes 0,2,4,6 -> 64-bit
    U po = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), mm);   // lanes 1,3,5,7
    lo = _mm256_blend_epi32(pe, _mm256_slli_epi64(po, 32), 0xAA);
    hi = _mm256_blend_epi32(_mm256_srli_epi64(pe, 32), po, 0xAA);
  }
  static F cvt_i32(U a) { return _mm256_cvtepi32_ps(a); }
  static F u2f(U a) { return _mm256_castsi256_ps(a); }
  static U f2u(F f) { return _mm256_castps_si256(f); }
  static F fset1(float a) { return _mm256_set1_ps(a); }
  static F fadd(F a, F b) { return _mm256_add_ps(a, b); }
  static F fsub(F a, F b) { return _mm256_sub_ps(a, b); }
  static F fmul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F fdiv(F a, F b) { return _mm256_div_ps(a, b); }
  static F fsqrt(F a) { return _mm256_sqrt_ps(a); }
  // a..d hold words 0..3 of blocks 0..7; write them block-major (a0 b0 c0 d0 a1 ...).
  static void store4_interleaved(float* o, F a, F b, F c, F d) {
    F t0 = _mm256_unpacklo_ps(a, b), t1 = _mm256_unpackhi_ps(a, b);
    F t2 = _mm256_unpacklo_ps(c, d), t3 = _mm256_unpackhi_ps(c, d);
    F u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    F u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    _mm256_storeu_ps(o + 0, _mm256_permute2f128_ps(u0, u1, 0x20));
    _mm256_storeu_ps(o + 8, _mm256_permute2f128_ps(u2, u3, 0x20));
    _mm256_storeu_ps(o + 16, _mm256_permute2f128_ps(u0, u1, 0x31));
    _mm256_storeu_ps(o + 24, _mm256_permute2f128_ps(u2, u3, 0x31));
  }
};
}  // namespace

void fill_normal_avx2(float* out, int64_t count, const NoiseKey& key, uint64_t offset) {
  fill_normal_impl<Avx2>(out, count, key, offset);
}
}  // namespace eggroll::detail
#else
namespace eggroll::detail {
void fill_normal_avx2(float* out, int64_t count, const NoiseKey& key, uint64_t offset) {
  fill_normal_scalar(out, count, key, offset);
}
}  // namespace eggroll::detail
#endif
