// The pybind11 module eggroll._core: the CPU entries of every op (ops.h, over the array bridge
// of bridge.h), their trace-time checks (check_<op>), and the process settings (threads, ISA,
// the framework table). The GIL is released around every computation.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <mutex>
#if defined(__linux__)
#include <pthread.h>
#endif
#include "bridge.h"
#include "eggroll/eggroll.h"
#include "ops.h"

namespace py = pybind11;
using namespace eggroll;
using namespace eggroll::bridge;

namespace {

// Host threads: a framework adapter (eggroll.torch) lends its intra-op OpenMP team to the
// calls it makes (parallel.h's Executor), so that torch's workers, which spin for a while
// after each torch op, and the core's pool do not fight over the cores. The runtime's
// GOMP_parallel is found by the adapter (the libgomp / libiomp5 torch loaded) and registered
// once; set_host_threads(n) turns it on for the calling thread's following calls.
using ForkJoin = void (*)(void (*)(void*), void*, unsigned, unsigned);
ForkJoin g_fork_join = nullptr;
thread_local int t_host_threads = 0;  // 0: the core's own pool
thread_local Executor t_host;

const Executor* host_executor() {
  if (t_host_threads <= 0 || !g_fork_join) return nullptr;
  t_host.threads = t_host_threads;
  t_host.fork_join = g_fork_join;
  return &t_host;
}

void cpu(const ForwardPlan& p) { perturbed_matmul(p); }
void cpu(const VectorPlan& p) { perturb_vector(p); }
void cpu(const FactorPlan& p) { lowrank_factors(p); }
void cpu(const GradientPlan& p) { es_gradient(p); }
void cpu(const FactorRowsPlan& p) { es_gradient_factors(p); }
void cpu(const ShapingPlan& p) { shape_fitness(p); }
void cpu(const Int8ForwardPlan& p) { perturbed_matmul_int8(p); }
void cpu(const Int8UpdatePlan& p) { int8_update(p); }
void cpu(const NormalPlan& p) { normal(p); }
void cpu(const PhiloxPlan& p) { philox4x32(p); }

struct Cpu {
  static constexpr bool kHalf = false, kDevice = false;
  template <class Plan>
  static void run(Call&, const Plan& p) {
    ScopedExecutor scope(host_executor());
    ScopedIeeeFloat ieee;
    py::gil_scoped_release nogil;
    cpu(p);
  }
};

}  // namespace

namespace eggroll::bridge {
int Call::device_of_pointer(const void*) { return 0; }  // _core never sees CUDA memory
}  // namespace eggroll::bridge

PYBIND11_MODULE(_core, mod) {
  mod.doc() = "eggroll C++ core (CPU). Use the functions of the eggroll package, not these.";
  mod.attr("__version__") = EGGROLL_VERSION;
  add_ops<Cpu>(mod, /*with_checks=*/true);

  mod.def("register_framework", &register_framework, py::arg("type"), py::arg("exporter"),
          py::arg("empty"), py::arg("astype"), py::arg("stream") = py::none(),
          py::arg("gemm") = py::none(),
          "Arrays of `type`: exporter(obj) -> DLPack capsule (or None: the array protocols), "
          "empty(shape, dtype_name, like) and astype(obj, dtype_name) make new ones.");
  mod.def("es_gradient_columns", [](py::handle members, bool antithetic, int64_t rank) {
    PyObject* argv[1] = {members.ptr()};
    Call c{argv, 1};
    return es_gradient_columns(c.members(0, false), antithetic, rank);
  }, py::arg("members"), py::arg("antithetic"), py::arg("rank"));
  mod.def("check_member_bounds", &check_member_bounds, py::arg("lo"), py::arg("hi"),
          py::arg("antithetic"), "ValueError unless members in [lo, hi] are valid indices.");
  py::register_local_exception<eggroll::ValueError>(mod, "CoreValueError", PyExc_ValueError);
  py::register_local_exception<eggroll::TypeError>(mod, "CoreTypeError", PyExc_TypeError);

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
  mod.def("isa", [] { return std::string(isa_name(active_isa_level())); });
  mod.def("best_isa", [] { return std::string(isa_name(best_isa())); });
  mod.def("isas", &supported_isas, "The ISA levels this CPU (and OS) supports, narrowest first.");
  mod.def("set_isa", py::overload_cast<const std::string&>(&set_isa), py::arg("name"));
  mod.def("gil_released_probe", [] { return !PyGILState_Check(); },
          py::call_guard<py::gil_scoped_release>());
}
