// The pybind11 module eggroll._cuda (CUDA builds only): the CUDA entries of every op (ops.h
// over the bridge of bridge.h, the same arguments as _core's plus a trailing `stream`, a
// cudaStream_t as an int), with one difference: the forwards are `lowrank_correction` /
// `fullrank_correction`, which add the correction onto out = x W^T (the caller's GEMM).
// Importing it never needs a GPU or a driver: the CUDA runtime is linked statically and loads
// the driver on the first call.
#include <pybind11/pybind11.h>
#include <cuda_runtime_api.h>
#include <cstdint>
#include <string>
#include "bridge.h"
#include "eggroll/cuda.h"
#include "ops.h"

namespace py = pybind11;
using namespace eggroll;
using namespace eggroll::bridge;

namespace {

void launch(const ForwardPlan& p, cudaStream_t s) {
  if (p.full_rank) cuda::fullrank_correction(p, s);
  else cuda::lowrank_correction(p, s);
}
void launch(const VectorPlan& p, cudaStream_t s) { cuda::perturb_vector(p, s); }
void launch(const FactorPlan& p, cudaStream_t s) { cuda::lowrank_factors(p, s); }
void launch(const GradientPlan& p, cudaStream_t s) { cuda::es_gradient(p, s); }
void launch(const FactorRowsPlan& p, cudaStream_t s) { cuda::es_gradient_factors(p, s); }
void launch(const ShapingPlan& p, cudaStream_t s) { cuda::shape_fitness(p, s); }
void launch(const Int8ForwardPlan& p, cudaStream_t s) { cuda::perturbed_matmul_int8(p, s); }
void launch(const Int8UpdatePlan& p, cudaStream_t s) { cuda::int8_update(p, s); }
void launch(const NormalPlan& p, cudaStream_t s) { cuda::normal(p, s); }
void launch(const PhiloxPlan& p, cudaStream_t s) { cuda::philox4x32(p, s); }

struct Cuda {
  static constexpr bool kHalf = true, kDevice = true;
  template <class Plan>
  static void run(Call& c, const Plan& p) {
    const auto stream = reinterpret_cast<cudaStream_t>(uintptr_t(c.int_(c.argc - 1, "stream")));
    py::gil_scoped_release nogil;
    launch(p, stream);
  }
};

}  // namespace

namespace eggroll::bridge {
// The device of a __cuda_array_interface__ pointer (0 when the runtime cannot tell).
int Call::device_of_pointer(const void* p) {
  cudaPointerAttributes attr{};
  if (!p || cudaPointerGetAttributes(&attr, p) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return attr.device;
}
}  // namespace eggroll::bridge

PYBIND11_MODULE(_cuda, mod) {
  mod.doc() = "eggroll CUDA kernels. Use the functions of the eggroll package, not these.";
  add_ops<Cuda>(mod, /*with_checks=*/false);
  for (const char* name : {"perturbed_matmul", "perturbed_matmul_full"}) {
    mod.attr(std::string(name) == "perturbed_matmul" ? "lowrank_correction" : "fullrank_correction") =
        mod.attr(name);
    py::delattr(mod, name);
  }
  mod.def("register_framework", &register_framework, py::arg("type"), py::arg("exporter"),
          py::arg("empty"), py::arg("astype"));
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
  // Fallback GEMMs (no cuBLAS): the op layer uses them while a stream captures a CUDA graph.
  mod.def("gemm_nt", [](py::handle x, py::handle W, py::handle out, uintptr_t s) {
    PyObject* argv[3] = {x.ptr(), W.ptr(), out.ptr()};
    Call c{argv, 3};
    const TensorView xv = c.view(x, "x"), Wv = c.view(W, "W"), ov = c.view(out, "out");
    py::gil_scoped_release nogil;
    cuda::gemm_nt(xv, Wv, ov, reinterpret_cast<cudaStream_t>(s));
  }, py::arg("x"), py::arg("W"), py::arg("out"), py::kw_only(), py::arg("stream"));
  mod.def("gemm_tn", [](py::handle A, py::handle B, py::handle out, bool accumulate, uintptr_t s) {
    PyObject* argv[3] = {A.ptr(), B.ptr(), out.ptr()};
    Call c{argv, 3};
    const TensorView Av = c.view(A, "A"), Bv = c.view(B, "B"), ov = c.view(out, "out");
    py::gil_scoped_release nogil;
    cuda::gemm_tn(Av, Bv, ov, accumulate, reinterpret_cast<cudaStream_t>(s));
  }, py::arg("A"), py::arg("B"), py::arg("out"), py::arg("accumulate"), py::kw_only(),
     py::arg("stream"));
  py::register_local_exception<eggroll::ValueError>(mod, "CudaValueError", PyExc_ValueError);
  py::register_local_exception<eggroll::TypeError>(mod, "CudaTypeError", PyExc_TypeError);
}
