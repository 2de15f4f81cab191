// Small private building blocks shared by perturb.cpp and update.cpp.
#pragma once
#include <cstdint>
#include <string>
#include <vector>
#include "eggroll/check.h"
#include "eggroll/perturb.h"

namespace eggroll::detail {

// Dot product with 16 partial sums in a fixed order: whatever vector width the compiler
// picks, every build adds the same numbers in the same order, so results do not depend
// on the ISA or on which thread computed them.
inline float dot16(const float* a, const float* b, int64_t n) {
  float acc[16] = {0};
  int64_t j = 0;
  for (; j + 16 <= n; j += 16)
    for (int u = 0; u < 16; ++u) acc[u] += a[j + u] * b[j + u];
  for (int u = 0; j + u < n; ++u) acc[u] += a[j + u] * b[j + u];
  for (int w = 8; w >= 1; w /= 2)
    for (int u = 0; u < w; ++u) acc[u] += acc[u + w];
  return acc[0];
}

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
