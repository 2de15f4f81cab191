// The op entries of the Python modules, written once over a backend B: _core's CPU run
// (B = module.cpp's Cpu), _cuda's launchers (cuda_module.cpp's Cuda) or the trace-time check
// (Check: abstract arrays, no run; check_<op> returns the outputs' (shape, dtype)). Each entry
// parses its arguments (bridge.h), calls the core's check_<op> (the one home of the rules and
// their messages), allocates the outputs with the caller's framework, and runs the plan.
//
// The entry shape (positional; KEY = seed, param_id, epoch, noise_reuse, antithetic, sigma,
// rank, fixed_point, sigma_shift; the CUDA module adds a trailing `stream` int):
//   perturbed_matmul(x, W, members, out, shared, base, *KEY) -> out   (and perturbed_matmul_full)
//   perturb_vector(v, members, out, *KEY) -> out
//   perturbed_embedding(ids, W, members, out, shared, *KEY) -> out
//   lowrank_factors(like, shape, members, *KEY) -> (A, B)
//   es_gradient(fitness, shape, members, out, full_rank, population, accumulate, *KEY) -> g
//   es_gradient_factors(fitness, shape, members, population, *KEY) -> (Af, Bf)
//   centered_rank(f, out, 0) / zscore(f, out, group_size) / antithetic_sign(f, out, 0) -> out
//   perturbed_matmul_int8(x, W, members, out, shared, base, *KEY) -> out   (base must be True)
//   int8_update(W, pair_fitness, out, threshold, *KEY) -> out
//   normal(like, count, offset, seed, param_id, epoch_index, noise_index) -> out
//   philox4x32(counter, key, out) -> out
// members: None, a range, or an index array; out: None (allocated) or an array; shared: x has
// no member axis (x [n] or [b, n] is every member's input; no members: the plain product);
// base: False leaves x W^T out of the result (the caller adds its framework's, docs/ops.md).
#pragma once
#include <pybind11/pybind11.h>
#include <cmath>
#include <deque>
#include <string>
#include <vector>
#include "bridge.h"
#include "eggroll/eggroll.h"

