// Small private building blocks shared by perturb.cpp and update.cpp.
#pragma once
#include <cstdint>
#include <string>
#include <vector>
#include "eggroll/check.h"
#include "eggroll/perturb.h"

namespace eggroll::detail {

// Hot loops are compiled for AVX-512, AVX2 and baseline x86-64 and picked at load time
// (GCC/Clang function multiversioning). Results do not depend on the clone: see dot16.
#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__))
#define EGGROLL_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define EGGROLL_CLONES
#endif

// Dot product with 16 partial sums in a fixed order: whatever vector width the compiler
// picks, every build adds the same numbers in the same order (and never fuses into FMA),
// so results do not depend on the ISA or on which thread computed them.
float dot16(const float* a, const float* b, int64_t n);
// y[0:n] += a * x[0:n]  (elementwise, so identical on every ISA)
void axpy(float* y, float a, const float* x, int64_t n);

// Member i's (noise index, sign) and the coefficient s_i * scale rounded once to float.
inline float member_coef(int64_t member, bool antithetic, double scale) {
  return float((antithetic && (member & 1)) ? -scale : scale);
}

// Runs of consecutive members that share a noise index: run q covers members
// [starts[q], starts[q+1]).
std::vector<int64_t> noise_runs(const int64_t* members, int64_t M, bool antithetic);

// The layout of a forward call, after validation.
struct ForwardShape { int64_t M, b, n, m; };
// x [M, n] | [M, b, n]; y [M, m] | [M, b, m]; m_expected < 0 means "take m from y".
ForwardShape check_forward(const TensorView& x, const TensorView& y, int64_t m_expected);
// members int64 [M] or null (null allowed only when allow_null).
const int64_t* member_ptr(const TensorView& members, int64_t M, bool antithetic, bool allow_null);

}  // namespace eggroll::detail
