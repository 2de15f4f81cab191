// The ES gradient estimate. Parallel decomposition: low rank — noise runs are split over the
// pool to build the factor rows, then rows of g are split for the GEMM; full rank — chunks of
// g's elements are split, each task summing every run's contribution in run order, so the
// result is independent of the thread count.
#include "eggroll/update.h"
#include <algorithm>
#include <cmath>
#include <string>
#include <tuple>
#include <vector>
#include "eggroll/parallel.h"
#include "kernels.h"

namespace eggroll {
namespace {

struct Runs {
  std::vector<int64_t> starts;
  std::vector<double> coef;  // sum over the run of f_i s_i
};

Runs fold_runs(const TensorView& fitness, const int64_t* mem, int64_t M, bool antithetic) {
  Runs r;
  r.starts = detail::noise_runs(mem, M, antithetic);
  const float* f = fitness.ptr<const float>();
  for (size_t q = 0; q + 1 < r.starts.size(); ++q) {
    double c = 0;
    for (int64_t i = r.starts[q]; i < r.starts[q + 1]; ++i)
      c += (antithetic && (mem[i] & 1)) ? -double(f[i]) : double(f[i]);
    r.coef.push_back(c);
  }
  return r;
}

const int64_t* check_fitness(const TensorView& fitness, const TensorView& members,
                             const EsArgs& a, int64_t population) {
  validate_args(a);
  check_cpu(fitness, "fitness"); check_dtype(fitness, "fitness", DType::float32);
  check_contiguous(fitness, "fitness");
  if (fitness.ndim != 1) value_error("fitness: expected [N], got shape " + fitness.shape_str());
  const int64_t M = fitness.shape[0];
  const float* f = fitness.ptr<const float>();
  for (int64_t i = 0; i < M; ++i)
    if (!std::isfinite(f[i])) value_error("fitness: contains NaN or inf at index " + std::to_string(i));
  if (population < 1) value_error("population: must be >= 1");
  if (a.antithetic && population % 2 != 0)
    value_error("fitness: antithetic sampling needs an even population, got " + std::to_string(population));
  return detail::member_ptr(members, M, a.antithetic, false);
}

}  // namespace

int64_t es_gradient_columns(const TensorView& members, bool antithetic, int64_t rank) {
  const int64_t M = members.ndim == 1 ? members.shape[0] : -1;
  const int64_t* mem = detail::member_ptr(members, M, antithetic, false);
  return int64_t(detail::noise_runs(mem, M, antithetic).size() - 1) * rank;
}

namespace {

// Writes factor row c = q r + l of every run q: A part (m values, scaled by the run's
// coefficient) at Ap + c * a_cs + o * a_os, B part (n values) at Bp + c * b_cs + j * b_os.
void fill_factors(const Runs& runs, const int64_t* mem, int64_t m, int64_t n, const EsArgs& a,
                  int64_t population, float* Ap, int64_t a_cs, int64_t a_os, float* Bp,
                  int64_t b_cs, int64_t b_os) {
  const int64_t r = a.rank, nruns = int64_t(runs.coef.size());
  const double norm = 1.0 / (double(population) * std::sqrt(double(r)));
  parallel_for(nruns, 4, [&](int64_t lo, int64_t hi) {
    std::vector<float> z(static_cast<size_t>((n + m) * r));
    for (int64_t q = lo; q < hi; ++q) {
      const uint32_t k = member_noise(mem[runs.starts[size_t(q)]], a.antithetic).k;
      fill_normal(z.data(), (n + m) * r, a.key(k), 0);
      const float c = float(runs.coef[size_t(q)] * norm);
      for (int64_t l = 0; l < r; ++l) {
        const int64_t col = q * r + l;
        float* bp = Bp + col * b_cs;
        float* ap = Ap + col * a_cs;
        for (int64_t j = 0; j < n; ++j) bp[j * b_os] = z[size_t(j * r + l)];
        for (int64_t o = 0; o < m; ++o) ap[o * a_os] = c * z[size_t(n * r + o * r + l)];
      }
    }
  });
}

}  // namespace

void es_gradient_factors(const TensorView& fitness, const TensorView& members, int64_t m,
                         int64_t n, const EsArgs& a, int64_t population, const TensorView& Af,
                         const TensorView& Bf) {
  const int64_t* mem = check_fitness(fitness, members, a, population);
  if (m < 1 || n < 1) value_error("shape: dimensions must be >= 1");
  const int64_t r = a.rank;
  if ((n + m) * r > int64_t(kStreamLength)) value_error("rank: (m + n) * rank exceeds the stream length 2^34");
  const Runs runs = fold_runs(fitness, mem, fitness.shape[0], a.antithetic);
  const int64_t C = int64_t(runs.coef.size()) * r;
  for (auto [t, name, cols] : {std::tuple{&Af, "Af", m}, std::tuple{&Bf, "Bf", n}}) {
    check_cpu(*t, name); check_dtype(*t, name, DType::float32); check_contiguous(*t, name);
    if (t->ndim != 2 || t->shape[0] != C || t->shape[1] != cols)
      value_error(std::string(name) + ": expected shape (" + std::to_string(C) + ", " +
                  std::to_string(cols) + "), got " + t->shape_str());
  }
  fill_factors(runs, mem, m, n, a, population, Af.ptr<float>(), m, 1, Bf.ptr<float>(), n, 1);
}

void es_gradient(const TensorView& fitness, const TensorView& members, const EsArgs& a,
                 bool full_rank, int64_t population, bool accumulate, const TensorView& g) {
  const int64_t* mem = check_fitness(fitness, members, a, population);
  check_cpu(g, "out"); check_dtype(g, "out", DType::float32); check_contiguous(g, "out");
  if (g.ndim != 1 && g.ndim != 2) value_error("shape: expected (m, n) or (m,), got " + g.shape_str());
  check_no_overlap(g, "out", fitness, "fitness");
  float* gp = g.ptr<float>();
  const int64_t total = g.numel();
  if (full_rank || g.ndim == 1) {
    if (!accumulate) std::fill(gp, gp + total, 0.0f);
    if (total > int64_t(kStreamLength)) value_error("shape: m * n exceeds the stream length 2^34");
    const Runs runs = fold_runs(fitness, mem, fitness.shape[0], a.antithetic);
    constexpr int64_t kChunk = 8192;
    const int64_t nchunks = (total + kChunk - 1) / kChunk;
    parallel_for(nchunks, 1, [&](int64_t lo, int64_t hi) {
      std::vector<float> z(static_cast<size_t>(kChunk));
      for (int64_t ch = lo; ch < hi; ++ch) {
        const int64_t e0 = ch * kChunk, len = std::min(kChunk, total - e0);
        for (size_t q = 0; q < runs.coef.size(); ++q) {
          const uint32_t k = member_noise(mem[runs.starts[q]], a.antithetic).k;
          fill_normal(z.data(), len, a.key(k), uint64_t(e0));
          const float c = float(runs.coef[q] / double(population));
          detail::axpy(gp + e0, c, z.data(), len);
        }
      }
    });
    return;
  }
  // Low rank: g = Af^T Bf over factor rows Af [C, m], Bf [C, n] (contiguous writes), by the
  // core's deterministic GEMM on k-major operands: g[o, j] = sum_c Af[c, o] Bf[c, j].
  // Populations whose factors exceed ~64 MiB are done in chunks that are summed.
  const int64_t m = g.shape[0], n = g.shape[1], r = a.rank, M = fitness.shape[0];
  if ((n + m) * r > int64_t(kStreamLength)) value_error("rank: (m + n) * rank exceeds the stream length 2^34");
  const int64_t per_member = std::max<int64_t>(1, (int64_t(16) << 20) / ((m + n) * r));
  const int64_t step = std::max<int64_t>(2, per_member & ~int64_t(1));  // keep pairs together
  std::vector<float> part;
  for (int64_t c0 = 0; c0 < M; c0 += step) {
    const int64_t cm = std::min(step, M - c0);
    TensorView fv = fitness;
    fv.data = const_cast<float*>(fitness.ptr<const float>() + c0); fv.shape[0] = cm;
    const Runs runs = fold_runs(fv, mem + c0, cm, a.antithetic);
    const int64_t C = int64_t(runs.coef.size()) * r;
    std::vector<float> Af(static_cast<size_t>(C * m)), Bf(static_cast<size_t>(C * n));
    fill_factors(runs, mem + c0, m, n, a, population, Af.data(), m, 1, Bf.data(), n, 1);
    const bool add = accumulate || c0 > 0;
    if (add && part.empty()) part.resize(static_cast<size_t>(m * n));
    gemm_tn(Af.data(), Bf.data(), add ? part.data() : gp, m, n, C);
    if (add) detail::axpy(gp, 1.0f, part.data(), m * n);
  }
}

}  // namespace eggroll
