// The pybind11 module eggroll._cuda (CUDA builds only): the CUDA entries of every op (ops.h
// over the bridge of bridge.h, the same arguments as _core's plus a trailing `stream`, a
// cudaStream_t as an int). What composes here: the base products x W^T and Af^T Bf come from
// the caller's framework (its registered `gemm`: cuBLAS, on its current stream), eggroll's
// kernels add the noise terms; device values the launchers leave to the caller (index members,
// fitness, pair_fitness) are checked on a host copy (one synchronisation) unless the stream is
// capturing a CUDA graph.
// Importing it never needs a GPU or a driver: the CUDA runtime is linked statically and loads
// the driver on the first call.
#include <pybind11/pybind11.h>
#include <cuda_runtime_api.h>
#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>
#include "bridge.h"
#include "cuda_values.h"
#include "eggroll/cuda.h"
#include "host_util.h"
#include "ops.h"

namespace py = pybind11;
using namespace eggroll;
using namespace eggroll::bridge;

namespace {

cudaStream_t stream_of(Call& c) {
  return reinterpret_cast<cudaStream_t>(uintptr_t(c.int_(c.argc - 1, "stream")));
}

// Whether s is capturing a CUDA graph: then nothing may synchronise (value checks are skipped).
bool capturing(cudaStream_t s) {
  cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(s, &st) != cudaSuccess) { cudaGetLastError(); return false; }
  return st != cudaStreamCaptureStatusNone;
}

// The device values the plan leaves to the caller (cuda_values.h), except while a graph is
// captured (nothing may synchronise then: the caller vouches for them).
void check_values(const Members& m, bool antithetic, cudaStream_t s) {
  if (!capturing(s)) check_member_values(m, antithetic, s);
}

TensorView on_device(TensorView t, int index) {
  t.device = Device::cuda;
  t.device_index = index;
  return t;
}

// Rows [0, block) of y repeated M times (a shared input's base product), log2(M) copies.
void replicate(void* y, int64_t block_bytes, int64_t M, cudaStream_t s) {
  char* p = static_cast<char*>(y);
  for (int64_t have = 1; have < M; have *= 2)
    cuda::detail::check_cuda(cudaMemcpyAsync(p + have * block_bytes, p, size_t(std::min(have, M - have) * block_bytes),
                                             cudaMemcpyDeviceToDevice, s), "cudaMemcpyAsync");
}

// The framework's GEMM (cuBLAS through it, on its current stream), with the GIL held.
void gemm(Call& c, py::handle a, py::handle b, py::handle out, const char* kind) {
  const Framework* f = c.framework();
  if (!f || f->gemm.is_none())
    type_error("x: CUDA arrays of this kind have no GEMM registered (use CuPy or torch arrays)");
  f->gemm(a, b, out, kind);
}

// The forwards: x W^T by the framework's GEMM (once for a shared input), then the correction.
void run_forward(Call& c, const ForwardPlan& p, cudaStream_t s) {
  check_values(p.members, p.key.antithetic, s);
  const bool shared = p.x_stride == 0 && p.M > 1;
  py::object x = c.objs[0];
  py::object y0 = c.out_obj;
  if (shared) {
    if (!c.shared) x = x[py::int_(0)];  // a stride-0 member axis: member 0's rows
    y0 = y0[py::int_(0)];
  }
  if (!p.base) {  // the correction alone: the caller adds its framework's x W^T
    cuda::detail::check_cuda(cudaMemsetAsync(p.out.data, 0, size_t(p.out.numel() * dtype_size(p.out.dtype)), s),
                             "cudaMemsetAsync");
  } else {
    if (p.M > 0) gemm(c, x, c.objs[1], y0, "nt");
    if (shared) replicate(p.out.data, p.b * p.m * dtype_size(p.out.dtype), p.M, s);
  }
  if (!p.members.given) return;
  py::gil_scoped_release nogil;
  if (p.full_rank) cuda::fullrank_correction(p, s);
  else cuda::lowrank_correction(p, s);
}

// The low-rank estimate: per chunk of members (factors under 64 MiB, antithetic pairs whole)
// the factor rows by eggroll's kernel and g (+)= Af^T Bf by the framework's GEMM.
void run_lowrank_gradient(Call& c, const GradientPlan& p, cudaStream_t s) {
  const int64_t r = p.key.rank, m = p.m, n = p.n;
  const int64_t step = std::max<int64_t>(2, ((int64_t(64) << 20) / (4 * (m + n) * r)) & ~int64_t(1));
  const bool host = !p.members.index || p.members.device == Device::cpu;
  if (p.M == 0 && !p.accumulate)
    cuda::detail::check_cuda(cudaMemsetAsync(p.out.data, 0, size_t(m * n) * 4, s), "cudaMemsetAsync");
  for (int64_t c0 = 0; c0 < p.M; c0 += step) {
    const int64_t cm = std::min(step, p.M - c0);
    Members part = p.members;
    part.count = cm;
    if (part.index) part.index += c0; else part.start += c0 * part.step;
    TensorView f = p.fitness;
    f.data = static_cast<float*>(f.data) + c0;
    f.shape[0] = cm;
    const int64_t C = host ? es_gradient_columns(part, p.key.antithetic, r) : cm * r;
    TensorView Af = on_device(make_view(nullptr, DType::float32, {C, m}), p.out.device_index);
    TensorView Bf = on_device(make_view(nullptr, DType::float32, {C, n}), p.out.device_index);
    py::object a = c.allocate(Af), b = c.allocate(Bf);
    const FactorRowsPlan fp = check_es_gradient_factors(f, part, m, n, p.key, p.population, Af, Bf);
    if (!host) {
      cuda::detail::check_cuda(cudaMemsetAsync(Af.data, 0, size_t(C * m) * 4, s), "cudaMemsetAsync");
      cuda::detail::check_cuda(cudaMemsetAsync(Bf.data, 0, size_t(C * n) * 4, s), "cudaMemsetAsync");
    }
    {
      py::gil_scoped_release nogil;
      cuda::es_gradient_factors(fp, s);
    }
    gemm(c, a, b, c.out_obj, c0 == 0 && !p.accumulate ? "tn" : "tn+");
  }
}

