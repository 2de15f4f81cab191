// Perturbed forward passes: validation, then CPU kernels. Parallel decomposition: members
// (low rank, vectors) or (noise run x block of output rows) (full rank) are split over the
// pool; each output row is written by exactly one task in a fixed order.
#include "eggroll/perturb.h"
#include <algorithm>
#include <cmath>
#include <string>
#include <tuple>
#include <vector>
#include "eggroll/parallel.h"
#include "kernels.h"

namespace eggroll {
using detail::dot16;

void validate_args(const EsArgs& a) {
  if (a.epoch < 0 || a.epoch > int64_t(UINT32_MAX))
    value_error("epoch: must be in [0, 2^32), got " + std::to_string(a.epoch));
  if (a.noise_reuse < 0)
    value_error("noise_reuse: must be >= 0, got " + std::to_string(a.noise_reuse));
  if (!std::isfinite(a.sigma) || a.sigma <= 0 || a.sigma > 3.4e38)
    value_error("sigma: must be finite and > 0 (and representable in float32), got " +
                std::to_string(a.sigma));
  if (a.rank < 1) value_error("rank: must be >= 1, got " + std::to_string(a.rank));
}

void validate_members(const TensorView& members, int64_t M, bool antithetic) {
  check_cpu(members, "members");
  check_dtype(members, "members", DType::int64);
  if (members.ndim != 1) value_error("members: expected a 1-D index array, got shape " + members.shape_str());
  check_contiguous(members, "members");
  if (members.shape[0] != M)
    value_error("members: has " + std::to_string(members.shape[0]) +
                " entries but the leading dimension is " + std::to_string(M));
  const int64_t* p = members.ptr<const int64_t>();
  const int64_t limit = antithetic ? (int64_t(1) << 33) : (int64_t(1) << 32);
  for (int64_t i = 0; i < M; ++i) {
    if (p[i] < 0) value_error("members: indices must be >= 0, got " + std::to_string(p[i]));
    if (p[i] >= limit) value_error("members: index " + std::to_string(p[i]) + " too large (noise index must fit 32 bits)");
  }
}

namespace detail {

std::vector<int64_t> noise_runs(const int64_t* members, int64_t M, bool antithetic) {
  std::vector<int64_t> starts;
  int64_t prev = -1;
  for (int64_t i = 0; i < M; ++i) {
    int64_t k = antithetic ? members[i] >> 1 : members[i];
    if (i == 0 || k != prev) starts.push_back(i);
    prev = k;
  }
  starts.push_back(M);
  return starts;
}

ForwardShape check_forward(const TensorView& x, const TensorView& y, int64_t m_expected) {
  check_cpu(x, "x"); check_cpu(y, "out");
  check_dtype(x, "x", DType::float32); check_dtype(y, "out", DType::float32);
  if (x.ndim != 2 && x.ndim != 3)
    value_error("x: expected [M, n] or [M, b, n], got shape " + x.shape_str());
  check_contiguous(x, "x"); check_contiguous(y, "out");
  ForwardShape s;
  s.M = x.shape[0]; s.b = x.ndim == 3 ? x.shape[1] : 1; s.n = x.shape[x.ndim - 1];
  s.m = m_expected >= 0 ? m_expected : y.shape[y.ndim - 1];
  bool ok = y.ndim == x.ndim && y.shape[0] == s.M && y.shape[y.ndim - 1] == s.m &&
            (x.ndim == 2 || y.shape[1] == s.b);
  if (!ok) {
    std::string want = x.ndim == 3 ? "(" + std::to_string(s.M) + ", " + std::to_string(s.b) + ", " + std::to_string(s.m) + ")"
                                   : "(" + std::to_string(s.M) + ", " + std::to_string(s.m) + ")";
    value_error("out: expected shape " + want + ", got " + y.shape_str());
  }
  check_no_overlap(y, "out", x, "x");
  return s;
}

const int64_t* member_ptr(const TensorView& members, int64_t M, bool antithetic, bool allow_null) {
  if (!members.data) {
    if (allow_null) return nullptr;
    value_error("members: required");
  }
  validate_members(members, M, antithetic);
  return members.ptr<const int64_t>();
}

}  // namespace detail

void lowrank_factors(const TensorView& members, int64_t m, int64_t n, const EsArgs& a,
                     const TensorView& A, const TensorView& B) {
  validate_args(a);
  if (m < 1 || n < 1) value_error("shape: dimensions must be >= 1");
  const int64_t M = members.ndim == 1 ? members.shape[0] : -1;
  const int64_t* mem = detail::member_ptr(members, M, a.antithetic, false);
  const int64_t r = a.rank;
  for (auto [t, name, rows] : {std::tuple{&A, "A", m}, std::tuple{&B, "B", n}}) {
    check_cpu(*t, name); check_dtype(*t, name, DType::float32); check_contiguous(*t, name);
    if (t->ndim != 3 || t->shape[0] != M || t->shape[1] != rows || t->shape[2] != r)
      value_error(std::string(name) + ": expected shape (" + std::to_string(M) + ", " +
                  std::to_string(rows) + ", " + std::to_string(r) + "), got " + t->shape_str());
  }
  if ((n + m) * r > int64_t(kStreamLength)) value_error("rank: (m + n) * rank exceeds the stream length 2^34");
  const double scale = a.sigma / std::sqrt(double(r));
  float* Ap = A.ptr<float>(); float* Bp = B.ptr<float>();
  parallel_for(M, 4, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      MemberNoise mn = member_noise(mem[i], a.antithetic);
      NoiseKey key = a.key(mn.k);
      fill_normal(Bp + i * n * r, n * r, key, 0);
      float* Ai = Ap + i * m * r;
      fill_normal(Ai, m * r, key, uint64_t(n * r));
      const float c = detail::member_coef(mem[i], a.antithetic, scale);
      for (int64_t j = 0; j < m * r; ++j) Ai[j] = c * Ai[j];
    }
  });
}

