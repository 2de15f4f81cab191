// Scalar (one lane) instantiation of the noise kernel: the fallback on any CPU.
#include "noise_kernel.h"
#include "noise_isa.h"

namespace eggroll::detail {
namespace {
struct Scalar {
  static constexpr int L = 1;
  using U = uint32_t; using F = float;
  static U set1(uint32_t a) { return a; }
  static U iota() { return 0u; }
  static U add(U a, U b) { return a + b; }
  static U sub(U a, U b) { return a - b; }
  static U bxor(U a, U b) { return a ^ b; }
  static U band(U a, U b) { return a & b; }
  static U bor(U a, U b) { return a | b; }
  static U shr(U a, int n) { return a >> n; }
  static U shl(U a, int n) { return a << n; }
  static U gt_i32(U a, U b) { return int32_t(a) > int32_t(b) ? ~0u : 0u; }
  static U neg_mask(U a) { return 0u - a; }
  static U select(U m, U a, U b) { return (a & m) | (b & ~m); }
  static void philox10(U& c0, U& c1, U& c2, U& c3, uint32_t k0, uint32_t k1) {
    philox_rounds<Scalar>(c0, c1, c2, c3, k0, k1);
  }
  static void mulhilo(U a, uint32_t m, U& hi, U& lo) {
    uint64_t p = uint64_t(a) * m; hi = uint32_t(p >> 32); lo = uint32_t(p);
  }
  static F cvt_i32(U a) { return float(int32_t(a)); }
  static F u2f(U a) { F f; std::memcpy(&f, &a, 4); return f; }
  static U f2u(F f) { U a; std::memcpy(&a, &f, 4); return a; }
  static F fset1(float a) { return a; }
  static F fadd(F a, F b) { return a + b; }
  static F fsub(F a, F b) { return a - b; }
  static F fmul(F a, F b) { return a * b; }
  static F fdiv(F a, F b) { return a / b; }
  static F fsqrt(F a) { return __builtin_sqrtf(a); }
  static void store4_interleaved(float* o, F a, F b, F c, F d) { o[0] = a; o[1] = b; o[2] = c; o[3] = d; }
};
}  // namespace

void fill_normal_scalar(float* out, int64_t count, const NoiseKey& key, uint64_t offset) {
  fill_normal_impl<Scalar>(out, count, key, offset);
}

void philox4x32_scalar(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]) {
  uint32_t c0 = counter[0], c1 = counter[1], c2 = counter[2], c3 = counter[3];
  philox_rounds<Scalar>(c0, c1, c2, c3, key[0], key[1]);
  out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

}  // namespace eggroll::detail
