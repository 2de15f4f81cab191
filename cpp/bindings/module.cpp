// The pybind11 module eggroll._core: the only code that knows Python. Arrays arrive as
// TensorViews built by python/eggroll/_ops.py from any framework's buffer; the GIL is
// released around every computation; core errors become ValueError / TypeError.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <cstdint>
#include <mutex>
#if defined(__linux__)
#include <pthread.h>
#endif
#include <vector>
#include "eggroll/eggroll.h"

namespace py = pybind11;
using namespace eggroll;

namespace {

TensorView make_tensor(uintptr_t ptr, int dtype, const std::vector<int64_t>& shape,
                       const std::vector<int64_t>& strides, int device, int device_index) {
  if (shape.size() > size_t(TensorView::kMaxDims))
    throw ValueError("array: at most 4 dimensions are supported, got " + std::to_string(shape.size()));
  if (strides.size() != shape.size()) throw ValueError("array: strides and shape differ in length");
  if (dtype < 0 || dtype > int(DType::uint32)) throw TypeError("array: unknown dtype code");
  TensorView t;
  t.data = reinterpret_cast<void*>(ptr);
  t.dtype = DType(dtype);
  t.ndim = int(shape.size());
  for (int i = 0; i < t.ndim; ++i) { t.shape[i] = shape[size_t(i)]; t.strides[i] = strides[size_t(i)]; }
  t.device = Device(device);
  t.device_index = device_index;
  return t;
}

// Host threads: a framework adapter (eggroll.torch) lends its intra-op OpenMP team to the
// calls it makes (parallel.h's Executor), so that torch's workers, which spin for a while
// after each torch op, and the core's pool do not fight over the cores. The runtime's
// GOMP_parallel is found by the adapter (the libgomp / libiomp5 torch loaded) and registered
// once; set_host_threads(n) turns it on for the calling thread's following calls.
using ForkJoin = void (*)(void (*)(void*), void*, unsigned, unsigned);
ForkJoin g_fork_join = nullptr;
thread_local int t_host_threads = 0;  // 0: the core's own pool
thread_local Executor t_host;

// Every bound computation runs under this (constructed before the GIL is released).
struct HostThreads {
  ScopedExecutor scope;
  HostThreads() : scope(select()) {}
  static const Executor* select() {
    if (t_host_threads <= 0 || !g_fork_join) return nullptr;
    t_host.threads = t_host_threads;
    t_host.fork_join = g_fork_join;
    return &t_host;
  }
};

using release = py::call_guard<HostThreads, py::gil_scoped_release>;

}  // namespace

