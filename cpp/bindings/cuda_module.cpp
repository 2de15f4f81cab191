// The pybind11 module eggroll._cuda (CUDA builds only): the CUDA entries of every op, with
// _core's names and arguments (ops.h over the bridge of bridge.h) plus an optional trailing
// `stream` (a cudaStream_t as an int; default: the current stream of the arrays' framework
// on their device). The dense products inside an op (a forward's x W^T, the low-rank update's
// Af^T Bf) are the framework's matmul, registered as its `gemm` (cuBLAS through torch or
// CuPy), or eggroll's fallback kernels. Importing it never needs a GPU or a driver: the CUDA
// runtime is linked statically and loads the driver on the first call.
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

// ---- a device view as a DLPack exporter (what the framework's gemm receives) --------------
struct DLHolder {
  DLManagedTensor managed;  // first: the deleter gets this address back
  int64_t shape[TensorView::kMaxDims], strides[TensorView::kMaxDims];
};

DLDataType dl_dtype(DType d) {
  switch (d) {
    case DType::float32: return {2, 32, 1};
    case DType::float16: return {2, 16, 1};
    case DType::bfloat16: return {4, 16, 1};
    case DType::float64: return {2, 64, 1};
    case DType::int8: return {0, 8, 1};
    case DType::int32: return {0, 32, 1};
    case DType::int64: return {0, 64, 1};
    case DType::uint32: return {1, 32, 1};
    default: type_error(std::string("array: no DLPack export for ") + dtype_name(d));
  }
}

struct DeviceArray {
  TensorView v;
  py::object dlpack() const {
    auto* h = new DLHolder{};
    DLTensor& t = h->managed.dl_tensor;
    t.data = v.data;
    t.device = {2, v.device_index};
    t.ndim = v.ndim;
    t.dtype = dl_dtype(v.dtype);
    for (int i = 0; i < v.ndim; ++i) { h->shape[i] = v.shape[i]; h->strides[i] = v.strides[i]; }
    t.shape = h->shape;
    t.strides = h->strides;
    h->managed.deleter = [](DLManagedTensor* m) { delete reinterpret_cast<DLHolder*>(m); };
    PyObject* cap = PyCapsule_New(&h->managed, "dltensor", [](PyObject* c) {
      if (!PyCapsule_IsValid(c, "dltensor")) return;  // consumed: the consumer calls the deleter
      auto* m = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(c, "dltensor"));
      m->deleter(m);
    });
    if (!cap) { delete h; throw_py(); }
    return py::reinterpret_steal<py::object>(cap);
  }
};

// The framework's gemm as the launchers' cuda::Gemm (the GIL taken for the call); its
// NotImplemented, or no gemm at all, means eggroll's fallback kernels.
cuda::Gemm gemm_of(const Call& c) {
  if (c.fw < 0 || frameworks()[size_t(c.fw)].gemm.is_none()) return {};
  // Borrowed (the framework table holds it for the process): copies of the cuda::Gemm made
  // without the GIL touch no reference count.
  PyObject* fn = frameworks()[size_t(c.fw)].gemm.ptr();
  auto call = [fn](const TensorView& a, const TensorView& b, const TensorView& out, bool acc,
                   bool tn, cudaStream_t s) {
    {
      py::gil_scoped_acquire gil;
      py::object r = py::handle(fn)(DeviceArray{a}, DeviceArray{b}, DeviceArray{out}, acc, tn,
                                    reinterpret_cast<uintptr_t>(s));
      if (!r.is(py::reinterpret_borrow<py::object>(Py_NotImplemented))) return;
    }
    if (tn) cuda::gemm_tn(a, b, out, acc, s);
    else cuda::gemm_nt(a, b, out, s);
  };
  cuda::Gemm g;
  g.nt = [call](const TensorView& x, const TensorView& W, const TensorView& out, cudaStream_t s) {
    call(x, W, out, false, false, s);
  };
  g.tn = [call](const TensorView& A, const TensorView& B, const TensorView& out, bool acc,
                cudaStream_t s) { call(A, B, out, acc, true, s); };
  return g;
}

void launch(const ForwardPlan& p, const cuda::Gemm& g, cudaStream_t s) { cuda::perturbed_matmul(p, g, s); }
void launch(const VectorPlan& p, const cuda::Gemm&, cudaStream_t s) { cuda::perturb_vector(p, s); }
void launch(const FactorPlan& p, const cuda::Gemm&, cudaStream_t s) { cuda::lowrank_factors(p, s); }
void launch(const GradientPlan& p, const cuda::Gemm& g, cudaStream_t s) { cuda::es_gradient(p, g, s); }
void launch(const FactorRowsPlan& p, const cuda::Gemm&, cudaStream_t s) { cuda::es_gradient_factors(p, s); }
void launch(const ShapingPlan& p, const cuda::Gemm&, cudaStream_t s) { cuda::shape_fitness(p, s); }
void launch(const Int8ForwardPlan& p, const cuda::Gemm&, cudaStream_t s) { cuda::perturbed_matmul_int8(p, s); }
void launch(const Int8UpdatePlan& p, const cuda::Gemm&, cudaStream_t s) { cuda::int8_update(p, s); }
void launch(const NormalPlan& p, const cuda::Gemm&, cudaStream_t s) { cuda::normal(p, s); }
void launch(const PhiloxPlan& p, const cuda::Gemm&, cudaStream_t s) { cuda::philox4x32(p, s); }