void lowrank_correction(const TensorView& x, const TensorView& members, const EsArgs& a,
                        const TensorView& y) {
  validate_args(a);
  const auto s = detail::check_forward(x, y, -1);
  const int64_t* mem = detail::member_ptr(members, s.M, a.antithetic, false);
  const int64_t r = a.rank, n = s.n, m = s.m, b = s.b;
  if ((n + m) * r > int64_t(kStreamLength)) value_error("rank: (m + n) * rank exceeds the stream length 2^34");
  const double scale = a.sigma / std::sqrt(double(r));
  const float* xp = x.ptr<const float>();
  float* yp = y.ptr<float>();
  parallel_for(s.M, 2, [&](int64_t lo, int64_t hi) {
    // z holds B_k then A_k (stream order); Bt [r, n] and At [r, m] are their columns.
    std::vector<float> z(static_cast<size_t>((n + m) * r)), Bt, At;
    std::vector<float> t(static_cast<size_t>(r)), corr(static_cast<size_t>(m));
    if (r > 1) { Bt.resize(static_cast<size_t>(n * r)); At.resize(static_cast<size_t>(m * r)); }
    int64_t have_k = -1;
    for (int64_t i = lo; i < hi; ++i) {
      MemberNoise mn = member_noise(mem[i], a.antithetic);
      if (int64_t(mn.k) != have_k) {  // antithetic partners reuse the factors
        fill_normal(z.data(), (n + m) * r, a.key(mn.k), 0);
        if (r > 1) {
          for (int64_t j = 0; j < n; ++j) for (int64_t l = 0; l < r; ++l) Bt[l * n + j] = z[j * r + l];
          for (int64_t o = 0; o < m; ++o) for (int64_t l = 0; l < r; ++l) At[l * m + o] = z[n * r + o * r + l];
        }
        have_k = mn.k;
      }
      const float* Bl = r > 1 ? Bt.data() : z.data();
      const float* Al = r > 1 ? At.data() : z.data() + n;
      const float c = detail::member_coef(mem[i], a.antithetic, scale);
      for (int64_t row = 0; row < b; ++row) {
        const float* xr = xp + (i * b + row) * n;
        float* yr = yp + (i * b + row) * m;
        for (int64_t l = 0; l < r; ++l) t[l] = c * dot16(xr, Bl + l * n, n);
        if (r == 1) {
          detail::axpy(yr, t[0], Al, m);  // same rounding as corr = t0*A; y += corr
        } else {
          for (int64_t o = 0; o < m; ++o) corr[o] = t[0] * Al[o];
          for (int64_t l = 1; l < r; ++l) detail::axpy(corr.data(), t[l], Al + l * m, m);
          for (int64_t o = 0; o < m; ++o) yr[o] += corr[o];
        }
      }
    }
  });
}

