// The multiversioned hot loops declared in kernels.h (one clone per ISA, same results).
#include "kernels.h"

namespace eggroll {
namespace detail {

EGGROLL_CLONES float dot16(const float* a, const float* b, int64_t n) {
  float acc[16] = {0};
  int64_t j = 0;
  for (; j + 16 <= n; j += 16)
    for (int u = 0; u < 16; ++u) acc[u] += a[j + u] * b[j + u];
  for (int u = 0; j + u < n; ++u) acc[u] += a[j + u] * b[j + u];
  for (int w = 8; w >= 1; w /= 2)
    for (int u = 0; u < w; ++u) acc[u] += acc[u + w];
  return acc[0];
}

EGGROLL_CLONES void axpy(float* y, float a, const float* x, int64_t n) {
  for (int64_t j = 0; j < n; ++j) y[j] += a * x[j];
}

}  // namespace detail
}  // namespace eggroll