PYBIND11_MODULE(_core, mod) {
  mod.doc() = "eggroll C++ core (CPU). Use the functions of the eggroll package, not these.";
  mod.attr("__version__") = EGGROLL_VERSION;
  py::register_local_exception<eggroll::ValueError>(mod, "CoreValueError", PyExc_ValueError);
  py::register_local_exception<eggroll::TypeError>(mod, "CoreTypeError", PyExc_TypeError);

  py::class_<TensorView>(mod, "TensorView")
      .def(py::init<>())
      .def(py::init(&make_tensor), py::arg("ptr"), py::arg("dtype"), py::arg("shape"),
           py::arg("strides"), py::arg("device") = 0, py::arg("device_index") = 0)
      .def_property_readonly("shape", [](const TensorView& t) {
        return std::vector<int64_t>(t.shape, t.shape + t.ndim);
      });

  py::class_<EsArgs>(mod, "EsArgs")
      .def(py::init([](uint64_t seed, uint32_t param_id, int64_t epoch, int64_t noise_reuse,
                       bool antithetic, double sigma, int64_t rank) {
             EsArgs a{seed, param_id, epoch, noise_reuse, antithetic, sigma, rank};
             validate_args(a);
             return a;
           }),
           py::arg("seed"), py::arg("param_id"), py::arg("epoch"), py::arg("noise_reuse"),
           py::arg("antithetic"), py::arg("sigma"), py::arg("rank"));

  mod.def("philox4x32", py::overload_cast<const TensorView&, const TensorView&, const TensorView&>(&philox4x32),
          py::arg("counter"), py::arg("key"), py::arg("out"), release());
  mod.def("normal",
          [](const TensorView& out, uint64_t seed, uint32_t param_id, uint32_t e, uint32_t k, uint64_t offset) {
            normal(out, NoiseKey{seed, param_id, e, k}, offset);
          },
          py::arg("out"), py::arg("seed"), py::arg("param_id"), py::arg("epoch_index"),
          py::arg("noise_index"), py::arg("offset"), release());
  mod.def("lowrank_factors", &lowrank_factors, py::arg("members"), py::arg("m"), py::arg("n"),
          py::arg("args"), py::arg("A"), py::arg("B"), release());
  mod.def("lowrank_correction", &lowrank_correction, py::arg("x"), py::arg("members"),
          py::arg("args"), py::arg("out"), release());
  mod.def("perturbed_matmul", &perturbed_matmul, py::arg("x"), py::arg("W"), py::arg("members"),
          py::arg("args"), py::arg("out"), release());
  mod.def("fullrank_correction", &fullrank_correction, py::arg("x"), py::arg("members"),
          py::arg("args"), py::arg("out"), release());
  mod.def("perturbed_matmul_full", &perturbed_matmul_full, py::arg("x"), py::arg("W"),
          py::arg("members"), py::arg("args"), py::arg("out"), release());
  mod.def("perturbed_embedding", &perturbed_embedding, py::arg("ids"), py::arg("W"),
          py::arg("members"), py::arg("args"), py::arg("out"), release());
  mod.def("perturb_vector", &perturb_vector, py::arg("v"), py::arg("members"), py::arg("args"),
          py::arg("out"), release());
  mod.def("es_gradient_columns", &es_gradient_columns, py::arg("members"), py::arg("antithetic"),
          py::arg("rank"), release());
  mod.def("es_gradient_factors", &es_gradient_factors, py::arg("fitness"), py::arg("members"),
          py::arg("m"), py::arg("n"), py::arg("args"), py::arg("population"), py::arg("Af"),
          py::arg("Bf"), release());
  mod.def("es_gradient", &es_gradient, py::arg("fitness"), py::arg("members"), py::arg("args"),
          py::arg("full_rank"), py::arg("population"), py::arg("accumulate"), py::arg("out"), release());
  mod.def("centered_rank", &centered_rank, py::arg("f"), py::arg("out"), release());
  mod.def("zscore", &zscore, py::arg("f"), py::arg("group_size"), py::arg("out"), release());
  mod.def("antithetic_sign", &antithetic_sign, py::arg("f"), py::arg("out"), release());

  py::class_<Int8Args>(mod, "Int8Args")
      .def(py::init([](uint64_t seed, uint32_t param_id, int64_t epoch, int64_t noise_reuse,
                       bool antithetic, int64_t rank, int64_t fixed_point, int64_t sigma_shift) {
             Int8Args a{seed, param_id, epoch, noise_reuse, antithetic, rank, fixed_point, sigma_shift};
             validate_int8_args(a);
             return a;
           }),
           py::arg("seed"), py::arg("param_id"), py::arg("epoch"), py::arg("noise_reuse"),
           py::arg("antithetic"), py::arg("rank"), py::arg("fixed_point"), py::arg("sigma_shift"));
  mod.def("perturbed_matmul_int8", &perturbed_matmul_int8, py::arg("x"), py::arg("W"),
          py::arg("members"), py::arg("args"), py::arg("out"), release());
  mod.def("int8_update", &int8_update, py::arg("W"), py::arg("pair_fitness"),
          py::arg("threshold"), py::arg("args"), py::arg("out"), release());
  mod.def("int8_isa", [] { return std::string(int8_isa_name(active_int8_isa())); });
  mod.def("best_int8_isa", [] { return std::string(int8_isa_name(best_int8_isa())); });
  mod.def("int8_isas", [] {  // the paths this CPU (and OS) supports, slowest first
    std::vector<std::string> v;
    for (Int8Isa i : {Int8Isa::scalar, Int8Isa::avx2, Int8Isa::avx_vnni, Int8Isa::avx512_vnni, Int8Isa::amx})
      if (int8_isa_supported(i)) v.emplace_back(int8_isa_name(i));
    return v;
  });
  mod.def("set_int8_isa", [](const std::string& name) {
    for (Int8Isa i : {Int8Isa::scalar, Int8Isa::avx2, Int8Isa::avx_vnni, Int8Isa::avx512_vnni, Int8Isa::amx})
      if (name == int8_isa_name(i)) return set_int8_isa(i);
    throw ValueError("name: expected 'scalar', 'avx2', 'avx_vnni', 'avx512_vnni' or 'amx', got '" + name + "'");
  }, py::arg("name"));

  mod.def("set_openmp_runtime", [](uintptr_t gomp_parallel) {
    g_fork_join = reinterpret_cast<ForkJoin>(gomp_parallel);
#if defined(__linux__)
    // libgomp is not fork-safe: in a forked child its team's threads are gone and the next
    // parallel region hangs (torch's own ops hang there too). The child forgets the runtime
    // and runs on the core's pool, which rebuilds itself after a fork.
    static std::once_flag once;
    std::call_once(once, [] { pthread_atfork(nullptr, nullptr, [] { g_fork_join = nullptr; }); });
#endif
  }, py::arg("gomp_parallel"),
     "Registers an OpenMP runtime's GOMP_parallel (its address; 0 forgets it) for set_host_threads.");
  mod.def("set_host_threads", [](int n) {
    if (n < 0) throw ValueError("n: must be >= 0, got " + std::to_string(n));
    const int prev = t_host_threads;
    t_host_threads = n;
    return prev;
  }, py::arg("n"),
     "This thread's following calls run on n threads of the registered OpenMP runtime (0: the "
     "core's own pool). Returns the previous value.");
  mod.def("num_threads", &num_threads);
  mod.def("set_num_threads", &set_num_threads, py::arg("n"));
  mod.def("isa", [] { return std::string(isa_name(active_isa())); });
  mod.def("best_isa", [] { return std::string(isa_name(best_isa())); });
  mod.def("set_isa", [](const std::string& name) {
    for (Isa i : {Isa::scalar, Isa::avx2, Isa::avx512})
      if (name == isa_name(i)) return set_isa(i);
    throw ValueError("name: expected 'scalar', 'avx2' or 'avx512', got '" + name + "'");
  }, py::arg("name"));
  mod.def("gil_released_probe", [] { return !PyGILState_Check(); }, release());
}
