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
  // Philox on 8 lanes as two registers of 4 instances, one per 64-bit lane (low half):
  // vpmuludq then leaves lo in place and hi one shift away, with no blends (a 32-bit-lane
  // mulhi/mullo pair costs 7 operations, this 2). The upper halves of lo/c1/c3 hold
  // garbage that never reaches a result: vpmuludq reads only the low halves, and the final
  // words are taken from the low halves. Two independent chains also double the ILP:
  // 621 -> 699 M normals/s on one Zen 4 core.
  static void philox10(U& c0, U& c1, U& c2, U& c3, uint32_t k0, uint32_t k1) {
    const U m0 = _mm256_set1_epi64x(kPhiloxM0), m1 = _mm256_set1_epi64x(kPhiloxM1);
    U s[2][4];
    U* c[4] = {&c0, &c1, &c2, &c3};
    for (int w = 0; w < 4; ++w) {  // h = 0: even lanes, h = 1: odd lanes
      s[0][w] = *c[w];
      s[1][w] = _mm256_srli_epi64(*c[w], 32);
    }
    for (int round = 0; round < 10; ++round) {
      const U kk0 = _mm256_set1_epi64x(k0), kk1 = _mm256_set1_epi64x(k1);
      for (int h = 0; h < 2; ++h) {
        U p0 = _mm256_mul_epu32(s[h][0], m0), p1 = _mm256_mul_epu32(s[h][2], m1);
        U n0 = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(p1, 32), s[h][1]), kk0);
        U n2 = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(p0, 32), s[h][3]), kk1);
        s[h][0] = n0; s[h][1] = p1; s[h][2] = n2; s[h][3] = p0;
      }
      k0 += kPhiloxW0; k1 += kPhiloxW1;
    }
    for (int w = 0; w < 4; ++w)  // lane 2j <- even instance j, lane 2j+1 <- odd instance j
      *c[w] = _mm256_blend_epi32(s[0][w], _mm256_slli_epi64(s[1][w], 32), 0xAA);
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
  fill_normal_impl<Twice<Twice<Avx2>>, Avx2>(out, count, key, offset);
}
}  // namespace eggroll::detail
#else
namespace eggroll::detail {
void fill_normal_avx2(float* out, int64_t count, const NoiseKey& key, uint64_t offset) {
  fill_normal_scalar(out, count, key, offset);
}
}  // namespace eggroll::detail
#endif