namespace eggroll::bridge {

inline constexpr Py_ssize_t kKeyArgs = 9;

inline TensorView abstract(const std::vector<int64_t>& shape, DType dtype, const TensorView& ref) {
  TensorView t;
  t.ndim = int(shape.size());
  check_ndim(t.ndim, "out");
  for (int i = 0; i < t.ndim; ++i) t.shape[i] = shape[size_t(i)];
  set_contiguous_strides(t);
  t.dtype = dtype;
  t.device = ref.device;
  t.device_index = ref.device_index;
  return t;
}

// out at argument i: the caller's array (with a leading axis of 1 added when the caller's
// shape has none), or an abstract view of `shape` to allocate once the check has passed.
inline TensorView out_view(Call& c, Py_ssize_t i, const std::vector<int64_t>& shape, DType dtype,
                           const TensorView& ref, bool add_axis) {
  if (c.none(i) || c.abstract) return abstract(shape, dtype, ref);
  TensorView o = c.view(c.at(i), "out");
  return add_axis ? with_member_axis(o, 1, "out") : o;
}

// The result: at trace time the output's (shape, dtype); else out (argument i) or a new array
// (of the caller-facing `shape` when given), filled by the plan.
template <class B, class Plan>
py::object finish(Call& c, Plan& p, Py_ssize_t i, std::vector<int64_t> shape = {}) {
  if (c.abstract) return spec(p.out, shape);
  py::object res = c.result(i, p.out, std::move(shape));
  B::run(c, p);
  return res;
}

// The same for a plan with two new outputs a and b (its fields): (a, b) or their specs.
template <class B, class Plan>
py::object finish_pair(Call& c, Plan& p, TensorView& a, TensorView& b) {
  if (c.abstract) return py::make_tuple(spec(a), spec(b));
  py::object ra = c.allocate(a), rb = c.allocate(b);
  B::run(c, p);
  return py::make_tuple(ra, rb);
}

// The forwards (float low rank / full rank / int8): x, W, members, out, shared, base, *KEY.
template <class B, class Plan, Plan (*Check)(const TensorView&, const TensorView&, const Members&,
                                             const Key&, const TensorView&)>
py::object forward(Call& c) {
  const bool int8 = std::is_same_v<Plan, Int8ForwardPlan>;
  TensorView x = int8 ? c.array(0, "x") : c.float_array(0, "x");
  TensorView W = int8 ? c.array(1, "W") : c.float_array(1, "W");
  const Members mem = c.members(2, B::kDevice);
  const bool shared = c.shared = c.flag(4, "shared");
  const bool base = c.flag(5, "base");
  if (int8 && !base) value_error("base: the int8 forward always computes its (exact) base product");
  const Key key = c.key(6, B::kDevice);
  // A shared input has no member axis: the core sees one of stride 0 (M = the members, or 1
  // without members, in which case the caller's result has no member axis either).
  const bool drop = shared && !mem.given;
  const TensorView xv = shared ? with_member_axis(x, mem.given ? mem.count : 1, "x") : x;
  std::vector<int64_t> shape(xv.shape, xv.shape + std::max(xv.ndim, 1));
  shape.back() = W.ndim >= 1 ? W.shape[0] : 0;
  const DType odt = int8 || is_float(x.dtype) ? x.dtype : DType::float32;
  Plan p = Check(xv, W, mem, key, out_view(c, 3, shape, odt, x, drop));
  if constexpr (!std::is_same_v<Plan, Int8ForwardPlan>) p.base = base;
  if (drop) shape.erase(shape.begin());
  return finish<B>(c, p, 3, shape);
}

template <bool Full>
ForwardPlan check_float(const TensorView& x, const TensorView& W, const Members& m, const Key& k,
                        const TensorView& o) { return check_perturbed_matmul(x, W, m, k, o, Full); }

// perturbed_embedding(ids, W, members, out, shared, *KEY) -> out float32 [M, ..., d]:
// ids int64 / int32 [M, ...] (shared: [...], every member's), W [V, d].
template <class B>
py::object perturbed_embedding(Call& c) {
  const TensorView ids = c.array(0, "ids");
  const TensorView W = c.float_array(1, "W");
  const Members mem = c.members(2, B::kDevice);
  const bool shared = c.shared = c.flag(4, "shared");
  const Key key = c.key(5, B::kDevice);  // on CUDA, seed and epoch may be device scalars
  const bool drop = shared && !mem.given;
  const TensorView iv = shared ? with_member_axis(ids, mem.given ? mem.count : 1, "ids") : ids;
  const TensorView rows = embedding_rows(iv);
  const int64_t d = W.ndim == 2 ? W.shape[1] : 0;
  std::vector<int64_t> shape(iv.shape, iv.shape + iv.ndim);
  shape.push_back(d);
  TensorView out = abstract({rows.shape[0], rows.shape[1], d}, DType::float32, ids);
  if (!c.none(3) && !c.abstract) {  // the caller's out [M, ..., d] (or [..., d] when dropped)
    TensorView o = c.view(c.at(3), "out");
    if (drop) o = with_member_axis(o, 1, "out");
    if (o.ndim != int(shape.size()) || !std::equal(shape.begin(), shape.end(), o.shape))
      shape_error("out", abstract(shape, DType::float32, ids).shape_str(), o);
    check_contiguous(o, "out");
    out = embedding_out(o, rows);
  }
  EmbeddingPlan p = check_perturbed_embedding(rows, W, mem, key, out);
  if (drop) shape.erase(shape.begin());
  return finish<B>(c, p, 3, shape);
}

// perturb_vector(v, members, out, *KEY)
template <class B>
py::object perturb_vector(Call& c) {
  const TensorView v = c.float_array(0, "v");
  const Members mem = c.members(1, B::kDevice);
  const Key key = c.key(3, B::kDevice);
  const std::vector<int64_t> shape = {mem.count, v.ndim >= 1 ? v.shape[0] : 0};
  VectorPlan p = check_perturb_vector(v, mem, key, out_view(c, 2, shape, DType::float32, v, false));
  return finish<B>(c, p, 2);
}

// The device of `like` (an array of the framework and device the results go to; None: NumPy).
inline TensorView like_view(Call& c, Py_ssize_t i) { return c.none(i) ? TensorView{} : c.array(i, "like"); }

// lowrank_factors(like, shape, members, *KEY) -> (A [M, m, r], B [M, n, r])
template <class B>
py::object lowrank_factors(Call& c) {
  const TensorView ref = like_view(c, 0);
  const std::vector<int64_t> d = c.dims(1, "shape");
  if (d.size() != 2)
    value_error("shape: expected (m, n) for a matrix parameter, got " + std::to_string(d.size()) +
                " dimensions");
  const Members mem = c.members(2, B::kDevice);
  const Key key = c.key(3, B::kDevice);
  const int64_t r = key.rank >= 1 && key.rank <= kMaxRank ? key.rank : 1;
  const int64_t M = mem.count, m = d[0], n = d[1];
  const bool sane = m >= 1 && n >= 1 && double(m + n) * double(r) <= double(kStreamLength);
  TensorView A = abstract({M, sane ? m : 1, r}, DType::float32, ref);
  TensorView Bv = abstract({M, sane ? n : 1, r}, DType::float32, ref);
  FactorPlan p = check_lowrank_factors(mem, m, n, key, A, Bv);
  return finish_pair<B>(c, p, p.A, p.B);
}

// The members of an es_gradient call (default: range(N)) and its population (default N).
inline Members gradient_members(Call& c, Py_ssize_t i, const TensorView& f, bool device_ok) {
  return c.none(i) ? Members::range(0, 1, f.ndim == 1 ? f.shape[0] : 0) : c.members(i, device_ok);
}
inline int64_t population(Call& c, Py_ssize_t i, const TensorView& f) {
  return c.none(i) ? (f.ndim == 1 ? f.shape[0] : 0) : c.int_(i, "population");
}

// es_gradient(fitness, shape, members, out, full_rank, population, accumulate, *KEY) -> g
template <class B>
py::object es_gradient(Call& c) {
  const TensorView f = c.float_array(0, "fitness");
  const std::vector<int64_t> d = c.dims(1, "shape");
  const Members mem = gradient_members(c, 2, f, B::kDevice);
  const bool full = c.flag(4, "full_rank");
  const int64_t N = population(c, 5, f);
  const bool acc = c.flag(6, "accumulate");
  const Key key = c.key(7, B::kDevice);
  std::vector<int64_t> shape(d.begin(), d.begin() + std::min<size_t>(d.size(), TensorView::kMaxDims));
  GradientPlan p = check_es_gradient(f, mem, key, full, N, acc,
                                     out_view(c, 3, shape, DType::float32, f, false));
  return finish<B>(c, p, 3);
}

// es_gradient_factors(fitness, shape, members, population, *KEY) -> (Af [C, m], Bf [C, n]),
// C = the members' runs times rank (host members), or the bound M * rank (device members).
template <class B>
py::object es_gradient_factors(Call& c) {
  const TensorView f = c.float_array(0, "fitness");
  const std::vector<int64_t> d = c.dims(1, "shape");
  if (d.size() != 2) value_error("shape: expected (m, n) for a low-rank estimate");
  const Members mem = gradient_members(c, 2, f, B::kDevice);
  const int64_t N = population(c, 3, f);
  const Key key = c.key(4, B::kDevice);
  const int64_t r = key.rank >= 1 && key.rank <= kMaxRank ? key.rank : 1;
  const bool host = !mem.index || mem.device == Device::cpu;
  const int64_t C = c.abstract || !host ? mem.count * r : es_gradient_columns(mem, key.antithetic, r);
  const bool sane = d[0] >= 1 && d[1] >= 1 && double(d[0]) * double(d[1]) <= double(kStreamLength);
  TensorView Af = abstract({C, sane ? d[0] : 1}, DType::float32, f);
  TensorView Bf = abstract({C, sane ? d[1] : 1}, DType::float32, f);
  FactorRowsPlan p = check_es_gradient_factors(f, mem, d[0], d[1], key, N, Af, Bf);
  return finish_pair<B>(c, p, p.Af, p.Bf);
}

// centered_rank / zscore / antithetic_sign (f, out, group_size) -> out
template <class B, Shaping Kind>
py::object shaping(Call& c) {
  const TensorView f = c.shaping_array(0, "f");
  const int64_t g = Kind == Shaping::zscore ? c.int_(2, "group_size") : 0;
  const int64_t N = f.ndim == 1 ? f.shape[0] : 0;
  ShapingPlan p = check_fitness_shaping(
      Kind, f, g, out_view(c, 1, {shaped_length(Kind, N)}, DType::float32, f, false));
  return finish<B>(c, p, 1);
}

// int8_update(W, pair_fitness, out, threshold, *KEY) -> out. Host pair_fitness of another
// real dtype is converted to int8 exactly (a value outside {-1, 0, 1} becomes 2, which the
// check rejects by index); device pair_fitness must be int8 already (docs/ops.md).
template <class B>
py::object int8_update(Call& c) {
  const TensorView W = c.array(0, "W");
  const TensorView f = c.exact(1, "pair_fitness", DType::int8, -1, 1, 2);
  const int64_t T = c.int_(3, "threshold");
  const Key key = c.key(4, B::kDevice);
  const std::vector<int64_t> shape(W.shape, W.shape + W.ndim);
  TensorView out = out_view(c, 2, shape, DType::int8, W, false);
  Int8UpdatePlan p = check_int8_update(W, f, T, key, out);
  return finish<B>(c, p, 2);
}

// normal(like, count, offset, seed, param_id, epoch_index, noise_index) -> float32 [count]
template <class B>
py::object normal(Call& c) {
  const TensorView ref = like_view(c, 0);
  const int64_t count = c.int_(1, "count"), offset = c.int_(2, "offset");
  if (count < 0 || count > int64_t(kStreamLength))
    value_error("count: must be in [0, 2^34] (one noise stream), got " + std::to_string(count));
  if (offset < 0) value_error("offset: must be >= 0, got " + std::to_string(offset));
  NoiseKey k;
  k.seed = c.seed(3);
  const char* names[3] = {"param_id", "epoch_index", "noise_index"};
  uint32_t* fields[3] = {&k.param_id, &k.epoch_index, &k.noise_index};
  for (int j = 0; j < 3; ++j) {
    const int64_t v = c.int_(4 + j, names[j]);
    if (v < 0 || v > int64_t(UINT32_MAX))
      value_error(std::string(names[j]) + ": must be in [0, 2^32), got " + std::to_string(v));
    *fields[j] = uint32_t(v);
  }
  const bool sane = double(count) <= double(kStreamLength);
  NormalPlan p = check_normal(abstract({sane ? count : int64_t(kStreamLength) + 1}, DType::float32, ref),
                              k, uint64_t(offset));
  return finish<B>(c, p, -1);  // no out argument
}

// philox4x32(counter, key, out) -> out uint32 [..., 4]
template <class B>
py::object philox4x32(Call& c) {
  const TensorView counter = c.exact(0, "counter", DType::uint32, 0, 4294967295.0, -1, false);
  const TensorView key = c.exact(1, "key", DType::uint32, 0, 4294967295.0, -1, false);
  PhiloxPlan p = check_philox4x32(
      counter, key,
      out_view(c, 2, std::vector<int64_t>(counter.shape, counter.shape + counter.ndim),
               DType::uint32, counter, false));
  return finish<B>(c, p, 2);
}

// The trace-time backend: plans are made (all checks run), nothing is.
struct Check {
  static constexpr bool kDevice = false;
  template <class Plan> static void run(Call&, const Plan&) {}
};

// Each entry (name, its function over a backend B) as a METH_FASTCALL builtin of the module,
// and the check_<name> entries when B is the CPU backend.
#define EGGROLL_OP_TABLE(X, B)                                                                  \
  X(perturbed_matmul, (forward<B, ForwardPlan, &check_float<false>>))                          \
  X(perturbed_matmul_full, (forward<B, ForwardPlan, &check_float<true>>))                      \
  X(perturbed_matmul_int8, (forward<B, Int8ForwardPlan, &check_perturbed_matmul_int8>))        \
  X(perturb_vector, perturb_vector<B>) X(lowrank_factors, lowrank_factors<B>)                  \
  X(es_gradient, es_gradient<B>) X(es_gradient_factors, es_gradient_factors<B>)               \
  X(int8_update, int8_update<B>) X(normal, normal<B>) X(philox4x32, philox4x32<B>)            \
  X(centered_rank, (shaping<B, Shaping::centered_rank>)) X(zscore, (shaping<B, Shaping::zscore>)) \
  X(antithetic_sign, (shaping<B, Shaping::antithetic_sign>)) X(perturbed_embedding, perturbed_embedding<B>)

inline void add_function(py::module_& mod, const char* name, _PyCFunctionFast fn, const char* doc) {
  static std::deque<PyMethodDef> defs;  // stable addresses, never freed (as the module's)
  defs.push_back({name, reinterpret_cast<PyCFunction>(reinterpret_cast<void*>(fn)), METH_FASTCALL, doc});
  py::object f = py::reinterpret_steal<py::object>(PyCFunction_NewEx(&defs.back(), nullptr, mod.attr("__name__").ptr()));
  if (!f) throw_py();
  mod.attr(name) = f;
}

template <class B>
void add_ops(py::module_& mod, bool with_checks) {
#define EGGROLL_ADD(name, fn) add_function(mod, #name, &entry<&fn>, "eggroll op (docs/backends.md)");
  EGGROLL_OP_TABLE(EGGROLL_ADD, B)
#undef EGGROLL_ADD
#define EGGROLL_ADD(name, fn) \
  add_function(mod, "check_" #name, &entry<&fn, true>, "trace-time check: the outputs' (shape, dtype)");
  if (with_checks) { EGGROLL_OP_TABLE(EGGROLL_ADD, Check) }
#undef EGGROLL_ADD
}

}  // namespace eggroll::bridge
