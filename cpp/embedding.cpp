// Perturbed embedding lookup: the check (every rule, once) and the CPU run. Parallel
// decomposition: the (member, block of 64 tokens) items are split over the pool; each output
// row is written by exactly one item, in a fixed order, so the bits do not depend on the
// thread count.
#include "eggroll/embedding.h"
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>
#include "eggroll/check.h"
#include "eggroll/noise.h"
#include "eggroll/parallel.h"
#include "kernels.h"

namespace eggroll {

namespace {

constexpr int64_t kTokenBlock = 64;

template <class Id>
void check_ids(const Id* p, int64_t M, int64_t T, int64_t stride0, int64_t V) {
  for (int64_t i = 0; i < (stride0 ? M : 1); ++i)
    for (int64_t t = 0; t < T; ++t) {
      const int64_t id = int64_t(p[i * stride0 + t]);
      if (id < 0 || id >= V)
        value_error("ids: every id must be in [0, " + std::to_string(V) + ") (the rows of W), got " +
                    std::to_string(id));
    }
}

// out[i, t, :] for every token of items [lo, hi): W[id] + sum_l (c A_k[id, l]) B_k[:, l].
// The rounding sequence is the reference's: t_l = c * a_l; corr = t_0 B_0 (+ t_l B_l, in
// order); row = W[id] + corr.
template <class Id>
void lookup(const EmbeddingPlan& p, const Id* ids, int64_t lo, int64_t hi) {
  const Key& a = p.key;
  const Members& mem = p.members;
  const int64_t r = a.rank, T = p.T, d = p.d, nblocks = (T + kTokenBlock - 1) / kTokenBlock;
  const double scale = a.sigma / std::sqrt(double(r));
  const float* W = p.W.ptr<const float>();
  float* out = p.out.ptr<float>();
  std::vector<float> B, Bt, A(static_cast<size_t>(r)), t(static_cast<size_t>(r)), corr;
  if (mem.given) {
    B.resize(static_cast<size_t>(d * r));
    if (r > 1) { Bt.resize(static_cast<size_t>(d * r)); corr.resize(static_cast<size_t>(d)); }
  }
  int64_t have_k = -1;
  for (int64_t item = lo; item < hi; ++item) {
    const int64_t i = item / nblocks, t0 = (item % nblocks) * kTokenBlock;
    const int64_t t1 = std::min(T, t0 + kTokenBlock);
    const Id* row_ids = ids + i * p.ids_stride;
    if (!mem.given) {
      for (int64_t tok = t0; tok < t1; ++tok)
        std::copy_n(W + int64_t(row_ids[tok]) * d, d, out + (i * T + tok) * d);
      continue;
    }
    const int64_t member = mem[i];
    const MemberNoise mn = member_noise(member, a.antithetic);
    const NoiseKey key = a.noise(mn.k);
    if (int64_t(mn.k) != have_k) {  // B_k: the first d*r stream values ([d, r] row-major)
      fill_normal(B.data(), d * r, key, 0);
      if (r > 1)
        for (int64_t j = 0; j < d; ++j)
          for (int64_t l = 0; l < r; ++l) Bt[size_t(l * d + j)] = B[size_t(j * r + l)];
      have_k = mn.k;
    }
    const float* Bl = r > 1 ? Bt.data() : B.data();
    const float c = detail::member_coef(member, a.antithetic, scale);
    for (int64_t tok = t0; tok < t1; ++tok) {
      const int64_t id = int64_t(row_ids[tok]);
      fill_normal(A.data(), r, key, uint64_t(d * r + id * r));  // A_k's row id only
      for (int64_t l = 0; l < r; ++l) t[size_t(l)] = c * A[size_t(l)];
      float* o = out + (i * T + tok) * d;
      const float* w = W + id * d;
      if (r == 1) {
        std::copy_n(w, d, o);
        detail::axpy(o, t[0], Bl, d);  // o = W[id] + t_0 B_0, the product rounded first
      } else {
        for (int64_t j = 0; j < d; ++j) corr[size_t(j)] = t[0] * Bl[j];
        for (int64_t l = 1; l < r; ++l) detail::axpy(corr.data(), t[size_t(l)], Bl + l * d, d);
        for (int64_t j = 0; j < d; ++j) o[j] = w[j] + corr[size_t(j)];
      }
    }
  }
}

}  // namespace

TensorView embedding_rows(const TensorView& ids) {
  if (ids.ndim < 1) value_error("ids: expected [M, ...] (one row of ids per member), got a scalar");
  TensorView rows = ids;
  int64_t T = 1;
  for (int i = ids.ndim - 1; i >= 1; --i) {
    if (ids.shape[i] != 1 && ids.strides[i] != T)
      value_error("ids: each member's ids must be contiguous (make a contiguous copy first, e.g. "
                  "numpy.ascontiguousarray or tensor.contiguous())");
    T *= ids.shape[i];
  }
  rows.ndim = 2;
  rows.shape[1] = T;
  rows.strides[1] = 1;
  if (ids.shape[0] <= 1) rows.strides[0] = T;  // one member: its row, whatever the stride
  return rows;
}

TensorView embedding_out(const TensorView& out, const TensorView& rows) {
  const int64_t M = rows.shape[0], T = rows.shape[1];
  if (out.ndim < 2 || !out.is_contiguous() || out.shape[0] != M) return out;
  int64_t lead = 1;
  for (int i = 0; i < out.ndim - 1; ++i) lead *= out.shape[i];
  if (lead != M * T) return out;
  TensorView o = out;
  const int64_t d = out.shape[out.ndim - 1];
  o.ndim = 3;
  o.shape[0] = M; o.shape[1] = T; o.shape[2] = d;
  o.strides[0] = T * d; o.strides[1] = d; o.strides[2] = 1;
  return o;
}

EmbeddingPlan check_perturbed_embedding(const TensorView& ids, const TensorView& W,
                                        const Members& members, const Key& key,
                                        const TensorView& out) {
  check_key(key, KeyUse::float_lowrank);
  if (ids.dtype != DType::int64 && ids.dtype != DType::int32)
    type_error(std::string("ids: expected int64 or int32 token ids, got ") + dtype_name(ids.dtype));
  if (ids.ndim != 2) value_error("ids: expected [M, T], got shape " + ids.shape_str());
  check_same_device(W, "W", ids, "ids");
  check_same_device(out, "out", ids, "ids");
  EmbeddingPlan p;
  p.M = ids.shape[0]; p.T = ids.shape[1];
  if (p.T > 1 && ids.strides[1] != 1) value_error("ids: each member's row of ids must be contiguous");
  const bool shared = p.M > 1 && ids.strides[0] == 0;
  if (p.M > 1 && !shared && ids.strides[0] != p.T)
    value_error("ids: axis 0 must be contiguous or broadcast (stride 0), got stride " +
                std::to_string(ids.strides[0]));
  p.ids_stride = shared ? 0 : p.T;
  check_dtype(W, "W", DType::float32);
  if (W.ndim != 2) value_error("W: expected a table [V, d], got shape " + W.shape_str());
  check_contiguous(W, "W");
  p.V = W.shape[0]; p.d = W.shape[1];
  check_dtype(out, "out", DType::float32);
  if (out.ndim != 3 || out.shape[0] != p.M || out.shape[1] != p.T || out.shape[2] != p.d)
    shape_error("out", shape_str({p.M, p.T, p.d}), out);
  check_contiguous(out, "out");
  check_writeable(out, "out");
  check_no_overlap(out, "out", W, "W");
  TensorView span = ids;  // the memory ids really spans (one row when shared)
  if (shared) span.shape[0] = 1;
  check_no_overlap(out, "out", span, "ids");
  if (members.given) {
    check_members(members, p.M, key.antithetic, "ids");
    detail::check_member_device(members, ids, "ids");
    detail::check_stream(p.V, p.d, key.rank, false);
  }
  if (p.M * p.T != 0 && p.V == 0) value_error("W: the table has no rows, so no id is valid");
  // Host ids are checked here, before anything is written: a bad call leaves out untouched.
  if (ids.data && ids.device == Device::cpu && p.M * p.T != 0) {
    if (ids.dtype == DType::int64) check_ids(ids.ptr<const int64_t>(), p.M, p.T, p.ids_stride, p.V);
    else check_ids(ids.ptr<const int32_t>(), p.M, p.T, p.ids_stride, p.V);
  }
  p.ids = ids; p.W = W; p.out = out; p.members = members; p.key = key;
  return p;
}

void perturbed_embedding(const EmbeddingPlan& p) {
  check_cpu(p.ids, "ids");
  if (p.M == 0 || p.T == 0 || p.d == 0) return;
  ScopedIeeeFloat ieee;
  const int64_t items = p.M * ((p.T + kTokenBlock - 1) / kTokenBlock);
  parallel_for(items, 1, [&](int64_t lo, int64_t hi) {
    if (p.ids.dtype == DType::int64) lookup(p, p.ids.ptr<const int64_t>(), lo, hi);
    else lookup(p, p.ids.ptr<const int32_t>(), lo, hi);
  });
}

}  // namespace eggroll
