// Fitness shaping (spec/ops.md). O(N log N) at most; single-threaded (N is a population size).
#include "eggroll/fitness.h"
#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>
#include "eggroll/check.h"

namespace eggroll {
namespace {

// f (float32 or float64, 1-D, contiguous, finite) as doubles.
std::vector<double> read_fitness(const TensorView& f) {
  check_cpu(f, "f");
  if (f.dtype != DType::float32 && f.dtype != DType::float64)
    type_error(std::string("f: expected float32 or float64, got ") + dtype_name(f.dtype));
  if (f.ndim != 1) value_error("f: expected [N], got shape " + f.shape_str());
  check_contiguous(f, "f");
  const int64_t N = f.shape[0];
  std::vector<double> v(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) {
    v[size_t(i)] = f.dtype == DType::float32 ? double(f.ptr<const float>()[i]) : f.ptr<const double>()[i];
    if (!std::isfinite(v[size_t(i)]))
      value_error("f: contains NaN or inf at index " + std::to_string(i));
  }
  return v;
}

float* out_ptr(const TensorView& out, int64_t n, const TensorView& f) {
  check_cpu(out, "out"); check_dtype(out, "out", DType::float32); check_contiguous(out, "out");
  if (out.ndim != 1 || out.shape[0] != n)
    value_error("out: expected shape (" + std::to_string(n) + ",), got " + out.shape_str());
  check_no_overlap(out, "out", f, "f");
  return out.ptr<float>();
}

}  // namespace

void centered_rank(const TensorView& f, const TensorView& out) {
  const std::vector<double> v = read_fitness(f);
  const int64_t N = int64_t(v.size());
  float* o = out_ptr(out, N, f);
  if (N == 0) return;
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
}

void zscore(const TensorView& f, int64_t group_size, const TensorView& out) {
  const std::vector<double> v = read_fitness(f);
  const int64_t N = int64_t(v.size());
  float* o = out_ptr(out, N, f);
  if (group_size < 0) value_error("group_size: must be >= 0, got " + std::to_string(group_size));
  if (group_size > 0 && N % group_size != 0)
    value_error("group_size: " + std::to_string(group_size) + " does not divide the population " + std::to_string(N));
  if (N == 0) return;
  double mean = 0;
  for (double x : v) mean += x;
  mean /= double(N);
  double var = 0;
  for (double x : v) var += (x - mean) * (x - mean);
  var /= double(N);
  const double inv = 1.0 / std::sqrt(var + 1e-5);
  const int64_t G = group_size > 0 ? group_size : N;
  for (int64_t g0 = 0; g0 < N; g0 += G) {
    double gm = 0;
    for (int64_t i = g0; i < g0 + G; ++i) gm += v[size_t(i)];
    gm /= double(G);
    for (int64_t i = g0; i < g0 + G; ++i) o[i] = float((v[size_t(i)] - gm) * inv);
  }
}

void antithetic_sign(const TensorView& f, const TensorView& out) {
  const std::vector<double> v = read_fitness(f);
  const int64_t N = int64_t(v.size());
  if (N % 2 != 0) value_error("f: antithetic_sign needs an even population, got " + std::to_string(N));
  float* o = out_ptr(out, N / 2, f);
  for (int64_t k = 0; k < N / 2; ++k) {
    const double d = v[size_t(2 * k)] - v[size_t(2 * k + 1)];
    o[k] = d > 0 ? 1.0f : (d < 0 ? -1.0f : 0.0f);
  }
}

}  // namespace eggroll
