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
// a one-lane device "ops" type): EGGROLL_HD (eggroll/noise.h) makes it __host__ __device__.

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
  U v = V::bor(V::shr(x, 8), V::set1(1u));          // = 2 (x >> 9) + 1
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
  U v = V::bor(V::shr(x, 8), V::set1(1u));          // = 2 (x >> 9) + 1
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
  U cneg = V::shl(V::shr(q1, 1), 31);                 // bit 1 of q1 -> sign bit
  U sneg = V::shl(V::shr(q, 1), 31);                  // sin < 0 in 2, 3
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

// V's operations on two registers side by side (L = 2 V::L lanes; lanes V::L .. 2 V::L - 1 in
// the second): two independent copies of every dependency chain, which the core interleaves.
// The Box-Muller divide, square root and polynomials and the ten Philox rounds are long
// chains; one register of them leaves the vector ports idle. Twice<Twice<V>> (four
// registers) measured fastest on Zen 4: AVX2 706 -> 872 M normals/s, AVX-512 987 -> 1209
// (eight: 773 and 1227). Same operations per lane, so the same bits.
template <class V>
struct Twice {
  static constexpr int L = 2 * V::L;
  struct U { typename V::U a, b; };
  struct F { typename V::F a, b; };
  static U set1(uint32_t v) { return {V::set1(v), V::set1(v)}; }
  static U iota() { return {V::iota(), V::add(V::iota(), V::set1(uint32_t(V::L)))}; }
#define EGGROLL_TWICE(R, T, name) \
  static R name(T x, T y) { return {V::name(x.a, y.a), V::name(x.b, y.b)}; }
  EGGROLL_TWICE(U, U, add) EGGROLL_TWICE(U, U, sub) EGGROLL_TWICE(U, U, bxor)
  EGGROLL_TWICE(U, U, band) EGGROLL_TWICE(U, U, bor) EGGROLL_TWICE(U, U, gt_i32)
  EGGROLL_TWICE(F, F, fadd) EGGROLL_TWICE(F, F, fsub) EGGROLL_TWICE(F, F, fmul)
  EGGROLL_TWICE(F, F, fdiv)
#undef EGGROLL_TWICE
  static U shr(U x, int n) { return {V::shr(x.a, n), V::shr(x.b, n)}; }
  static U shl(U x, int n) { return {V::shl(x.a, n), V::shl(x.b, n)}; }
  static U neg_mask(U x) { return {V::neg_mask(x.a), V::neg_mask(x.b)}; }
  static U select(U m, U x, U y) { return {V::select(m.a, x.a, y.a), V::select(m.b, x.b, y.b)}; }
  static void philox10(U& c0, U& c1, U& c2, U& c3, uint32_t k0, uint32_t k1) {
    V::philox10(c0.a, c1.a, c2.a, c3.a, k0, k1);
    V::philox10(c0.b, c1.b, c2.b, c3.b, k0, k1);
  }
  static F cvt_i32(U x) { return {V::cvt_i32(x.a), V::cvt_i32(x.b)}; }
  static F u2f(U x) { return {V::u2f(x.a), V::u2f(x.b)}; }
  static U f2u(F x) { return {V::f2u(x.a), V::f2u(x.b)}; }
  static F fset1(float v) { return {V::fset1(v), V::fset1(v)}; }
  static F fsqrt(F x) { return {V::fsqrt(x.a), V::fsqrt(x.b)}; }
  // Blocks 0 .. V::L - 1 from the first registers, then the next V::L from the second.
  static void store4_interleaved(float* o, F a, F b, F c, F d) {
    V::store4_interleaved(o, a.a, b.a, c.a, d.a);
    V::store4_interleaved(o + 4 * V::L, a.b, b.b, c.b, d.b);
  }
};

// out[0 .. count) = stream[offset .. offset + count): whole Wide chunks (4 Wide::L values
// from a chunk-aligned stream position) go straight to out; the ragged ends run one V step
// at a time through a small buffer, so a short fill never computes a whole Wide chunk.
// Wide is V or Twice<...<V>>: the same lanes, the same bits.
template <class Wide, class V = Wide>
inline void fill_normal_impl(float* out, int64_t count, const NoiseKey& key, uint64_t offset) {
  constexpr int64_t kWide = 4 * Wide::L, kChunk = 4 * V::L;  // normals per step
  alignas(64) float tmp[kChunk];
  uint64_t j = offset;
  const uint64_t end = offset + uint64_t(count);
  while (j < end) {
    if ((j & 3) == 0 && end - j >= uint64_t(kWide)) {
      normal_blocks<Wide>(out + (j - offset), key, uint32_t(j >> 2));
      j += kWide;
      continue;
    }
    const uint64_t chunk_start = j & ~uint64_t(3);  // first value of block j/4
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
