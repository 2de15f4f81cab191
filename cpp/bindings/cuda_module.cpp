// The pybind11 module eggroll._cuda (CUDA builds only): the CUDA entries of every op (ops.h
// over the bridge of bridge.h, the same arguments as _core's plus a trailing `stream`, a
// cudaStream_t as an int), each one launcher of cuda/eggroll/cuda.h. The dense products the
// launchers inject (a forward's x W^T, the low-rank update's Af^T Bf) are the framework's
// registered `gemm` (cuBLAS through torch or CuPy, on the same stream) or eggroll's own
// kernels. Nothing here reads a device value on the host or synchronises: device values are
// checked by the kernels (cuda.h, "values on the device").
// Importing it never needs a GPU or a driver: the CUDA runtime is linked statically and loads
// the driver on the first call.
#include <pybind11/pybind11.h>
#include <cuda_runtime_api.h>
#include <cstdint>
#include <string>
#include <type_traits>
#include "bridge.h"
#include "eggroll/cuda.h"
#include "host_util.h"
#include "ops.h"

namespace py = pybind11;
using namespace eggroll;
using namespace eggroll::bridge;

namespace {

// ---- eggroll's device memory as a DLPack exporter (the framework's from_dlpack takes it) --
struct DLHolder {
  DLManagedTensor managed;  // first: the deleter gets this address back
  int64_t shape[TensorView::kMaxDims], strides[TensorView::kMaxDims];
};

struct DeviceArray {
  TensorView v;
  py::object dlpack() const {
    if (v.dtype != DType::float32) type_error("array: DeviceArray exports float32 only");
    auto* h = new DLHolder{};
    DLTensor& t = h->managed.dl_tensor;
    t.data = v.data;
    t.device = {2, v.device_index};
    t.ndim = v.ndim;
    t.dtype = {2, 32, 1};
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

bool not_implemented(const py::object& r) { return r.ptr() == Py_NotImplemented; }

// The launchers' cuda::Gemm for a call, over the framework's gemm (the GIL taken for it):
// nt is the op's own product x W^T, so it gets the caller's arrays (a shared input's rows and
// member 0's rows of out); tn gets eggroll's factor rows through the framework's from_dlpack.
// A framework without them, or a gemm answering NotImplemented, gets eggroll's kernels.
cuda::Gemm gemm_of(Call& c) {
  const Framework* f = c.framework();
  if (!f || f->gemm.is_none()) return {};
  cuda::Gemm g;
  // Borrowed pointers (the call's objects and the framework table outlive the launch): the
  // std::functions copy no Python reference without the GIL.
  PyObject* fn = f->gemm.ptr();
  Call* call = &c;
  g.nt = [fn, call](const TensorView& x, const TensorView& W, const TensorView& out, cudaStream_t s) {
    {
      py::gil_scoped_acquire gil;
      py::object xo = call->objs[0], yo = call->out_obj;
      if (call->shared_rows) {
        if (!call->shared) xo = xo[py::int_(0)];  // a stride-0 member axis: member 0's rows
        yo = yo[py::int_(0)];
      }
      if (!not_implemented(py::handle(fn)(xo, call->objs[1], yo, "nt"))) return;
    }
    cuda::gemm_nt(x, W, out, s);
  };
  if (f->from_dlpack.is_none()) return g;
  PyObject* wrap = f->from_dlpack.ptr();
  g.tn = [fn, wrap, call](const TensorView& A, const TensorView& B, const TensorView& out, bool acc,
                          cudaStream_t s) {
    {
      py::gil_scoped_acquire gil;
      py::handle from(wrap);
      if (!not_implemented(py::handle(fn)(from(DeviceArray{A}), from(DeviceArray{B}),
                                          call->out_obj, acc ? "tn+" : "tn")))
        return;
    }
    cuda::gemm_tn(A, B, out, acc, s);
  };
  return g;
}

// Every plan's launcher by overload (cuda.h's cuda::run), on the call's trailing `stream`; the
// forwards and es_gradient get the call's GEMM. (Host index members stay as they are: the
// launchers upload them, cuda.h.)
struct Cuda {
  static constexpr bool kDevice = true;
  template <class Plan>
  static void run(Call& c, const Plan& p) {
    if (c.first_device != Device::cuda && c.like.ptr() && !c.like.is_none())
      type_error(std::string(c.first_name) + ": expected a CUDA array, got a CPU one");
    const auto s = reinterpret_cast<cudaStream_t>(uintptr_t(c.int_(c.argc - 1, "stream")));
    if constexpr (std::is_same_v<Plan, ForwardPlan>) c.shared_rows = p.x_stride == 0 && p.M > 1;
    if constexpr (std::is_same_v<Plan, ForwardPlan> || std::is_same_v<Plan, GradientPlan>) {
      const cuda::Gemm g = gemm_of(c);
      py::gil_scoped_release nogil;
      cuda::run(p, g, s);
    } else {
      py::gil_scoped_release nogil;
      cuda::run(p, s);
    }
  }
};

// The device of a __cuda_array_interface__ pointer (0 when the runtime cannot tell).
int device_of_pointer(const void* p) {
  cudaPointerAttributes attr{};
  if (!p || cudaPointerGetAttributes(&attr, p) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return attr.device;
}

}  // namespace

PYBIND11_MODULE(_cuda, mod) {
  mod.doc() = "eggroll CUDA kernels. Use the functions of the eggroll package, not these.";
  add_ops<Cuda>(mod, /*with_checks=*/false);
  Call::device_of_pointer = &device_of_pointer;
  py::class_<DeviceArray>(mod, "DeviceArray",
                          "eggroll's float32 device scratch, for the framework's from_dlpack.")
      .def("__dlpack__", [](const DeviceArray& a, const py::args&, const py::kwargs&) {
        return a.dlpack();
      })
      .def("__dlpack_device__", [](const DeviceArray& a) { return py::make_tuple(2, a.v.device_index); });
  def_common(mod);
  mod.def("device_count", &cuda::device_count,
          "Number of CUDA devices (0 without a driver or GPU; never raises).");
  mod.def("runtime_info", [] {
    const cuda::RuntimeInfo i = cuda::runtime_info();
    return py::dict(py::arg("runtime_version") = i.runtime_version,
                    py::arg("driver_version") = i.driver_version,
                    py::arg("device_count_status") = std::string(i.device_count_status));
  }, "CUDA runtime (built) and driver versions, and cudaGetDeviceCount's message: why "
     "cuda_available() is False.");
  // eggroll's own GEMMs (the ops' fallback for their dense products), for tests of their own.
  auto gemm = [](bool tn, py::handle a, py::handle b, py::handle out, bool acc, uintptr_t s) {
    Call c{nullptr, 0};
    const TensorView av = c.view(a, tn ? "A" : "x"), bv = c.view(b, tn ? "B" : "W"), ov = c.view(out, "out");
    py::gil_scoped_release nogil;
    if (tn) cuda::gemm_tn(av, bv, ov, acc, reinterpret_cast<cudaStream_t>(s));
    else cuda::gemm_nt(av, bv, ov, reinterpret_cast<cudaStream_t>(s));
  };
  mod.def("gemm_nt", [gemm](py::handle x, py::handle W, py::handle out, uintptr_t s) {
    gemm(false, x, W, out, false, s);
  }, py::arg("x"), py::arg("W"), py::arg("out"), py::kw_only(), py::arg("stream"));
  mod.def("gemm_tn", [gemm](py::handle A, py::handle B, py::handle out, bool acc, uintptr_t s) {
    gemm(true, A, B, out, acc, s);
  }, py::arg("A"), py::arg("B"), py::arg("out"), py::arg("accumulate"), py::kw_only(), py::arg("stream"));
  mod.def("raise_device_errors", &cuda::raise_device_errors, py::arg("device"),
          "ValueError for bad device values (members, epoch, fitness, pair_fitness) that the "
          "kernels of earlier calls flagged on that device; clears them (no synchronisation).");
  mod.def("sync_and_raise", [](int device, uintptr_t stream) {
    {
      py::gil_scoped_release nogil;
      cuda::detail::check_cuda(cudaStreamSynchronize(reinterpret_cast<cudaStream_t>(stream)),
                               "cudaStreamSynchronize");
    }
    cuda::raise_device_errors(device);
  }, py::arg("device"), py::arg("stream"), "Waits for the stream, then raise_device_errors.");
  mod.def("set_sync_checks", &cuda::set_sync_checks, py::arg("on"),
          "Every launcher then waits for its stream and raises flagged device-value errors "
          "before returning (default: EGGROLL_CUDA_CHECKS=sync). Returns the previous setting.");
}
