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
int (*g_max_threads)() = nullptr;  // the runtime's omp_get_max_threads: torch.get_num_threads()
thread_local Executor t_host;

const Executor* host_executor() {
  if (!g_fork_join || !g_max_threads) return nullptr;
  t_host.threads = g_max_threads();
  t_host.fork_join = g_fork_join;
  return t_host.threads > 1 ? &t_host : nullptr;
}

struct Cpu {
  static constexpr bool kDevice = false;
  template <class Plan>
  static void run(Call& c, const Plan& p) {
    const Framework* f = c.framework();
    ScopedExecutor scope(f && f->host_threads ? host_executor() : nullptr);
    ScopedIeeeFloat ieee;
    py::gil_scoped_release nogil;
    eggroll::run(p);  // the family header's overload
  }
};

}  // namespace

PYBIND11_MODULE(_core, mod) {
  mod.doc() = "eggroll C++ core (CPU). Use the functions of the eggroll package, not these.";
  mod.attr("__version__") = EGGROLL_VERSION;
  add_ops<Cpu>(mod, /*with_checks=*/true);

  def_common(mod);
  mod.def("es_gradient_chunks", [](py::handle members, int64_t count, int64_t m, int64_t n,
                                   int64_t rank, bool antithetic) {
    Members mem;
    if (members.is_none()) {  // index values not known here (traced): the rows' bound
      mem.count = count;
      mem.given = true;
      mem.index = &mem.count;  // never read: device values
      mem.device = Device::cuda;
    } else {
      PyObject* argv[1] = {members.ptr()};
      Call c{argv, 1};
      mem = c.members(0, false);
    }
    Key key;
    key.rank = rank;
    key.antithetic = antithetic;
    py::list out;
    for (const GradientChunk& ch : es_gradient_chunks(mem, m, n, key))
      out.append(py::make_tuple(ch.c0, ch.c1, ch.C));
    return out;
  }, py::arg("members"), py::arg("count"), py::arg("m"), py::arg("n"), py::arg("rank"),
     py::arg("antithetic"),
  "The low-rank update's chunk plan [(c0, c1, C)] (update.h); members None: unknown indices "
  "of `count` members.");

  mod.def("set_openmp_runtime", [](uintptr_t gomp_parallel, uintptr_t omp_get_max_threads) {
    g_fork_join = reinterpret_cast<ForkJoin>(gomp_parallel);
    g_max_threads = reinterpret_cast<int (*)()>(omp_get_max_threads);
#if defined(__linux__)
    // libgomp is not fork-safe: in a forked child its team's threads are gone and the next
    // parallel region hangs (torch's own ops hang there too). The child forgets the runtime
    // and runs on the core's pool, which rebuilds itself after a fork.
    static std::once_flag once;
    std::call_once(once, [] { pthread_atfork(nullptr, nullptr, [] { g_fork_join = nullptr; }); });
#endif
  }, py::arg("gomp_parallel"), py::arg("omp_get_max_threads"),
     "Registers an OpenMP runtime (the addresses of its GOMP_parallel and omp_get_max_threads; "
     "0 forgets it): the CPU calls of frameworks registered with host_threads run on its team.");
  mod.def("num_threads", &num_threads);
  mod.def("set_num_threads", &set_num_threads, py::arg("n"));
  mod.def("isa", [] { return std::string(isa_name(active_isa_level())); });
  mod.def("best_isa", [] { return std::string(isa_name(best_isa())); });
  mod.def("isas", &supported_isas, "The ISA levels this CPU (and OS) supports, narrowest first.");
  mod.def("set_isa", py::overload_cast<const std::string&>(&set_isa), py::arg("name"));
  mod.def("gil_released_probe", [] { return !PyGILState_Check(); },
          py::call_guard<py::gil_scoped_release>());
}