// Each plan's arrays' device, and the position of its entry's optional `stream` (the entry
// shapes of ops.h: the op's arguments, then the 9 key arguments where it has a key).
int device_of(const ForwardPlan& p) { return p.x.device_index; }
int device_of(const VectorPlan& p) { return p.v.device_index; }
int device_of(const FactorPlan& p) { return p.A.device_index; }
int device_of(const GradientPlan& p) { return p.fitness.device_index; }
int device_of(const FactorRowsPlan& p) { return p.g.fitness.device_index; }
int device_of(const ShapingPlan& p) { return p.f.device_index; }
int device_of(const Int8ForwardPlan& p) { return p.x.device_index; }
int device_of(const Int8UpdatePlan& p) { return p.W.device_index; }
int device_of(const NormalPlan& p) { return p.out.device_index; }
int device_of(const PhiloxPlan& p) { return p.counter.device_index; }
constexpr Py_ssize_t stream_at(const ForwardPlan*) { return 5 + kKeyArgs; }
constexpr Py_ssize_t stream_at(const VectorPlan*) { return 3 + kKeyArgs; }
constexpr Py_ssize_t stream_at(const FactorPlan*) { return 3 + kKeyArgs; }
constexpr Py_ssize_t stream_at(const GradientPlan*) { return 7 + kKeyArgs; }
constexpr Py_ssize_t stream_at(const FactorRowsPlan*) { return 4 + kKeyArgs; }
constexpr Py_ssize_t stream_at(const ShapingPlan*) { return 3; }
constexpr Py_ssize_t stream_at(const Int8ForwardPlan*) { return 5 + kKeyArgs; }
constexpr Py_ssize_t stream_at(const Int8UpdatePlan*) { return 4 + kKeyArgs; }
constexpr Py_ssize_t stream_at(const NormalPlan*) { return 7; }
constexpr Py_ssize_t stream_at(const PhiloxPlan*) { return 3; }

// The stream argument, or the framework's current stream on the arrays' device.
cudaStream_t stream_of(Call& c, Py_ssize_t i, int device) {
  if (!c.none(i)) return reinterpret_cast<cudaStream_t>(uintptr_t(c.int_(i, "stream")));
  if (c.fw >= 0 && !frameworks()[size_t(c.fw)].stream.is_none()) {
    py::object s = frameworks()[size_t(c.fw)].stream(device);
    return reinterpret_cast<cudaStream_t>(uintptr_t(s.cast<uint64_t>()));
  }
  type_error("stream: expected a cudaStream_t as an int (the arrays' framework registered no "
             "current stream)");
}

struct Cuda {
  static constexpr bool kHalf = true, kDevice = true;
  template <class Plan>
  static void run(Call& c, const Plan& p) {
    const cudaStream_t stream = stream_of(c, stream_at(static_cast<const Plan*>(nullptr)), device_of(p));
    const cuda::Gemm gemm = gemm_of(c);
    py::gil_scoped_release nogil;
    launch(p, gemm, stream);
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
  py::class_<DeviceArray>(mod, "DeviceArray", "A view of eggroll's device memory for the "
                          "framework's gemm: export it with the framework's from_dlpack.")
      .def("__dlpack__", [](const DeviceArray& a, const py::args&, const py::kwargs&) {
        return a.dlpack();
      })
      .def("__dlpack_device__", [](const DeviceArray& a) { return py::make_tuple(2, a.v.device_index); });
  mod.def("register_framework", &register_framework, py::arg("type"), py::arg("exporter"),
          py::arg("empty"), py::arg("astype"), py::arg("stream") = py::none(),
          py::arg("gemm") = py::none(),
          "As _core's, plus stream(device) -> the current cudaStream_t and gemm(a, b, out, "
          "accumulate, tn, stream): out (+)= a @ b.T (tn: a.T @ b) of DLPack views, or "
          "NotImplemented for eggroll's own kernels.");
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
  mod.def("raise_device_errors", &cuda::raise_device_errors, py::arg("device"),
          "ValueError for bad device values (members, epoch, fitness) that earlier calls' "
          "kernels flagged on that device (no synchronisation; clears them).");
  mod.def("sync_and_raise", [](int device, uintptr_t stream) {
    py::gil_scoped_release nogil;
    cuda::sync_and_raise(device, reinterpret_cast<cudaStream_t>(stream));
  }, py::arg("device"), py::arg("stream"),
     "Waits for the stream, then raise_device_errors(device).");
  mod.def("set_sync_checks", &cuda::set_sync_checks, py::arg("on"),
          "Every launcher waits for its stream and raises flagged device-value errors before "
          "returning (default: EGGROLL_CUDA_CHECKS=sync). Returns the previous setting.");
  py::register_local_exception<eggroll::ValueError>(mod, "CudaValueError", PyExc_ValueError);
  py::register_local_exception<eggroll::TypeError>(mod, "CudaTypeError", PyExc_TypeError);
}
