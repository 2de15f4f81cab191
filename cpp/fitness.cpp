// Fitness shaping (docs/ops.md): the check, then the CPU computation. O(N log N) at most;
// single-threaded (N is a population size).
#include "eggroll/fitness.h"
#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>
#include "eggroll/check.h"
#include "eggroll/parallel.h"

namespace eggroll {
namespace {

// f (checked) as doubles.
std::vector<double> read_fitness(const TensorView& f) {
  const int64_t N = f.shape[0];
  std::vector<double> v(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i)
    v[size_t(i)] = f.dtype == DType::float32 ? double(f.ptr<const float>()[i]) : f.ptr<const double>()[i];
  return v;
}

}  // namespace

ShapingPlan check_fitness_shaping(Shaping kind, const TensorView& f, int64_t group_size,
                                  const TensorView& out) {
  if (f.dtype != DType::float32 && f.dtype != DType::float64)
    type_error(std::string("f: expected float32 or float64, got ") + dtype_name(f.dtype));
  if (f.ndim != 1) value_error("f: expected [N], got shape " + f.shape_str());
  check_contiguous(f, "f");
  ShapingPlan p;
  p.f = f; p.out = out; p.kind = kind; p.N = f.shape[0]; p.group_size = group_size;
  if (kind == Shaping::antithetic_sign && p.N % 2 != 0)
    value_error("f: antithetic_sign needs an even population, got " + std::to_string(p.N));
  if (kind == Shaping::zscore) {
    if (group_size < 0) value_error("group_size: must be >= 0, got " + std::to_string(group_size));
    if (group_size > 0 && p.N % group_size != 0)
      value_error("group_size: " + std::to_string(group_size) + " does not divide the population " +
                  std::to_string(p.N));
  }
  check_same_device(out, "out", f, "f");
  check_dtype(out, "out", DType::float32);
  const int64_t len = shaped_length(kind, p.N);
  if (out.ndim != 1 || out.shape[0] != len) shape_error("out", shape_str({len}), out);
  check_contiguous(out, "out");
  check_writeable(out, "out");
  check_no_overlap(out, "out", f, "f");
  check_finite(f, "f");
  return p;
}

void shape_fitness(const ShapingPlan& p) {
  check_cpu(p.f, "f");
  ScopedIeeeFloat ieee;
  const std::vector<double> v = read_fitness(p.f);
  const int64_t N = p.N;
  float* o = p.out.ptr<float>();
  if (N == 0) return;
  if (p.kind == Shaping::antithetic_sign) {
    for (int64_t k = 0; k < N / 2; ++k) {
      const double d = v[size_t(2 * k)] - v[size_t(2 * k + 1)];  // inf for huge opposite values: sign kept
      o[k] = d > 0 ? 1.0f : (d < 0 ? -1.0f : 0.0f);
    }
    return;
  }
  if (p.kind == Shaping::centered_rank) {
    std::vector<int64_t> idx(static_cast<size_t>(N));
    std::iota(idx.begin(), idx.end(), 0);
    std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return v[size_t(a)] < v[size_t(b)]; });
    // Ties share the mean of the ranks they span; ranks 0..N-1 map linearly onto [-0.5, 0.5].
    const double denom = N > 1 ? double(N - 1) : 1.0;
    for (int64_t s = 0; s < N;) {
      int64_t e = s;
      while (e + 1 < N && v[size_t(idx[size_t(e + 1)])] == v[size_t(idx[size_t(s)])]) ++e;
      const double rank = 0.5 * double(s + e);
      for (int64_t t = s; t <= e; ++t) o[idx[size_t(t)]] = N > 1 ? float(rank / denom - 0.5) : 0.0f;
      s = e + 1;
    }
    return;
  }
  // zscore. Values beyond ~1e150 would overflow the squares: they are scaled by a power of two
  // first, which is exact, so every other input gives the same bits as the plain formula.
  double big = 0;
  for (double x : v) big = std::max(big, std::fabs(x));
  int e = 0;
  if (big > 0x1p500) std::frexp(big, &e);
  double mean = 0;
  for (double x : v) mean += std::ldexp(x, -e);
  mean /= double(N);
  double var = 0;
  for (double x : v) var += (std::ldexp(x, -e) - mean) * (std::ldexp(x, -e) - mean);
  var /= double(N);
  const double inv = 1.0 / std::sqrt(var + std::ldexp(1e-5, -2 * e));
  const int64_t G = p.group_size > 0 ? p.group_size : N;
  for (int64_t g0 = 0; g0 < N; g0 += G) {
    double gm = 0;
    for (int64_t i = g0; i < g0 + G; ++i) gm += std::ldexp(v[size_t(i)], -e);
    gm /= double(G);
    for (int64_t i = g0; i < g0 + G; ++i) o[i] = float((std::ldexp(v[size_t(i)], -e) - gm) * inv);
  }
}

}  // namespace eggroll
