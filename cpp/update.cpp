// The ES gradient estimate: the checks, then the CPU computation. Parallel decomposition: low
// rank — noise runs are split over the pool to build the factor rows, then rows of g are split
// for the GEMM; full rank — chunks of g's elements are split, each task summing every run's
// contribution in run order, so the result is independent of the thread count.
#include "eggroll/update.h"
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>
#include "eggroll/check.h"
#include "eggroll/parallel.h"
#include "eggroll/perturb.h"
#include "kernels.h"

namespace eggroll {
namespace {

struct Runs {
  std::vector<int64_t> starts;
  std::vector<double> coef;  // sum over the run of f_i s_i
};

// The runs of members [c0, c0 + count) and their fitness sums.
Runs fold_runs(const float* f, const Members& mem, int64_t c0, int64_t count, bool antithetic) {
  Members part = mem;
  if (mem.index) part.index = mem.index + c0;
  else part.start = mem.start + c0 * mem.step;
  part.count = count;
  Runs r;
  r.starts = detail::noise_runs(part, antithetic);
  for (size_t q = 0; q + 1 < r.starts.size(); ++q) {
    double c = 0;
    for (int64_t i = r.starts[q]; i < r.starts[q + 1]; ++i)
      c += (antithetic && (part[i] & 1)) ? -double(f[c0 + i]) : double(f[c0 + i]);
    r.coef.push_back(c);
  }
  for (int64_t& s : r.starts) s += c0;
  return r;
}

// Writes factor row c = q r + l of every run q: A part (m values, scaled by the run's
// coefficient) at Ap + c * m, B part (n values) at Bp + c * n.
void fill_factors(const Runs& runs, const Members& mem, int64_t m, int64_t n, const Key& a,
                  int64_t population, float* Ap, float* Bp) {
  const int64_t r = a.rank, nruns = int64_t(runs.coef.size());
  const double norm = 1.0 / (double(population) * std::sqrt(double(r)));
  parallel_for(nruns, detail::task_grain(double((n + m) * r) * 18, 4), [&](int64_t lo, int64_t hi) {
    std::vector<float> z(static_cast<size_t>((n + m) * r));
    for (int64_t q = lo; q < hi; ++q) {
      const uint32_t k = member_noise(mem[runs.starts[size_t(q)]], a.antithetic).k;
      fill_normal(z.data(), (n + m) * r, a.noise(k), 0);
      const float c = float(runs.coef[size_t(q)] * norm);
      for (int64_t l = 0; l < r; ++l) {
        const int64_t col = q * r + l;
        float* bp = Bp + col * n;
        float* ap = Ap + col * m;
        for (int64_t j = 0; j < n; ++j) bp[j] = z[size_t(j * r + l)];
        for (int64_t o = 0; o < m; ++o) ap[o] = c * z[size_t(n * r + o * r + l)];
      }
    }
  });
}

}  // namespace

GradientPlan check_es_gradient(const TensorView& fitness, const Members& members, const Key& key,
                               bool full_rank, int64_t population, bool accumulate,
                               const TensorView& out) {
  GradientPlan p;
  if (out.ndim != 1 && out.ndim != 2)
    value_error("shape: expected (m, n) or (m,), got " + out.shape_str());
  p.full_rank = full_rank || out.ndim == 1;
  check_key(key, KeyUse::float_lowrank);  // rank is an argument even of a full-rank estimate
  check_dtype(fitness, "fitness", DType::float32);
  if (fitness.ndim != 1) value_error("fitness: expected [N], got shape " + fitness.shape_str());
  check_contiguous(fitness, "fitness");
  p.M = fitness.shape[0];
  if (population < 1)
    value_error(p.M == population ? "fitness: empty population"
                                  : "population: must be >= 1, got " + std::to_string(population));
  if (key.antithetic && population % 2 != 0)
    value_error("fitness: antithetic sampling needs an even population, got " +
                std::to_string(population));
  p.m = out.shape[0];
  p.n = out.ndim == 2 ? out.shape[1] : 1;
  if (p.m < 1 || p.n < 1)
    value_error("shape: expected (m, n) or (m,) with positive sizes, got " + out.shape_str());
  if (double(p.m) * double(p.n) > double(kStreamLength))
    value_error("shape: " + out.shape_str() + " has more than the 2^34 values of one noise stream");
  if (!p.full_rank) detail::check_stream(p.m, p.n, key.rank, false);
  check_same_device(out, "out", fitness, "fitness");
  check_dtype(out, "out", DType::float32);
  check_contiguous(out, "out");
  check_writeable(out, "out");
  check_no_overlap(out, "out", fitness, "fitness");
  if (!members.given) value_error("members: required (a range or an index array)");
  check_members(members, p.M, key.antithetic, "fitness");
  detail::check_member_device(members, fitness, "fitness");
  check_finite(fitness, "fitness");
  p.fitness = fitness; p.out = out; p.members = members; p.key = key;
  p.population = population; p.accumulate = accumulate;
  return p;
}

int64_t es_gradient_columns(const Members& members, bool antithetic, int64_t rank) {
  if (members.index && members.device != Device::cpu)
    type_error("members: es_gradient_columns reads the indices on the host; pass a range or a "
               "CPU index array");
  return int64_t(detail::noise_runs(members, antithetic).size() - 1) * rank;
}

std::vector<GradientChunk> es_gradient_chunks(const Members& members, int64_t m, int64_t n,
                                              const Key& key) {
  const int64_t r = key.rank, M = members.count;
  const int64_t per_member = std::max<int64_t>(1, (int64_t(16) << 20) / ((m + n) * r));
  const int64_t step = std::max<int64_t>(2, per_member & ~int64_t(1));  // keep pairs together
  const bool known = !members.index || members.device == Device::cpu;
  std::vector<GradientChunk> chunks;
  for (int64_t c0 = 0; c0 < M; c0 += step) {
    const int64_t c1 = std::min(M, c0 + step);
    Members part = members;
    if (members.index) part.index = members.index + c0;
    else part.start = members.start + c0 * members.step;
    part.count = c1 - c0;
    chunks.push_back({c0, c1, known ? es_gradient_columns(part, key.antithetic, r) : (c1 - c0) * r});
  }
  return chunks;
}

FactorRowsPlan check_es_gradient_factors(const TensorView& fitness, const Members& members,
                                         int64_t m, int64_t n, const Key& key,
                                         int64_t population, const TensorView& Af,
                                         const TensorView& Bf) {
  TensorView g;  // an abstract [m, n] estimate: the shape rules of es_gradient
  g.ndim = 2; g.shape[0] = m; g.shape[1] = n; g.strides[0] = n; g.strides[1] = 1;
  g.device = fitness.device; g.device_index = fitness.device_index;
  FactorRowsPlan p;
  p.g = check_es_gradient(fitness, members, key, false, population, false, g);
  const int64_t r = key.rank;
  p.C = Af.ndim == 2 ? Af.shape[0] : -1;
  // C = the members' runs times rank; where the indices live on a device, any multiple of the
  // rank up to M r (the launcher zeroes the rows past the runs it finds).
  const bool known = !members.index || members.device == Device::cpu;
  const int64_t need = known ? es_gradient_columns(members, key.antithetic, r) : -1;
  const bool ok = p.C >= 0 && Af.shape[1] == m &&
                  (known ? p.C == need : (p.C % r == 0 && p.C <= p.g.M * r));
  if (!ok)
    shape_error("Af", "(" + (known ? std::to_string(need) : std::string("C")) + ", " +
                          std::to_string(m) + ") (C = es_gradient_columns)", Af);
  if (Bf.ndim != 2 || Bf.shape[0] != p.C || Bf.shape[1] != n)
    shape_error("Bf", shape_str({p.C, n}), Bf);
  for (const TensorView* t : {&Af, &Bf}) {
    const char* name = t == &Af ? "Af" : "Bf";
    check_same_device(*t, name, fitness, "fitness");
    check_dtype(*t, name, DType::float32);
    check_contiguous(*t, name);
    check_writeable(*t, name);
    check_no_overlap(*t, name, fitness, "fitness");
  }
  check_no_overlap(Af, "Af", Bf, "Bf");
  p.Af = Af; p.Bf = Bf;
  return p;
}

void es_gradient_factors(const FactorRowsPlan& p) {
  check_cpu(p.Af, "Af");
  ScopedIeeeFloat ieee;
  const GradientPlan& g = p.g;
  const Runs runs = fold_runs(g.fitness.ptr<const float>(), g.members, 0, g.M, g.key.antithetic);
  fill_factors(runs, g.members, g.m, g.n, g.key, g.population, p.Af.ptr<float>(),
               p.Bf.ptr<float>());
}

void es_gradient(const GradientPlan& p) {
  check_cpu(p.fitness, "fitness");
  ScopedIeeeFloat ieee;
  const Key& a = p.key;
  const float* f = p.fitness.ptr<const float>();
  float* gp = p.out.ptr<float>();
  const int64_t total = p.m * p.n, M = p.M;
  if (p.full_rank) {
    if (!p.accumulate) std::fill(gp, gp + total, 0.0f);
    const Runs runs = fold_runs(f, p.members, 0, M, a.antithetic);
    constexpr int64_t kChunk = 8192;
    const int64_t nchunks = (total + kChunk - 1) / kChunk;
    const double cost = double(std::min(kChunk, total)) * 18 * double(runs.coef.size());
    parallel_for(nchunks, detail::task_grain(cost, 1), [&](int64_t lo, int64_t hi) {
      std::vector<float> z(static_cast<size_t>(kChunk));
      for (int64_t ch = lo; ch < hi; ++ch) {
        const int64_t e0 = ch * kChunk, len = std::min(kChunk, total - e0);
        for (size_t q = 0; q < runs.coef.size(); ++q) {
          const uint32_t k = member_noise(p.members[runs.starts[q]], a.antithetic).k;
          fill_normal(z.data(), len, a.noise(k), uint64_t(e0));
          const float c = float(runs.coef[q] / double(p.population));
          detail::axpy(gp + e0, c, z.data(), len);
        }
      }
    });
    return;
  }
  // Low rank: g = Af^T Bf over factor rows Af [C, m], Bf [C, n] (contiguous writes), by the
  // core's deterministic GEMM on k-major operands: g[o, j] = sum_c Af[c, o] Bf[c, j].
  // Populations whose factors exceed ~64 MiB are done in chunks that are summed.
  const int64_t m = p.m, n = p.n;
  std::vector<float> part;
  if (M == 0 && !p.accumulate) std::fill(gp, gp + total, 0.0f);
  for (const GradientChunk& ch : es_gradient_chunks(p.members, m, n, a)) {
    const Runs runs = fold_runs(f, p.members, ch.c0, ch.c1 - ch.c0, a.antithetic);
    const int64_t C = ch.C;
    std::vector<float> Af(static_cast<size_t>(C * m)), Bf(static_cast<size_t>(C * n));
    fill_factors(runs, p.members, m, n, a, p.population, Af.data(), Bf.data());
    const bool add = p.accumulate || ch.c0 > 0;
    if (add && part.empty()) part.resize(static_cast<size_t>(m * n));
    gemm_tn(Af.data(), Bf.data(), add ? part.data() : gp, m, n, C);
    if (add) detail::axpy(gp, 1.0f, part.data(), m * n);
  }
}

}  // namespace eggroll
