// The noise kernel, written once over a small SIMD "ops" type and compiled per ISA
// (noise_scalar.cpp, noise_avx2.cpp, noise_avx512.cpp). Every float step is one IEEE
// operation (+ - * / sqrt, correctly rounded) in a fixed order with contraction off, so
// every ISA, the CUDA kernel and python/eggroll/reference.py produce the same bits.
// Parallel decomposition: one Philox instance per SIMD lane; lane l owns counter block
// b0 + l and writes normals 4*(b0+l) .. 4*(b0+l)+3.
#pragma once
#include <cstdint>
#include <cstring>
#include "eggroll/noise.h"

// The math below is shared with the CUDA kernels (cuda/common.cuh instantiates it with
// a one-lane device "ops" type); nvcc sees it as __host__ __device__, host compilers as plain.
#if defined(__CUDACC__)
#define EGGROLL_HD __host__ __device__
#else
#define EGGROLL_HD
#endif

namespace eggroll::detail {

// ---- constants (docs/noise.md gives their derivation) --------------------------------
constexpr uint32_t kPhiloxM0 = 0xD2511F53u, kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u, kPhiloxW1 = 0xBB67AE85u;
// ln(m) = 2s + s^3 (c1 + s^2 (c2 + s^2 (c3 + s^2 c4))), s = (m-1)/(m+1): atanh series.
constexpr float kLogC1 = 0x1.555556p-1f, kLogC2 = 0x1.99999ap-2f;
constexpr float kLogC3 = 0x1.24924ap-2f, kLogC4 = 0x1.c71c72p-3f;
constexpr float kLn2Hi = 0x1.62e4p-1f, kLn2Lo = 0x1.7f7d1cp-20f;  // hi has 13 bits: e*hi exact
// sin(2 pi r), cos(2 pi r) on |r| <= 1/8 turn: Taylor coefficients of (2 pi)^k / k!.
constexpr float kSin1 = 0x1.921fb6p+2f, kSin3 = -0x1.4abbcep+5f, kSin5 = 0x1.466bc6p+6f;
constexpr float kSin7 = -0x1.32d2ccp+6f, kSin9 = 0x1.507834p+5f;
constexpr float kCos2 = -0x1.3bd3ccp+4f, kCos4 = 0x1.03c1f0p+6f, kCos6 = -0x1.55d3c8p+6f;
constexpr float kCos8 = 0x1.e1f506p+5f, kCos10 = -0x1.a6d1f2p+4f;

// One Philox4x32-10 evaluation on L lanes. The key is the same in every lane.
template <class V>
EGGROLL_HD inline void philox_rounds(typename V::U& c0, typename V::U& c1, typename V::U& c2,
                          typename V::U& c3, uint32_t k0, uint32_t k1) {
  using U = typename V::U;
  for (int round = 0; round < 10; ++round) {
    U hi0, lo0, hi1, lo1;
    V::mulhilo(c0, kPhiloxM0, hi0, lo0);
    V::mulhilo(c2, kPhiloxM1, hi1, lo1);
    U n0 = V::bxor(V::bxor(hi1, c1), V::set1(k0));
    U n2 = V::bxor(V::bxor(hi0, c3), V::set1(k1));
    c0 = n0; c1 = lo1; c2 = n2; c3 = lo0;
    k0 += kPhiloxW0; k1 += kPhiloxW1;
  }
}

// R = sqrt(-2 ln u(x)), u(x) = (2 (x >> 9) + 1) 2^-24.
// Works on the odd integer v = 2 (x >> 9) + 1 < 2^24 so the exponent comes from bits:
// v = 2^E m, m in [1, 2); m > sqrt(2) is halved so ln m is taken on [0.707, 1.414].
template <class V>
EGGROLL_HD inline typename V::F box_muller_radius(typename V::U x) {
  using U = typename V::U; using F = typename V::F;
  U v = V::add(V::shl(V::shr(x, 9), 1), V::set1(1u));
  U bits = V::f2u(V::cvt_i32(v));                    // exact: v < 2^24
  U mant = V::band(bits, V::set1(0x007FFFFFu));
  U big = V::gt_i32(mant, V::set1(0x003504F3u));   // mantissa of sqrt(2) = 0x3FB504F3
  U mexp = V::select(big, V::set1(0x3F000000u), V::set1(0x3F800000u));
  F m = V::u2f(V::bor(mant, mexp));
  // e = E + big - 24 with E = (bits >> 23) - 127; big is all-ones (-1) or 0.
  U e = V::sub(V::sub(V::shr(bits, 23), V::set1(127u + 24u)), big);
  F ef = V::cvt_i32(e);
  F f = V::fsub(m, V::fset1(1.0f));
  F s = V::fdiv(f, V::fadd(m, V::fset1(1.0f)));
  F z = V::fmul(s, s);
  F p = V::fset1(kLogC4);
  p = V::fadd(V::fmul(p, z), V::fset1(kLogC3));
  p = V::fadd(V::fmul(p, z), V::fset1(kLogC2));
  p = V::fadd(V::fmul(p, z), V::fset1(kLogC1));
  F lnm = V::fadd(V::fadd(s, s), V::fmul(V::fmul(s, z), p));
  F lnu = V::fadd(V::fmul(ef, V::fset1(kLn2Hi)), V::fadd(V::fmul(ef, V::fset1(kLn2Lo)), lnm));
  return V::fsqrt(V::fmul(lnu, V::fset1(-2.0f)));
}

// (cos 2 pi u(x), sin 2 pi u(x)) with the quadrant taken exactly in integers:
// v = 2 (x >> 9) + 1, q = round(v / 2^22), r = (v - q 2^22) 2^-24 in (-1/8, 1/8) turn.
template <class V>
EGGROLL_HD inline void box_muller_angle(typename V::U x, typename V::F& c, typename V::F& s) {
  using U = typename V::U; using F = typename V::F;
  U v = V::add(V::shl(V::shr(x, 9), 1), V::set1(1u));
  U q = V::shr(V::add(v, V::set1(1u << 21)), 22);
  F r = V::fmul(V::cvt_i32(V::sub(v, V::shl(q, 22))), V::fset1(0x1p-24f));
  F r2 = V::fmul(r, r);
  F sp = V::fset1(kSin9);
  sp = V::fadd(V::fmul(sp, r2), V::fset1(kSin7));
  sp = V::fadd(V::fmul(sp, r2), V::fset1(kSin5));
  sp = V::fadd(V::fmul(sp, r2), V::fset1(kSin3));
  sp = V::fadd(V::fmul(sp, r2), V::fset1(kSin1));
  F sn = V::fmul(r, sp);
  F cp = V::fset1(kCos10);
  cp = V::fadd(V::fmul(cp, r2), V::fset1(kCos8));
  cp = V::fadd(V::fmul(cp, r2), V::fset1(kCos6));
  cp = V::fadd(V::fmul(cp, r2), V::fset1(kCos4));
  cp = V::fadd(V::fmul(cp, r2), V::fset1(kCos2));
  F cs = V::fadd(V::fmul(cp, r2), V::fset1(1.0f));
  // theta = q pi/2 + 2 pi r: odd quadrants swap sin and cos; signs by quadrant.
  U odd = V::neg_mask(V::band(q, V::set1(1u)));
  U cos_bits = V::select(odd, V::f2u(sn), V::f2u(cs));
  U sin_bits = V::select(odd, V::f2u(cs), V::f2u(sn));
  U q1 = V::add(q, V::set1(1u));                       // cos < 0 in quadrants 1, 2
  U cneg = V::shl(V::band(V::shr(q1, 1), V::set1(1u)), 31);
  U sneg = V::shl(V::band(V::shr(q, 1), V::set1(1u)), 31);  // sin < 0 in 2, 3
  c = V::u2f(V::bxor(cos_bits, cneg));
  s = V::u2f(V::bxor(sin_bits, sneg));
}

// Writes normals 4*b0 .. 4*(b0 + V::L) - 1 of the stream to out (stream order).
template <class V>
EGGROLL_HD inline void normal_blocks(float* out, const NoiseKey& key, uint32_t b0) {
  using U = typename V::U; using F = typename V::F;
  U c0 = V::add(V::iota(), V::set1(b0));
  U c1 = V::set1(key.noise_index), c2 = V::set1(key.epoch_index), c3 = V::set1(key.param_id);
  V::philox10(c0, c1, c2, c3, uint32_t(key.seed), uint32_t(key.seed >> 32));
  F r0 = box_muller_radius<V>(c0), r1 = box_muller_radius<V>(c2);
  F cos0, sin0, cos1, sin1;
  box_muller_angle<V>(c1, cos0, sin0);
  box_muller_angle<V>(c3, cos1, sin1);
  V::store4_interleaved(out, V::fmul(r0, cos0), V::fmul(r0, sin0),
                        V::fmul(r1, cos1), V::fmul(r1, sin1));
}

// out[0 .. count) = stream[offset .. offset + count): whole SIMD chunks go straight to
// out; the ragged ends pass through a small buffer.
template <class V>
inline void fill_normal_impl(float* out, int64_t count, const NoiseKey& key, uint64_t offset) {
  constexpr int64_t kChunk = 4 * V::L;  // normals per SIMD step
  alignas(64) float tmp[kChunk];
  uint64_t j = offset;
  const uint64_t end = offset + uint64_t(count);
  while (j < end) {
    uint64_t chunk_start = j & ~uint64_t(3);  // first value of block j/4
    if (chunk_start == j && end - j >= uint64_t(kChunk)) {
      normal_blocks<V>(out + (j - offset), key, uint32_t(j >> 2));
      j += kChunk;
    } else {
      normal_blocks<V>(tmp, key, uint32_t(j >> 2));
      uint64_t avail = chunk_start + kChunk - j;
      uint64_t n = end - j < avail ? end - j : avail;
      std::memcpy(out + (j - offset), tmp + (j - chunk_start), n * sizeof(float));
      j += n;
    }
  }
}

}  // namespace eggroll::detail