// int8: a shared input is materialised first (the CUDA int8 GEMM reads x row by row).
void run_int8(Call& c, Int8ForwardPlan p, cudaStream_t s) {
  check_values(p.members, p.key.antithetic, s);
  if (p.x_stride == 0 && p.M > 1) {
    TensorView full = on_device(make_view(nullptr, DType::int8, {p.M, p.b, p.n}), p.x.device_index);
    c.keep.push_back(c.allocate(full));
    cuda::detail::check_cuda(cudaMemcpyAsync(full.data, p.x.data, size_t(p.b * p.n), cudaMemcpyDeviceToDevice, s),
                             "cudaMemcpyAsync");
    replicate(full.data, p.b * p.n, p.M, s);
    if (p.x.ndim == 2) full = on_device(make_view(full.data, DType::int8, {p.M, p.n}), p.x.device_index);
    p.x = full;
    p.x_stride = p.b * p.n;
  }
  py::gil_scoped_release nogil;
  cuda::perturbed_matmul_int8(p, s);
}

void launch(const VectorPlan& p, cudaStream_t s) { cuda::perturb_vector(p, s); }
void launch(const FactorPlan& p, cudaStream_t s) { cuda::lowrank_factors(p, s); }
void launch(const FactorRowsPlan& p, cudaStream_t s) { cuda::es_gradient_factors(p, s); }
void launch(const ShapingPlan& p, cudaStream_t s) { cuda::shape_fitness(p, s); }
void launch(const Int8UpdatePlan& p, cudaStream_t s) { cuda::int8_update(p, s); }
void launch(const NormalPlan& p, cudaStream_t s) { cuda::normal(p, s); }
void launch(const PhiloxPlan& p, cudaStream_t s) { cuda::philox4x32(p, s); }

struct Cuda {
  static constexpr bool kDevice = true;
  // Host index members go to the arrays' device (a range never needs to: the kernels compute
  // it). Under graph capture an upload would be captured from a temporary host buffer.
  static Members place(Call& c, Members m) {
    if (!m.given || !m.index || m.device != Device::cpu || m.count == 0 || !c.like.ptr() ||
        c.first_device != Device::cuda)
      return m;
    const cudaStream_t s = stream_of(c);
    if (capturing(s))
      value_error("members: while capturing a CUDA graph, pass a range or a device index array "
                  "(a host array would be uploaded from a temporary buffer)");
    TensorView d = on_device(make_view(nullptr, DType::int64, {m.count}), c.first_index);
    c.keep.push_back(c.allocate(d));
    cuda::detail::check_cuda(cudaMemcpyAsync(d.data, m.index, size_t(m.count) * 8,
                                             cudaMemcpyHostToDevice, s), "cudaMemcpyAsync");
    return Members::indices(d);
  }
  template <class Plan>
  static void run(Call& c, const Plan& p) {
    if (c.first_device != Device::cuda && c.like.ptr() && !c.like.is_none())
      type_error(std::string(c.first_name) + ": expected a CUDA array, got a CPU one");
    const cudaStream_t s = stream_of(c);
    if constexpr (std::is_same_v<Plan, ForwardPlan>) {
      run_forward(c, p, s);
    } else if constexpr (std::is_same_v<Plan, Int8ForwardPlan>) {
      run_int8(c, p, s);
    } else if constexpr (std::is_same_v<Plan, GradientPlan>) {
      check_values(p.members, p.key.antithetic, s);
      if (!capturing(s)) check_finite_values(p.fitness, "fitness", s);
      if (!p.full_rank) return run_lowrank_gradient(c, p, s);
      py::gil_scoped_release nogil;
      cuda::es_gradient(p, s);
    } else {
      if constexpr (std::is_same_v<Plan, ShapingPlan>)
        if (!capturing(s)) check_finite_values(p.f, "f", s);
      if constexpr (std::is_same_v<Plan, VectorPlan> || std::is_same_v<Plan, FactorPlan>)
        check_values(p.members, p.key.antithetic, s);
      if constexpr (std::is_same_v<Plan, Int8UpdatePlan>)
        if (!capturing(s)) check_pair_fitness_on_host(p.pair_fitness, s);
      py::gil_scoped_release nogil;
      launch(p, s);
    }
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
  mod.def("register_framework", &register_framework, py::arg("type"), py::arg("exporter"),
          py::arg("empty"), py::arg("astype"), py::arg("gemm"), py::arg("host_threads"));
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
