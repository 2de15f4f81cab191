// AVX-512 (16 lanes) instantiation of the noise kernel; compiled with -mavx512{f,dq,bw,vl}.
#include "noise_isa.h"
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#include "noise_kernel.h"

namespace eggroll::detail {
namespace {
struct Avx512 {
  static constexpr int L = 16;
  using U = __m512i; using F = __m512;
  static U set1(uint32_t a) { return _mm512_set1_epi32(int(a)); }
  static U iota() { return _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15); }
  static U add(U a, U b) { return _mm512_add_epi32(a, b); }
  static U sub(U a, U b) { return _mm512_sub_epi32(a, b); }
  static U bxor(U a, U b) { return _mm512_xor_si512(a, b); }
  static U band(U a, U b) { return _mm512_and_si512(a, b); }
  static U bor(U a, U b) { return _mm512_or_si512(a, b); }
  static U shr(U a, int n) { return _mm512_srli_epi32(a, unsigned(n)); }
  static U shl(U a, int n) { return _mm512_slli_epi32(a, unsigned(n)); }
  static U gt_i32(U a, U b) { return _mm512_movm_epi32(_mm512_cmpgt_epi32_mask(a, b)); }
  static U neg_mask(U a) { return _mm512_sub_epi32(_mm512_setzero_si512(), a); }
  static U select(U m, U a, U b) { return _mm512_ternarylogic_epi32(m, a, b, 0xCA); }  // m ? a : b
  // Philox on 16 lanes as two registers of 8 instances, one per 64-bit lane (low half):
  // vpmuludq then gives lo in place and hi after one shift, with no blends. The upper
  // halves of lo/c1/c3 hold garbage that never reaches a result: vpmuludq reads only the
  // low halves, and the final words are taken from the low halves.
  static void philox10(U& c0, U& c1, U& c2, U& c3, uint32_t k0, uint32_t k1) {
    const U m0 = _mm512_set1_epi64(kPhiloxM0), m1 = _mm512_set1_epi64(kPhiloxM1);
    U s[2][4];
    for (int h = 0; h < 2; ++h) {  // h = 0: even lanes, h = 1: odd lanes
      const U* c[4] = {&c0, &c1, &c2, &c3};
      for (int w = 0; w < 4; ++w) s[h][w] = h ? _mm512_srli_epi64(*c[w], 32) : *c[w];
    }
    for (int round = 0; round < 10; ++round) {
      const U kk0 = _mm512_set1_epi64(k0), kk1 = _mm512_set1_epi64(k1);
      for (int h = 0; h < 2; ++h) {
        U p0 = _mm512_mul_epu32(s[h][0], m0), p1 = _mm512_mul_epu32(s[h][2], m1);
        U n0 = _mm512_ternarylogic_epi32(_mm512_srli_epi64(p1, 32), s[h][1], kk0, 0x96);
        U n2 = _mm512_ternarylogic_epi32(_mm512_srli_epi64(p0, 32), s[h][3], kk1, 0x96);
        s[h][0] = n0; s[h][1] = p1; s[h][2] = n2; s[h][3] = p0;
      }
      k0 += kPhiloxW0; k1 += kPhiloxW1;
    }
    U* c[4] = {&c0, &c1, &c2, &c3};
    for (int w = 0; w < 4; ++w)  // lane 2j <- even instance j, lane 2j+1 <- odd instance j
      *c[w] = _mm512_mask_blend_epi32(0xAAAA, s[0][w], _mm512_slli_epi64(s[1][w], 32));
  }
  static void mulhilo(U a, uint32_t m, U& hi, U& lo) {
    U mm = _mm512_set1_epi32(int(m));
    U pe = _mm512_mul_epu32(a, mm);
    U po = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), mm);
    lo = _mm512_mask_blend_epi32(0xAAAA, pe, _mm512_slli_epi64(po, 32));
    hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(pe, 32), po);
  }
  static F cvt_i32(U a) { return _mm512_cvtepi32_ps(a); }
  static F u2f(U a) { return _mm512_castsi512_ps(a); }
  static U f2u(F f) { return _mm512_castps_si512(f); }
  static F fset1(float a) { return _mm512_set1_ps(a); }
  static F fadd(F a, F b) { return _mm512_add_ps(a, b); }
  static F fsub(F a, F b) { return _mm512_sub_ps(a, b); }
  static F fmul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F fdiv(F a, F b) { return _mm512_div_ps(a, b); }
  static F fsqrt(F a) { return _mm512_sqrt_ps(a); }
  // a..d hold words 0..3 of blocks 0..15; write them block-major (a0 b0 c0 d0 a1 ...).
  static void store4_interleaved(float* o, F a, F b, F c, F d) {
    F t0 = _mm512_unpacklo_ps(a, b), t1 = _mm512_unpackhi_ps(a, b);
    F t2 = _mm512_unpacklo_ps(c, d), t3 = _mm512_unpackhi_ps(c, d);
    // u_w holds blocks w, w+4, w+8, w+12 (one per 128-bit quarter)
    F u0 = _mm512_shuffle_ps(t0, t2, 0x44), u1 = _mm512_shuffle_ps(t0, t2, 0xEE);
    F u2 = _mm512_shuffle_ps(t1, t3, 0x44), u3 = _mm512_shuffle_ps(t1, t3, 0xEE);
    F v0 = _mm512_shuffle_f32x4(u0, u1, 0x44), v1 = _mm512_shuffle_f32x4(u2, u3, 0x44);
    F v2 = _mm512_shuffle_f32x4(u0, u1, 0xEE), v3 = _mm512_shuffle_f32x4(u2, u3, 0xEE);
    _mm512_storeu_ps(o + 0, _mm512_shuffle_f32x4(v0, v1, 0x88));
    _mm512_storeu_ps(o + 16, _mm512_shuffle_f32x4(v0, v1, 0xDD));
    _mm512_storeu_ps(o + 32, _mm512_shuffle_f32x4(v2, v3, 0x88));
    _mm512_storeu_ps(o + 48, _mm512_shuffle_f32x4(v2, v3, 0xDD));
  }
};
}  // namespace

void fill_normal_avx512(float* out, int64_t count, const NoiseKey& key, uint64_t offset) {
  fill_normal_impl<Twice<Twice<Avx512>>, Avx512>(out, count, key, offset);
}
}  // namespace eggroll::detail
#else
namespace eggroll::detail {
void fill_normal_avx512(float* out, int64_t count, const NoiseKey& key, uint64_t offset) {
  fill_normal_scalar(out, count, key, offset);
}
}  // namespace eggroll::detail
#endif
