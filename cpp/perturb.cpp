// Perturbed forward passes: the checks (the one home of their rules and messages, for the
// CPU and the CUDA launchers), then the CPU kernels. Parallel decomposition: members (low
// rank, vectors, factors) or (noise run x block of output rows) (full rank) are split over
// the pool; each output row is written by exactly one task in a fixed order.
#include "eggroll/perturb.h"
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>
#include "eggroll/check.h"
#include "eggroll/parallel.h"
#include "kernels.h"

namespace eggroll {
using detail::dot16;

namespace detail {

void check_float_storage(const TensorView& t, const char* name) {
  if (t.device == Device::cpu) return check_dtype(t, name, DType::float32);
  if (t.dtype != DType::float32 && t.dtype != DType::float16 && t.dtype != DType::bfloat16)
    type_error(std::string(name) + ": expected float32, float16 or bfloat16, got " +
               dtype_name(t.dtype));
}

void check_member_device(const Members& members, const TensorView& ref, const char* ref_name) {
  // A range lives nowhere; host indices suit any device (a CUDA launcher uploads them).
  if (!members.given || !members.index || members.device == Device::cpu) return;
  TensorView mv;
  mv.device = members.device;
  mv.device_index = members.device_index;
  check_same_device(mv, "members", ref, ref_name);
}

bool exceeds(double a, double b, double limit) { return a * b > limit; }

void check_stream(int64_t m, int64_t n, int64_t rank, bool full_rank) {
  const double L = double(kStreamLength);
  if (full_rank && exceeds(double(m), double(n), L))
    value_error("W: m * n = " + std::to_string(m) + " * " + std::to_string(n) +
                " exceeds the 2^34 values of one noise stream");
  if (!full_rank && exceeds(double(m) + double(n), double(rank), L))
    value_error("rank: (m + n) * rank exceeds the 2^34 values of one noise stream");
}

std::vector<int64_t> noise_runs(const Members& mem, bool antithetic) {
  std::vector<int64_t> starts;
  int64_t prev = -1;
  for (int64_t i = 0; i < mem.count; ++i) {
    const int64_t k = antithetic ? mem[i] >> 1 : mem[i];
    if (i == 0 || k != prev) starts.push_back(i);
    prev = k;
  }
  starts.push_back(mem.count);
  return starts;
}

int64_t task_grain(double cost_per_item, int64_t at_least) {
  // ~64K cost units (a few tens of microseconds) per task: smaller calls run inline on the
  // caller, without waking a thread.
  const double g = std::ceil(65536.0 / std::max(cost_per_item, 1.0));
  return std::max<int64_t>(at_least, int64_t(std::min(g, 1e15)));
}

}  // namespace detail

using detail::check_float_storage;
using detail::check_member_device;

namespace detail {
ForwardDims check_forward(const TensorView& x, const TensorView& W, const Members& members,
                          const Key& key, const TensorView& out, bool full_rank) {
  if (x.ndim != 2 && x.ndim != 3)
    value_error("x: expected [M, n] or [M, b, n], got shape " + x.shape_str());
  check_same_device(W, "W", x, "x");
  check_same_device(out, "out", x, "x");
  if (W.ndim != 2) value_error("W: expected [m, n], got shape " + W.shape_str());
  ForwardDims d;
  d.M = x.shape[0]; d.b = x.ndim == 3 ? x.shape[1] : 1; d.n = x.shape[x.ndim - 1];
  d.m = W.shape[0];
  if (W.shape[1] != d.n)
    value_error("W: expected " + std::to_string(d.n) +
                " columns to match x's last dimension, got shape " + W.shape_str());
  // x: each member's rows contiguous; members follow each other or share one input (stride 0).
  TensorView rows = x;
  rows.shape[0] = 1;
  const bool shared = x.strides[0] == 0 && d.M > 1;
  if (x.numel() != 0 && (!rows.is_contiguous() || (!shared && !x.is_contiguous())))
    value_error("x: must be C-contiguous apart from a stride-0 (broadcast) leading axis (make a "
                "contiguous copy first, e.g. numpy.ascontiguousarray or tensor.contiguous())");
  d.x_stride = shared ? 0 : d.b * d.n;
  check_contiguous(W, "W");
  check_dtype(out, "out", x.dtype);
  const bool out_ok = out.ndim == x.ndim && out.shape[0] == d.M &&
                      out.shape[out.ndim - 1] == d.m && (x.ndim == 2 || out.shape[1] == d.b);
  if (!out_ok)
    shape_error("out", x.ndim == 3 ? shape_str({d.M, d.b, d.m}) : shape_str({d.M, d.m}), out);
  check_contiguous(out, "out");
  check_writeable(out, "out");
  check_no_overlap(out, "out", x, "x");
  check_no_overlap(out, "out", W, "W");
  if (members.given) {
    check_members(members, d.M, key.antithetic, "x");
    check_member_device(members, x, "x");
    check_stream(d.m, d.n, key.rank, full_rank);
  }
  return d;
}
}  // namespace detail

ForwardPlan check_perturbed_matmul(const TensorView& x, const TensorView& W,
                                   const Members& members, const Key& key,
                                   const TensorView& out, bool full_rank) {
  check_key(key, full_rank ? KeyUse::float_full : KeyUse::float_lowrank);
  check_float_storage(x, "x");
  if (W.dtype != x.dtype)
    type_error(std::string("W: expected the dtype of x (") + dtype_name(x.dtype) + "), got " +
               dtype_name(W.dtype));
  // A weight stored [in, out] (transformers' Conv1D) may come as its transpose W.T, strides
  // (1, m): the CPU GEMM packs it from that layout into the same panels (the same bits), so
  // no copy is made. The rules below see it as the contiguous [m, n] it stands for.
  const bool wt = W.ndim == 2 && W.shape[0] > 1 && W.shape[1] > 1 && W.strides[0] == 1 &&
                  W.strides[1] == W.shape[0];
  TensorView Wc = W;
  if (wt) {
    if (W.device != Device::cpu)
      value_error("W: must be contiguous (a transposed weight is read in place on the CPU only)");
    Wc.strides[0] = W.shape[1];
    Wc.strides[1] = 1;
  }
  const detail::ForwardDims d = detail::check_forward(x, Wc, members, key, out, full_rank);
  ForwardPlan p;
  p.x = x; p.W = W; p.out = out; p.members = members; p.key = key; p.full_rank = full_rank;
  p.w_transposed = wt;
  p.M = d.M; p.b = d.b; p.n = d.n; p.m = d.m; p.x_stride = d.x_stride;
  return p;
}

void lowrank_correction(const ForwardPlan& p) {
  const Members& mem = p.members;
  const Key& a = p.key;
  const int64_t r = a.rank, n = p.n, m = p.m, b = p.b;
  if (p.M == 0 || b == 0 || m == 0) return;
  const double scale = a.sigma / std::sqrt(double(r));
  const float* xp = p.x.ptr<const float>();
  float* yp = p.out.ptr<float>();
  const double cost = double((n + m) * r) * 16 + double(b * (n + m) * r) * 2;
  parallel_for(p.M, detail::task_grain(cost, 2), [&](int64_t lo, int64_t hi) {
    // zp points at B_k then A_k (stream order; a memoised stream, or z); Bt [r, n] and
    // At [r, m] are their columns. The buffers are the thread's, kept across calls: at a
    // tiny shape their allocation costs as much as the arithmetic.
    thread_local std::vector<float> z, Bt, At, t, corr;
    auto fit = [](std::vector<float>& v, int64_t size) {
      if (v.size() < static_cast<size_t>(size)) v.resize(static_cast<size_t>(size));
    };
    fit(t, r);
    if (r > 1) { fit(Bt, n * r); fit(At, m * r); fit(corr, m); }
    int64_t have_k = -1;
    const float* zp = nullptr;
    for (int64_t i = lo; i < hi; ++i) {
      const int64_t member = mem[i];
      MemberNoise mn = member_noise(member, a.antithetic);
      if (int64_t(mn.k) != have_k) {  // antithetic partners reuse the factors
        zp = normals_memo(a.noise(mn.k), (n + m) * r, z);
        if (r > 1) {
          for (int64_t j = 0; j < n; ++j) for (int64_t l = 0; l < r; ++l) Bt[l * n + j] = zp[j * r + l];
          for (int64_t o = 0; o < m; ++o) for (int64_t l = 0; l < r; ++l) At[l * m + o] = zp[n * r + o * r + l];
        }
        have_k = mn.k;
      }
      const float* Bl = r > 1 ? Bt.data() : zp;
      const float* Al = r > 1 ? At.data() : zp + n;
      const float c = detail::member_coef(member, a.antithetic, scale);
      for (int64_t row = 0; row < b; ++row) {
        const float* xr = xp + i * p.x_stride + row * n;
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

void fullrank_correction(const ForwardPlan& p) {
  const Members& mem = p.members;
  const Key& a = p.key;
  const int64_t n = p.n, m = p.m, b = p.b;
  if (p.M == 0 || m == 0 || n == 0 || b == 0) return;  // the correction is an empty sum
  const std::vector<int64_t> runs = detail::noise_runs(mem, a.antithetic);
  const int64_t nruns = int64_t(runs.size()) - 1;
  // Row blocks of Z_k of about 64 KiB: generated once, used by every member of the run.
  const int64_t RB = std::max<int64_t>(1, std::min<int64_t>(m, (16384 + n - 1) / n));
  const int64_t nblocks = (m + RB - 1) / RB;
  const float* xp = p.x.ptr<const float>();
  float* yp = p.out.ptr<float>();
  const double cost = double(RB * n) * 16 + double(RB * n * b) * 2 * double(p.M) / double(nruns);
  parallel_for(nruns * nblocks, detail::task_grain(cost, 1), [&](int64_t lo, int64_t hi) {
    std::vector<float> Z(static_cast<size_t>(RB * n));
    for (int64_t item = lo; item < hi; ++item) {
      const int64_t q = item / nblocks, o0 = (item % nblocks) * RB, rows = std::min(RB, m - o0);
      const MemberNoise mn = member_noise(mem[runs[q]], a.antithetic);
      fill_normal(Z.data(), rows * n, a.noise(mn.k), uint64_t(o0 * n));
      for (int64_t i = runs[q]; i < runs[q + 1]; ++i) {
        const float c = detail::member_coef(mem[i], a.antithetic, a.sigma);
        for (int64_t row = 0; row < b; ++row) {
          const float* xr = xp + i * p.x_stride + row * n;
          float* yr = yp + (i * b + row) * m + o0;
          for (int64_t o = 0; o < rows; ++o) yr[o] += c * dot16(xr, Z.data() + o * n, n);
        }
      }
    }
  });
}

void perturbed_matmul(const ForwardPlan& p) {
  check_cpu(p.x, "x");
  ScopedIeeeFloat ieee;
  float* yp = p.out.ptr<float>();
  const float* xp = p.x.ptr<const float>();
  const float* Wp = p.W.ptr<const float>();
  if (p.M == 0) return;
  const auto gemm = p.w_transposed ? &gemm_nk : &gemm_nt;
  if (!p.base) {  // the framework's product is added by the caller (docs/ops.md)
    std::fill(yp, yp + p.M * p.b * p.m, 0.0f);
  } else if (p.x_stride != 0 || p.M == 1) {
    gemm(xp, Wp, yp, p.M * p.b, p.m, p.n);
  } else {
    // A shared input: x W^T once, copied to every member. The core GEMM gives every row the
    // same bits whatever the row count (docs/ops.md), so this equals the materialised input.
    const int64_t block = p.b * p.m;
    gemm(xp, Wp, yp, p.b, p.m, p.n);
    parallel_for(p.M - 1, detail::task_grain(double(block), 16), [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo + 1; i < hi + 1; ++i)
        std::memcpy(yp + i * block, yp, size_t(block) * sizeof(float));
    });
  }
  if (!p.members.given) return;
  if (p.full_rank) fullrank_correction(p);
  else lowrank_correction(p);
}

VectorPlan check_perturb_vector(const TensorView& v, const Members& members, const Key& key,
                                const TensorView& out) {
  check_key(key, KeyUse::float_full);
  check_dtype(v, "v", DType::float32);
  if (v.ndim != 1) value_error("v: expected a vector [m], got shape " + v.shape_str());
  check_contiguous(v, "v");
  check_same_device(out, "out", v, "v");
  check_dtype(out, "out", DType::float32);
  VectorPlan p;
  p.v = v; p.out = out; p.members = members; p.key = key; p.m = v.shape[0];
  p.M = members.count;
  if (!members.given) value_error("members: required (a range or an index array)");
  if (out.ndim != 2 || out.shape[0] != p.M || out.shape[1] != p.m)
    shape_error("out", shape_str({p.M, p.m}), out);
  check_contiguous(out, "out");
  check_writeable(out, "out");
  check_no_overlap(out, "out", v, "v");
  check_members(members, p.M, key.antithetic, "out");
  check_member_device(members, v, "v");
  if (p.m > int64_t(kStreamLength)) value_error("v: more than the 2^34 values of one noise stream");
  return p;
}

void perturb_vector(const VectorPlan& p) {
  check_cpu(p.v, "v");
  ScopedIeeeFloat ieee;
  const Key& a = p.key;
  const int64_t m = p.m;
  const float* vp = p.v.ptr<const float>();
  float* op = p.out.ptr<float>();
  parallel_for(p.M, detail::task_grain(double(m) * 18, 16), [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      float* oi = op + i * m;
      const int64_t member = p.members[i];
      fill_normal(oi, m, a.noise(member_noise(member, a.antithetic).k), 0);
      const float c = detail::member_coef(member, a.antithetic, a.sigma);
      for (int64_t j = 0; j < m; ++j) oi[j] = vp[j] + c * oi[j];
    }
  });
}

FactorPlan check_lowrank_factors(const Members& members, int64_t m, int64_t n, const Key& key,
                                 const TensorView& A, const TensorView& B) {
  check_key(key, KeyUse::float_lowrank);
  if (m < 1 || n < 1)
    value_error("shape: expected (m, n) with positive sizes, got " + shape_str({m, n}));
  if (!members.given) value_error("members: required (a range or an index array)");
  FactorPlan p;
  p.A = A; p.B = B; p.members = members; p.key = key; p.M = members.count; p.m = m; p.n = n;
  const int64_t r = key.rank;
  detail::check_stream(m, n, r, false);
  check_same_device(B, "B", A, "A");
  for (const TensorView* t : {&A, &B}) {
    const char* name = t == &A ? "A" : "B";
    check_dtype(*t, name, DType::float32);
    const int64_t rows = t == &A ? m : n;
    if (t->ndim != 3 || t->shape[0] != p.M || t->shape[1] != rows || t->shape[2] != r)
      shape_error(name, shape_str({p.M, rows, r}), *t);
    check_contiguous(*t, name);
    check_writeable(*t, name);
  }
  check_no_overlap(A, "A", B, "B");
  check_members(members, p.M, key.antithetic, "A");
  check_member_device(members, A, "A");
  return p;
}

void lowrank_factors(const FactorPlan& p) {
  check_cpu(p.A, "A");
  ScopedIeeeFloat ieee;
  const Key& a = p.key;
  const int64_t r = a.rank, m = p.m, n = p.n;
  const double scale = a.sigma / std::sqrt(double(r));
  float* Ap = p.A.ptr<float>();
  float* Bp = p.B.ptr<float>();
  parallel_for(p.M, detail::task_grain(double((m + n) * r) * 18, 4), [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const int64_t member = p.members[i];
      const NoiseKey key = a.noise(member_noise(member, a.antithetic).k);
      fill_normal(Bp + i * n * r, n * r, key, 0);
      float* Ai = Ap + i * m * r;
      fill_normal(Ai, m * r, key, uint64_t(n * r));
      const float c = detail::member_coef(member, a.antithetic, scale);
      for (int64_t j = 0; j < m * r; ++j) Ai[j] = c * Ai[j];
    }
  });
}

}  // namespace eggroll