namespace {
// W [m, n] row-major, or the transpose of a row-major [n, m] array (strides (1, m): a weight
// stored [in, out], such as transformers' Conv1D, passed as W.T without a copy). Returns
// whether it is the transposed layout.
bool check_weight(const TensorView& W, int64_t n) {
  check_cpu(W, "W"); check_dtype(W, "W", DType::float32);
  if (W.ndim != 2) value_error("W: expected [m, n], got shape " + W.shape_str());
  if (W.shape[1] != n)
    value_error("W: expected " + std::to_string(n) + " columns to match x's last dimension, got shape " + W.shape_str());
  if (W.is_contiguous()) return false;
  if (W.strides[0] == 1 && W.strides[1] == W.shape[0]) return true;
  value_error("W: must be contiguous [m, n] or the transpose of a contiguous [n, m] array");
}
// Both forwards: validate everything (members too, so a bad call never writes y), then
// y = x W^T with the core's deterministic GEMM over all M * b rows at once (a transposed W
// is packed from its own layout into the same panels: the same bits).
void base_product(const TensorView& x, const TensorView& W, const TensorView& members,
                  const EsArgs& a, const TensorView& y) {
  validate_args(a);
  const bool transposed = check_weight(W, x.ndim >= 2 ? x.shape[x.ndim - 1] : -1);
  const auto s = detail::check_forward(x, y, W.shape[0]);
  check_no_overlap(y, "out", W, "W");
  if (members.data) detail::member_ptr(members, s.M, a.antithetic, false);
  if (transposed)
    gemm_nk(x.ptr<const float>(), W.ptr<const float>(), y.ptr<float>(), s.M * s.b, s.m, s.n);
  else
    gemm_nt(x.ptr<const float>(), W.ptr<const float>(), y.ptr<float>(), s.M * s.b, s.m, s.n);
}

}  // namespace

void perturbed_matmul(const TensorView& x, const TensorView& W, const TensorView& members,
                      const EsArgs& a, const TensorView& y) {
  base_product(x, W, members, a, y);
  if (members.data) lowrank_correction(x, members, a, y);
}

void fullrank_correction(const TensorView& x, const TensorView& members, const EsArgs& a,
                         const TensorView& y) {
  validate_args(a);
  const auto s = detail::check_forward(x, y, -1);
  const int64_t* mem = detail::member_ptr(members, s.M, a.antithetic, false);
  const int64_t n = s.n, m = s.m, b = s.b;
  if (m * n > int64_t(kStreamLength)) value_error("W: m * n exceeds the stream length 2^34");
  if (s.M == 0 || m == 0 || n == 0) return;  // the correction is an empty sum
  const std::vector<int64_t> runs = detail::noise_runs(mem, s.M, a.antithetic);
  const int64_t nruns = int64_t(runs.size()) - 1;
  // Row blocks of Z_k of about 64 KiB: generated once, used by every member of the run.
  const int64_t RB = std::max<int64_t>(1, std::min<int64_t>(m, (16384 + n - 1) / n));
  const int64_t nblocks = (m + RB - 1) / RB;
  const float* xp = x.ptr<const float>();
  float* yp = y.ptr<float>();
  parallel_for(nruns * nblocks, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> Z(static_cast<size_t>(RB * n));
    for (int64_t item = lo; item < hi; ++item) {
      const int64_t q = item / nblocks, o0 = (item % nblocks) * RB, rows = std::min(RB, m - o0);
      const MemberNoise mn = member_noise(mem[runs[q]], a.antithetic);
      fill_normal(Z.data(), rows * n, a.key(mn.k), uint64_t(o0 * n));
      for (int64_t i = runs[q]; i < runs[q + 1]; ++i) {
        const float c = detail::member_coef(mem[i], a.antithetic, a.sigma);
        for (int64_t row = 0; row < b; ++row) {
          const float* xr = xp + (i * b + row) * n;
          float* yr = yp + (i * b + row) * m + o0;
          for (int64_t o = 0; o < rows; ++o) yr[o] += c * dot16(xr, Z.data() + o * n, n);
        }
      }
    }
  });
}

void perturbed_matmul_full(const TensorView& x, const TensorView& W, const TensorView& members,
                           const EsArgs& a, const TensorView& y) {
  base_product(x, W, members, a, y);
  if (members.data) fullrank_correction(x, members, a, y);
}

void perturb_vector(const TensorView& v, const TensorView& members, const EsArgs& a,
                    const TensorView& out) {
  validate_args(a);
  check_cpu(v, "v"); check_dtype(v, "v", DType::float32); check_contiguous(v, "v");
  if (v.ndim != 1) value_error("v: expected a vector [m], got shape " + v.shape_str());
  const int64_t m = v.shape[0];
  check_cpu(out, "out"); check_dtype(out, "out", DType::float32); check_contiguous(out, "out");
  const int64_t M = out.ndim == 2 ? out.shape[0] : -1;
  if (out.ndim != 2 || out.shape[1] != m)
    value_error("out: expected shape (M, " + std::to_string(m) + "), got " + out.shape_str());
  check_no_overlap(out, "out", v, "v");
  const int64_t* mem = detail::member_ptr(members, M, a.antithetic, false);
  const float* vp = v.ptr<const float>();
  float* op = out.ptr<float>();
  parallel_for(M, 16, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      float* oi = op + i * m;
      fill_normal(oi, m, a.key(member_noise(mem[i], a.antithetic).k), 0);
      const float c = detail::member_coef(mem[i], a.antithetic, a.sigma);
      for (int64_t j = 0; j < m; ++j) oi[j] = vp[j] + c * oi[j];
    }
  });
}

}  // namespace eggroll
