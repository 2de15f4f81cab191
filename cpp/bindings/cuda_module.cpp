// The pybind11 module eggroll._cuda (CUDA builds only): the CUDA launchers under the same
// names and arguments as eggroll._core, plus a trailing keyword `stream` (a cudaStream_t as
// an integer, e.g. cupy.cuda.get_current_stream().ptr). TensorView and EsArgs are _core's
// types (imported first). Importing this module never needs a GPU or a driver: the CUDA
// runtime is linked statically and loads the driver on the first call.
#include <pybind11/pybind11.h>
#include <cstdint>
#include <string>
#include "eggroll/check.h"
#include "eggroll/cuda.h"
#include "eggroll/update.h"

namespace py = pybind11;
using namespace eggroll;

namespace {
using release = py::call_guard<py::gil_scoped_release>;
cudaStream_t as_stream(uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }
}  // namespace

PYBIND11_MODULE(_cuda, mod) {
  mod.doc() = "eggroll CUDA kernels. Use the functions of the eggroll package, not these.";
  py::module_::import("eggroll._core");  // registers TensorView and EsArgs
  py::register_local_exception<eggroll::ValueError>(mod, "CudaValueError", PyExc_ValueError);
  py::register_local_exception<eggroll::TypeError>(mod, "CudaTypeError", PyExc_TypeError);

  mod.def("device_count", &cuda::device_count,
          "Number of CUDA devices (0 without a driver or GPU; never raises).");
  mod.def("runtime_info", [] {
    const cuda::RuntimeInfo i = cuda::runtime_info();
    py::dict d;
    d["runtime_version"] = i.runtime_version;
    d["driver_version"] = i.driver_version;
    d["device_count_status"] = std::string(i.device_count_status);
    return d;
  }, "CUDA runtime (built) and driver versions, and cudaGetDeviceCount's message: why "
     "cuda_available() is False.");
  // Fallback GEMMs (no cuBLAS): the adapters use them while a stream captures a CUDA graph.
  mod.def("gemm_nt",
          [](const TensorView& x, const TensorView& W, const TensorView& out, uintptr_t s) {
            cuda::gemm_nt(x, W, out, as_stream(s));
          },
          py::arg("x"), py::arg("W"), py::arg("out"), py::kw_only(), py::arg("stream"), release());
  mod.def("gemm_tn",
          [](const TensorView& A, const TensorView& B, const TensorView& out, bool accumulate,
             uintptr_t s) { cuda::gemm_tn(A, B, out, accumulate, as_stream(s)); },
          py::arg("A"), py::arg("B"), py::arg("out"), py::arg("accumulate"), py::kw_only(),
          py::arg("stream"), release());
  mod.def("philox4x32",
          [](const TensorView& c, const TensorView& k, const TensorView& o, uintptr_t s) {
            cuda::philox4x32(c, k, o, as_stream(s));
          },
          py::arg("counter"), py::arg("key"), py::arg("out"), py::kw_only(), py::arg("stream"), release());
  mod.def("normal",
          [](const TensorView& out, uint64_t seed, uint32_t param_id, uint32_t e, uint32_t k,
             uint64_t offset, uintptr_t s) {
            cuda::normal(out, NoiseKey{seed, param_id, e, k}, offset, as_stream(s));
          },
          py::arg("out"), py::arg("seed"), py::arg("param_id"), py::arg("epoch_index"),
          py::arg("noise_index"), py::arg("offset"), py::kw_only(), py::arg("stream"), release());
  mod.def("lowrank_factors",
          [](const TensorView& mem, int64_t m, int64_t n, const EsArgs& a, const TensorView& A,
             const TensorView& B, uintptr_t s) { cuda::lowrank_factors(mem, m, n, a, A, B, as_stream(s)); },
          py::arg("members"), py::arg("m"), py::arg("n"), py::arg("args"), py::arg("A"),
          py::arg("B"), py::kw_only(), py::arg("stream"), release());
  mod.def("lowrank_correction",
          [](const TensorView& x, const TensorView& mem, const EsArgs& a, const TensorView& out,
             uintptr_t s) { cuda::lowrank_correction(x, mem, a, out, as_stream(s)); },
          py::arg("x"), py::arg("members"), py::arg("args"), py::arg("out"), py::kw_only(),
          py::arg("stream"), release());
  mod.def("fullrank_correction",
          [](const TensorView& x, const TensorView& mem, const EsArgs& a, const TensorView& out,
             uintptr_t s) { cuda::fullrank_correction(x, mem, a, out, as_stream(s)); },
          py::arg("x"), py::arg("members"), py::arg("args"), py::arg("out"), py::kw_only(),
          py::arg("stream"), release());
  mod.def("perturb_vector",
          [](const TensorView& v, const TensorView& mem, const EsArgs& a, const TensorView& out,
             uintptr_t s) { cuda::perturb_vector(v, mem, a, out, as_stream(s)); },
          py::arg("v"), py::arg("members"), py::arg("args"), py::arg("out"), py::kw_only(),
          py::arg("stream"), release());
  mod.def("perturbed_embedding",
          [](const TensorView& ids, const TensorView& W, const TensorView& mem, const EsArgs& a,
             const TensorView& out, uintptr_t s) {
            cuda::perturbed_embedding(ids, W, mem, a, out, as_stream(s));
          },
          py::arg("ids"), py::arg("W"), py::arg("members"), py::arg("args"), py::arg("out"),
          py::kw_only(), py::arg("stream"), release());
  // Host-side helper: members here are a CPU int64 [M] view (the adapter's own copy).
  mod.def("es_gradient_columns", &es_gradient_columns, py::arg("members"), py::arg("antithetic"),
          py::arg("rank"), release());
  mod.def("es_gradient_factors",
          [](const TensorView& f, const TensorView& mem, int64_t m, int64_t n, const EsArgs& a,
             int64_t population, const TensorView& Af, const TensorView& Bf, uintptr_t s) {
            cuda::es_gradient_factors(f, mem, m, n, a, population, Af, Bf, as_stream(s));
          },
          py::arg("fitness"), py::arg("members"), py::arg("m"), py::arg("n"), py::arg("args"),
          py::arg("population"), py::arg("Af"), py::arg("Bf"), py::kw_only(), py::arg("stream"), release());
  mod.def("es_gradient",
          [](const TensorView& f, const TensorView& mem, const EsArgs& a, bool full_rank,
             int64_t population, bool accumulate, const TensorView& g, uintptr_t s) {
            cuda::es_gradient(f, mem, a, full_rank, population, accumulate, g, as_stream(s));
          },
          py::arg("fitness"), py::arg("members"), py::arg("args"), py::arg("full_rank"),
          py::arg("population"), py::arg("accumulate"), py::arg("out"), py::kw_only(),
          py::arg("stream"), release());
  mod.def("centered_rank",
          [](const TensorView& f, const TensorView& out, uintptr_t s) { cuda::centered_rank(f, out, as_stream(s)); },
          py::arg("f"), py::arg("out"), py::kw_only(), py::arg("stream"), release());
  mod.def("zscore",
          [](const TensorView& f, int64_t g, const TensorView& out, uintptr_t s) { cuda::zscore(f, g, out, as_stream(s)); },
          py::arg("f"), py::arg("group_size"), py::arg("out"), py::kw_only(), py::arg("stream"), release());
  mod.def("antithetic_sign",
          [](const TensorView& f, const TensorView& out, uintptr_t s) { cuda::antithetic_sign(f, out, as_stream(s)); },
          py::arg("f"), py::arg("out"), py::kw_only(), py::arg("stream"), release());

  // Integer path: the noise key and format as keywords (the fields of _core.Int8Args).
  auto int8_key = [](uint64_t seed, uint32_t param_id, int64_t epoch, int64_t noise_reuse,
                     bool antithetic, int64_t rank, int64_t fixed_point, int64_t sigma_shift) {
    cuda::Int8Key k;
    k.seed = seed; k.param_id = param_id; k.epoch = epoch; k.noise_reuse = noise_reuse;
    k.antithetic = antithetic; k.rank = rank; k.fixed_point = fixed_point; k.sigma_shift = sigma_shift;
    return k;
  };
  mod.def("perturbed_matmul_int8",
          [int8_key](const TensorView& x, const TensorView& W, const TensorView& mem, const TensorView& out,
             uint64_t seed, uint32_t param_id, int64_t epoch, int64_t noise_reuse, bool antithetic,
             int64_t rank, int64_t fixed_point, int64_t sigma_shift, uintptr_t s) {
            cuda::perturbed_matmul_int8(x, W, mem, int8_key(seed, param_id, epoch, noise_reuse, antithetic,
                                                            rank, fixed_point, sigma_shift), out, as_stream(s));
          },
          py::arg("x"), py::arg("W"), py::arg("members"), py::arg("out"), py::kw_only(),
          py::arg("seed"), py::arg("param_id"), py::arg("epoch"), py::arg("noise_reuse"),
          py::arg("antithetic"), py::arg("rank"), py::arg("fixed_point"), py::arg("sigma_shift"),
          py::arg("stream"), release());
  mod.def("int8_update",
          [int8_key](const TensorView& W, const TensorView& f, int64_t threshold, const TensorView& out,
             uint64_t seed, uint32_t param_id, int64_t epoch, int64_t noise_reuse, int64_t rank,
             int64_t fixed_point, uintptr_t s) {
            cuda::int8_update(W, f, threshold, int8_key(seed, param_id, epoch, noise_reuse, true, rank,
                                                        fixed_point, 0), out, as_stream(s));
          },
          py::arg("W"), py::arg("pair_fitness"), py::arg("threshold"), py::arg("out"), py::kw_only(),
          py::arg("seed"), py::arg("param_id"), py::arg("epoch"), py::arg("noise_reuse"),
          py::arg("rank"), py::arg("fixed_point"), py::arg("stream"), release());
}
