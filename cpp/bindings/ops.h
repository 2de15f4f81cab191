// The op entries of the Python modules, written once over a backend B: _core's CPU run
// (B = module.cpp's Cpu), _cuda's launchers (cuda_module.cpp's Cuda) or the trace-time check
// (Check: abstract arrays, no run; check_<op> returns a tuple of the outputs' (shape, dtype)).
// Each entry parses its arguments (bridge.h), calls the core's check_<op> (the one home of the
// rules and their messages), allocates the outputs with the caller's framework, and runs the
// plan.
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
//
// Each op's plan is made once, over where its arguments come from: C is a Python call
// (bridge.h's Call, the entry shape above) or an XLA handler's buffers and attributes
// (xla_ffi_common.h's Call, the same names). Both give array(i, name) & co., flag / int_ (by
// name in XLA's attributes), members, key, dims, none, like_view and out(i, shape, dtype,
// ref, add_axis): the caller's out at argument i (a leading axis of 1 added when add_axis), or
// a view of `shape` to allocate (XLA: the next result). result_shape: the caller-facing shape
// of a new output, where it is not the plan's.
#pragma once
#include <pybind11/pybind11.h>
#include <cmath>
#include <deque>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>
#include "bridge.h"
#include "eggroll/eggroll.h"

namespace eggroll::bridge {

// The forwards (float low rank / full rank / int8): x, W, members, out, shared, base, *KEY.
template <class Plan, Plan (*Check)(const TensorView&, const TensorView&, const Members&,
                                    const Key&, const TensorView&), class C>
Plan forward(C& c) {
  const bool int8 = std::is_same_v<Plan, Int8ForwardPlan>;
  TensorView x = int8 ? c.array(0, "x") : c.float_array(0, "x");
  TensorView W = int8 ? c.array(1, "W") : c.float_array(1, "W");
  const Members mem = c.members(2, c.device_ok);
  const bool shared = c.shared = c.flag(4, "shared");
  const bool base = c.flag(5, "base");
  if (int8 && !base) value_error("base: the int8 forward always computes its (exact) base product");
  const Key key = c.key(6, c.device_ok);
  // A shared input has no member axis: the core sees one of stride 0 (M = the members, or 1
  // without members, in which case the caller's result has no member axis either).
  const bool drop = shared && !mem.given;
  const TensorView xv = shared ? with_member_axis(x, mem.given ? mem.count : 1, "x") : x;
  std::vector<int64_t> shape(xv.shape, xv.shape + std::max(xv.ndim, 1));
  shape.back() = W.ndim >= 1 ? W.shape[0] : 0;
  const DType odt = int8 || is_float(x.dtype) ? x.dtype : DType::float32;
  Plan p = Check(xv, W, mem, key, c.out(3, shape, odt, x, drop));
  if constexpr (!std::is_same_v<Plan, Int8ForwardPlan>) p.base = base;
  if (drop) shape.erase(shape.begin());
  c.result_shape = shape;
  return p;
}

template <bool Full>
ForwardPlan check_float(const TensorView& x, const TensorView& W, const Members& m, const Key& k,
                        const TensorView& o) { return check_perturbed_matmul(x, W, m, k, o, Full); }

// perturbed_embedding(ids, W, members, out, shared, *KEY) -> out float32 [M, ..., d]:
// ids int64 / int32 [M, ...] (shared: [...], every member's), W [V, d].
template <class C>
EmbeddingPlan perturbed_embedding(C& c) {
  const TensorView ids = c.array(0, "ids");
  const TensorView W = c.float_array(1, "W");
  const Members mem = c.members(2, c.device_ok);
  const bool shared = c.shared = c.flag(4, "shared");
  const Key key = c.key(5, c.device_ok);  // on CUDA, seed and epoch may be device scalars
  const bool drop = shared && !mem.given;
  const TensorView iv = shared ? with_member_axis(ids, mem.given ? mem.count : 1, "ids") : ids;
  const TensorView rows = embedding_rows(iv);
  std::vector<int64_t> shape(iv.shape, iv.shape + iv.ndim);
  shape.push_back(W.ndim == 2 ? W.shape[1] : 0);
  const TensorView o = c.out(3, shape, DType::float32, ids, drop);  // [M, ..., d] as [M, T, d]
  if (o.ndim != int(shape.size()) || !std::equal(shape.begin(), shape.end(), o.shape))
    shape_error("out", abstract(shape, DType::float32, ids).shape_str(), o);
  check_contiguous(o, "out");
  EmbeddingPlan p = check_perturbed_embedding(rows, W, mem, key, embedding_out(o, rows));
  if (drop) shape.erase(shape.begin());
  c.result_shape = shape;
  return p;
}

// perturb_vector(v, members, out, *KEY)
template <class C>
VectorPlan perturb_vector(C& c) {
  const TensorView v = c.float_array(0, "v");
  const Members mem = c.members(1, c.device_ok);
  const Key key = c.key(3, c.device_ok);
  const std::vector<int64_t> shape = {mem.count, v.ndim >= 1 ? v.shape[0] : 0};
  return check_perturb_vector(v, mem, key, c.out(2, shape, DType::float32, v, false));
}

// lowrank_factors(like, shape, members, *KEY) -> (A [M, m, r], B [M, n, r])
template <class C>
FactorPlan lowrank_factors(C& c) {
  const TensorView ref = c.like_view(0);
  const std::vector<int64_t> d = c.dims(1, "shape");
  if (d.size() != 2)
    value_error("shape: expected (m, n) for a matrix parameter, got " + std::to_string(d.size()) +
                " dimensions");
  const Members mem = c.members(2, c.device_ok);
  const Key key = c.key(3, c.device_ok);
  const int64_t r = key.rank >= 1 && key.rank <= kMaxRank ? key.rank : 1;
  const int64_t M = mem.count, m = d[0], n = d[1];
  const bool sane = m >= 1 && n >= 1 && double(m + n) * double(r) <= double(kStreamLength);
  const TensorView A = c.out(-1, {M, sane ? m : 1, r}, DType::float32, ref, false);
  const TensorView B = c.out(-1, {M, sane ? n : 1, r}, DType::float32, ref, false);
  return check_lowrank_factors(mem, m, n, key, A, B);
}

// The members of an es_gradient call (default: range(N)) and its population (default N).
template <class C>
Members gradient_members(C& c, Py_ssize_t i, const TensorView& f) {
  return c.none(i) ? Members::range(0, 1, f.ndim == 1 ? f.shape[0] : 0) : c.members(i, c.device_ok);
}
template <class C>
int64_t population(C& c, Py_ssize_t i, const TensorView& f) {
  return c.none(i) ? (f.ndim == 1 ? f.shape[0] : 0) : c.int_(i, "population");
}

// es_gradient(fitness, shape, members, out, full_rank, population, accumulate, *KEY) -> g
template <class C>
GradientPlan es_gradient(C& c) {
  const TensorView f = c.float_array(0, "fitness");
  const std::vector<int64_t> d = c.dims(1, "shape");
  const Members mem = gradient_members(c, 2, f);
  const bool full = c.flag(4, "full_rank");
  const int64_t N = population(c, 5, f);
  const bool acc = c.flag(6, "accumulate");
  const Key key = c.key(7, c.device_ok);
  std::vector<int64_t> shape(d.begin(), d.begin() + std::min<size_t>(d.size(), TensorView::kMaxDims));
  return check_es_gradient(f, mem, key, full, N, acc, c.out(3, shape, DType::float32, f, false));
}

// es_gradient_factors(fitness, shape, members, population, *KEY) -> (Af [C, m], Bf [C, n]),
// C = the members' runs times rank (host members), or the bound M * rank (device members).
template <class C>
FactorRowsPlan es_gradient_factors(C& c) {
  const TensorView f = c.float_array(0, "fitness");
  const std::vector<int64_t> d = c.dims(1, "shape");
  if (d.size() != 2) value_error("shape: expected (m, n) for a low-rank estimate");
  const Members mem = gradient_members(c, 2, f);
  const int64_t N = population(c, 3, f);
  const Key key = c.key(4, c.device_ok);
  const int64_t r = key.rank >= 1 && key.rank <= kMaxRank ? key.rank : 1;
  const bool host = !mem.index || mem.device == Device::cpu;
  const int64_t rows = !host ? mem.count * r : es_gradient_columns(mem, key.antithetic, r);
  const bool sane = d[0] >= 1 && d[1] >= 1 && double(d[0]) * double(d[1]) <= double(kStreamLength);
  const TensorView Af = c.out(-1, {rows, sane ? d[0] : 1}, DType::float32, f, false);
  const TensorView Bf = c.out(-1, {rows, sane ? d[1] : 1}, DType::float32, f, false);
  return check_es_gradient_factors(f, mem, d[0], d[1], key, N, Af, Bf);
}

// centered_rank / zscore / antithetic_sign (f, out, group_size) -> out
template <Shaping Kind, class C>
ShapingPlan shaping(C& c) {
  const TensorView f = c.shaping_array(0, "f");
  const int64_t g = Kind == Shaping::zscore ? c.int_(2, "group_size") : 0;
  const int64_t N = f.ndim == 1 ? f.shape[0] : 0;
  return check_fitness_shaping(Kind, f, g, c.out(1, {shaped_length(Kind, N)}, DType::float32, f, false));
}

// int8_update(W, pair_fitness, out, threshold, *KEY) -> out. Host pair_fitness of another
// real dtype is converted to int8 exactly (a value outside {-1, 0, 1} becomes 2, which the
// check rejects by index); device pair_fitness must be int8 already (docs/ops.md).
template <class C>
Int8UpdatePlan int8_update(C& c) {
  const TensorView W = c.array(0, "W");
  const TensorView f = c.exact(1, "pair_fitness", DType::int8, -1, 1, 2);
  const int64_t T = c.int_(3, "threshold");
  const Key key = c.key(4, c.device_ok);
  const std::vector<int64_t> shape(W.shape, W.shape + W.ndim);
  return check_int8_update(W, f, T, key, c.out(2, shape, DType::int8, W, false));
}

// normal(like, count, offset, seed, param_id, epoch_index, noise_index) -> float32 [count]
template <class C>
NormalPlan normal(C& c) {
  const TensorView ref = c.like_view(0);
  const int64_t count = c.int_(1, "count"), offset = c.int_(2, "offset");
  if (count < 0 || count > int64_t(kStreamLength))
    value_error("count: must be in [0, 2^34] (one noise stream), got " + std::to_string(count));
  if (offset < 0) value_error("offset: must be >= 0, got " + std::to_string(offset));
  NoiseKey k;
  k.seed = c.seed(3);
  k.param_id = c.u32(4, "param_id");
  k.epoch_index = c.u32(5, "epoch_index");
  k.noise_index = c.u32(6, "noise_index");
  const bool sane = double(count) <= double(kStreamLength);
  return check_normal(abstract({sane ? count : int64_t(kStreamLength) + 1}, DType::float32, ref),
                      k, uint64_t(offset));
}

// philox4x32(counter, key, out) -> out uint32 [..., 4]
template <class C>
PhiloxPlan philox4x32(C& c) {
  const TensorView counter = c.exact(0, "counter", DType::uint32, 0, 4294967295.0, -1, false);
  const TensorView key = c.exact(1, "key", DType::uint32, 0, 4294967295.0, -1, false);
  const std::vector<int64_t> shape(counter.shape, counter.shape + counter.ndim);
  return check_philox4x32(counter, key, c.out(2, shape, DType::uint32, counter, false));
}

// The Python entry of an op over a backend B: the plan (Make), then at trace time a tuple of
// the outputs' (shape, dtype), else out or new arrays, filled by B's run of the plan.
inline std::pair<TensorView*, TensorView*> outputs(FactorPlan& p) { return {&p.A, &p.B}; }
inline std::pair<TensorView*, TensorView*> outputs(FactorRowsPlan& p) { return {&p.Af, &p.Bf}; }
template <class Plan> TensorView* outputs(Plan& p) { return &p.out; }

template <class B, auto Make>
py::object op(Call& c) {
  c.device_ok = B::kDevice;
  auto p = Make(c);
  const auto o = outputs(p);
  py::object res;
  if constexpr (std::is_pointer_v<decltype(o)>) {
    if (c.abstract) return py::make_tuple(spec(*o, c.result_shape));
    res = c.result(c.out_arg, *o, c.result_shape);
  } else {
    if (c.abstract) return py::make_tuple(spec(*o.first), spec(*o.second));
    py::object a = c.allocate(*o.first), b = c.allocate(*o.second);
    res = py::make_tuple(a, b);
  }
  B::run(c, p);
  return res;
}

// The trace-time backend: plans are made (all checks run), nothing is.
struct Check {
  static constexpr bool kDevice = false;
  template <class Plan> static void run(Call&, const Plan&) {}
};

// Every op (name, its plan maker; make_<name>(c) for any C), and the Python entries: each a
// METH_FASTCALL builtin of the module, and check_<name> when B is the CPU backend.
#define EGGROLL_OP_TABLE(X)                                                                     \
  X(perturbed_matmul, (forward<ForwardPlan, &check_float<false>>))                             \
  X(perturbed_matmul_full, (forward<ForwardPlan, &check_float<true>>))                         \
  X(perturbed_matmul_int8, (forward<Int8ForwardPlan, &check_perturbed_matmul_int8>))           \
  X(perturb_vector, perturb_vector) X(lowrank_factors, lowrank_factors)                        \
  X(es_gradient, es_gradient) X(es_gradient_factors, es_gradient_factors)                      \
  X(int8_update, int8_update) X(normal, normal) X(philox4x32, philox4x32)                      \
  X(centered_rank, shaping<Shaping::centered_rank>) X(zscore, shaping<Shaping::zscore>)        \
  X(antithetic_sign, shaping<Shaping::antithetic_sign>) X(perturbed_embedding, perturbed_embedding)
#define EGGROLL_MAKE(name, fn) template <class C> auto make_##name(C& c) { return fn(c); }
EGGROLL_OP_TABLE(EGGROLL_MAKE)
#undef EGGROLL_MAKE

inline void add_function(py::module_& mod, const char* name, _PyCFunctionFast fn, const char* doc) {
  static std::deque<PyMethodDef> defs;  // stable addresses, never freed (as the module's)
  defs.push_back({name, reinterpret_cast<PyCFunction>(reinterpret_cast<void*>(fn)), METH_FASTCALL, doc});
  py::object f = py::reinterpret_steal<py::object>(PyCFunction_NewEx(&defs.back(), nullptr, mod.attr("__name__").ptr()));
  if (!f) throw_py();
  mod.attr(name) = f;
}

template <class B>
void add_ops(py::module_& mod, bool with_checks) {
#define EGGROLL_ADD(name, fn)                                                                  \
  add_function(mod, #name, &entry<&op<B, &make_##name<Call>>>, "eggroll op (docs/backends.md)"); \
  if (with_checks)                                                                             \
    add_function(mod, "check_" #name, &entry<&op<Check, &make_##name<Call>>, true>,            \
                 "trace-time check: the outputs' (shape, dtype)");
  EGGROLL_OP_TABLE(EGGROLL_ADD)
#undef EGGROLL_ADD
}

}  // namespace eggroll::bridge
