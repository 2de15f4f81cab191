// The array bridge of the Python modules (_core, _cuda): any framework's array -> TensorView
// (NumPy directly; DLPack, __cuda_array_interface__ or the buffer protocol otherwise; shape
// and dtype only at trace time), Python scalars / ranges -> the core's Key and Members, outputs
// allocated by the caller's framework (one small table), and core errors -> ValueError /
// TypeError. Entries are METH_FASTCALL functions: one C++ call parses everything.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>
#include "eggroll/eggroll.h"

namespace eggroll::bridge {
namespace py = pybind11;

// ---- DLPack (the ABI of the DLPack standard: legacy "dltensor" and 1.x "dltensor_versioned")
struct DLDevice { int32_t device_type, device_id; };      // 1 CPU, 2 CUDA, 3 CUDA host, 13 managed
struct DLDataType { uint8_t code, bits; uint16_t lanes; };
struct DLTensor {
  void* data; DLDevice device; int32_t ndim; DLDataType dtype;
  int64_t* shape; int64_t* strides; uint64_t byte_offset;
};
struct DLManagedTensor { DLTensor dl_tensor; void* manager_ctx; void (*deleter)(DLManagedTensor*); };
struct DLManagedTensorVersioned {
  uint32_t major, minor; void* manager_ctx; void (*deleter)(DLManagedTensorVersioned*);
  uint64_t flags; DLTensor dl_tensor;
};

// ---- the framework table: how a framework's arrays are exported and made --------------------
struct Framework {
  py::object type;
  py::object exporter;  // obj -> DLPack capsule (a fast exporter), or None: the protocols
  // (shape tuple, dtype name, like) -> a new C-contiguous array on like's device, or
  // (that array, its data address as an int)
  py::object empty;
  py::object astype;    // (obj, dtype name) -> a converted copy
  // (a, b, out, kind) on a GPU: out = a b^T ("nt"), a^T b ("tn"), out += a^T b ("tn+"); may
  // return NotImplemented (e.g. CuPy while a graph is captured): eggroll's own kernels then.
  py::object gemm;
  bool host_threads = false;  // its CPU calls run on the registered OpenMP runtime's threads
  // obj with __dlpack__ -> an array of the framework (None: the GEMMs of eggroll's scratch,
  // the low-rank update's factor rows, are eggroll's own kernels).
  py::object from_dlpack = py::none();
};
// Never destroyed: it holds Python objects, which must not be released after the interpreter.
inline std::vector<Framework>& frameworks() { static auto* f = new std::vector<Framework>(); return *f; }
inline std::unordered_map<PyTypeObject*, int>& framework_cache() { static std::unordered_map<PyTypeObject*, int> c; return c; }
// -1: NumPy / plain Python objects (handled here); else an index into frameworks().
inline int framework_of(py::handle obj) {
  PyTypeObject* t = Py_TYPE(obj.ptr());
  auto& cache = framework_cache();
  auto it = cache.find(t);
  if (it != cache.end()) return it->second;
  int found = -1;
  for (size_t i = 0; i < frameworks().size() && found < 0; ++i)
    if (PyObject_IsInstance(obj.ptr(), frameworks()[i].type.ptr()) == 1) found = int(i);
  PyErr_Clear();
  cache.emplace(t, found);
  return found;
}

[[noreturn]] inline void throw_py() { throw py::error_already_set(); }

// NumPy dtype (kind, itemsize) -> DType; non-native byte order is DType::other.
inline DType dtype_of_numpy(char kind, int64_t size, char byteorder) {
  if (byteorder == '>') return DType::other;
  switch (kind) {
    case 'f': return size == 4 ? DType::float32 : size == 8 ? DType::float64 : size == 2 ? DType::float16 : DType::other;
    case 'i': return size == 1 ? DType::int8 : size == 2 ? DType::int16 : size == 4 ? DType::int32 : size == 8 ? DType::int64 : DType::other;
    case 'u': return size == 1 ? DType::uint8 : size == 2 ? DType::uint16 : size == 4 ? DType::uint32 : size == 8 ? DType::uint64 : DType::other;
    case 'b': return DType::bool_;
    case 'c': return size == 8 ? DType::complex64 : size == 16 ? DType::complex128 : DType::other;
    default: return DType::other;
  }
}

// DLPack type codes (0 int, 1 uint, 2 float, 4 bfloat, 5 complex, 6 bool) as NumPy kinds.
inline DType dtype_of_dl(DLDataType d) {
  if (d.lanes != 1 || d.code > 6) return DType::other;
  if (d.code == 4) return d.bits == 16 ? DType::bfloat16 : DType::other;
  return dtype_of_numpy("iuf-xcb"[d.code], d.bits / 8, '=');
}

// t's dimensions from an exporter's shape and strides (in bytes, or in elements when
// `elements`; none: C-contiguous). t.dtype must be set. The contiguous strides saturate: a
// shape whose size overflows int64 is the op's check to reject by name (the strides are never
// used then), not undefined behaviour here. A byte stride that is not a multiple of the item
// size cannot be expressed, so the view is marked non-contiguous (the check rejects it).
template <class Int>
void set_dims(TensorView& t, int ndim, const Int* shape, const int64_t* strides, bool elements,
              const char* name) {
  if (ndim > TensorView::kMaxDims)
    value_error(std::string(name) + ": at most 8 dimensions, got " + std::to_string(ndim));
  t.ndim = ndim;
  for (int i = 0; i < ndim; ++i) t.shape[i] = int64_t(shape[i]);
  const int64_t size = dtype_size(t.dtype);
  int64_t s = 1;
  for (int i = ndim - 1; i >= 0; --i) {
    if (!strides) t.strides[i] = s;
    else if (elements) t.strides[i] = strides[i];
    else if (t.dtype != DType::other)
      t.strides[i] = strides[i] % size == 0 ? strides[i] / size : t.shape[i] > 1 ? int64_t(1) << 40 : 0;
    if (__builtin_mul_overflow(s, t.shape[i], &s)) s = INT64_MAX;
  }
}

// A shape as a Python tuple.
inline py::tuple py_shape(const std::vector<int64_t>& shape) {
  py::tuple dims(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) dims[i] = py::int_(shape[i]);
  return dims;
}

// An abstract view (no data) of `shape` on ref's device: an output to allocate once checked.
inline TensorView abstract(const std::vector<int64_t>& shape, DType dtype, const TensorView& ref) {
  TensorView t;
  t.dtype = dtype;
  set_dims(t, int(shape.size()), shape.data(), nullptr, false, "out");
  t.device = ref.device;
  t.device_index = ref.device_index;
  return t;
}

// One Python call's arguments and the objects that must outlive it.
struct Call {
  PyObject* const* argv;
  Py_ssize_t argc;
  bool abstract = false;          // trace-time check: shapes and dtypes only, no data
  std::vector<py::object> keep;   // converted arrays, capsules
  int fw = -1;                    // the framework of the first array (allocates outputs)
  py::object like;                // that array
  py::object objs[16];            // argument i as viewed (after any conversion)
  py::object out_obj;             // the result array
  bool shared = false;            // a forward's x has no member axis (the `shared` option)
  bool shared_rows = false;       // a forward's rows are one input's for every member (CUDA)
  const char* first_name = "x";   // the first array argument and where it lives
  Device first_device = Device::cpu;
  bool device_ok = false;         // device members and key scalars accepted (_cuda)
  Py_ssize_t out_arg = -1;        // the out argument (ops.h), -1: none
  std::vector<int64_t> result_shape;  // a new output's caller-facing shape ({}: the plan's)

  py::handle at(Py_ssize_t i) const { return i < argc ? py::handle(argv[i]) : py::handle(Py_None); }
  bool none(Py_ssize_t i) const { return i < 0 || at(i).is_none(); }  // i < 0: no such argument

  // ---- arrays ------------------------------------------------------------------------------
  TensorView view(py::handle obj, const char* name) {
    TensorView t;
    // NumPy arrays read directly; a subclass that says it lives on a GPU (a CUDA array
    // interface) goes the generic way.
    const bool exact = Py_TYPE(obj.ptr()) == py::detail::npy_api::get().PyArray_Type_;
    if (exact || (py::isinstance<py::array>(obj) &&
                  !PyObject_HasAttrString(obj.ptr(), "__cuda_array_interface__"))) {
      auto* a = py::detail::array_proxy(obj.ptr());
      auto* d = py::detail::array_descriptor_proxy(a->descr);
      t.data = a->data;
      py::dtype dt = py::reinterpret_borrow<py::dtype>(a->descr);
      t.dtype = dtype_of_numpy(d->kind, int64_t(dt.itemsize()), d->byteorder);
      set_dims(t, a->nd, a->dimensions, reinterpret_cast<const int64_t*>(a->strides), false, name);
      t.writeable = (a->flags & py::detail::npy_api::NPY_ARRAY_WRITEABLE_) != 0;
      return t;
    }
    // At trace time a framework's array (a tracer, a fake tensor) has a shape and a dtype only.
    if (abstract && PyObject_HasAttrString(obj.ptr(), "shape") &&
        PyObject_HasAttrString(obj.ptr(), "dtype"))
      return from_shape_dtype(obj, name);
    const int fw = framework_of(obj);
    if (fw >= 0 && !frameworks()[size_t(fw)].exporter.is_none()) {
      py::object cap;
      try {
        cap = frameworks()[size_t(fw)].exporter(obj);
      } catch (py::error_already_set& e) {  // e.g. a tensor on the meta device
        type_error(std::string(name) + ": cannot be read as an array (" + e.what() + ")");
      }
      return from_capsule(cap, name);
    }
    if (PyObject_HasAttrString(obj.ptr(), "__cuda_array_interface__"))
      return from_cai(obj.attr("__cuda_array_interface__"), name);
    if (PyObject_HasAttrString(obj.ptr(), "__dlpack__") && !PyObject_CheckBuffer(obj.ptr()))
      return from_capsule(obj.attr("__dlpack__")(), name);
    // Anything else: as a NumPy array (the buffer protocol and __array_interface__ without a
    // copy; a list or a scalar converted).
    py::object arr = py::module_::import("numpy").attr("asarray")(obj);
    keep.push_back(arr);
    return view(arr, name);
  }

  TensorView from_capsule(py::object cap, const char* name) {
    keep.push_back(cap);  // its destructor calls the producer's deleter after the call
    const DLTensor* dl;
    bool readonly = false;
    if (PyCapsule_IsValid(cap.ptr(), "dltensor")) {
      dl = &static_cast<DLManagedTensor*>(PyCapsule_GetPointer(cap.ptr(), "dltensor"))->dl_tensor;
    } else if (PyCapsule_IsValid(cap.ptr(), "dltensor_versioned")) {
      auto* v = static_cast<DLManagedTensorVersioned*>(PyCapsule_GetPointer(cap.ptr(), "dltensor_versioned"));
      dl = &v->dl_tensor;
      readonly = v->flags & 1;
    } else {
      type_error(std::string(name) + ": the array's DLPack export is not a DLPack capsule");
    }
    TensorView t;
    t.data = static_cast<char*>(dl->data) + dl->byte_offset;
    t.dtype = dtype_of_dl(dl->dtype);
    set_dims(t, dl->ndim, dl->shape, dl->strides, true, name);
    const int dev = dl->device.device_type;
    if (dev == 2 || dev == 13) { t.device = Device::cuda; t.device_index = dl->device.device_id; }
    else if (dev != 1 && dev != 3) type_error(std::string(name) + ": arrays on DLPack device type " +
                                              std::to_string(dev) + " are not supported");
    t.writeable = !readonly;
    return t;
  }

  TensorView from_cai(py::object cai, const char* name) {
    py::dict d = cai;
    TensorView t;
    const std::string ts = d["typestr"].cast<std::string>();
    t.dtype = ts.size() >= 3 ? dtype_of_numpy(ts[1], std::stoll(ts.substr(2)), ts[0]) : DType::other;
    py::tuple data = d["data"];
    t.data = reinterpret_cast<void*>(data[0].cast<uintptr_t>());
    t.writeable = !data[1].cast<bool>();
    const bool strided = d.contains("strides") && !d["strides"].is_none();
    const auto shape = d["shape"].cast<std::vector<int64_t>>();
    const auto strides = strided ? d["strides"].cast<std::vector<int64_t>>() : shape;
    if (strided && strides.size() != shape.size()) type_error(std::string(name) + ": strides do not match the shape");
    set_dims(t, int(shape.size()), shape.data(), strided ? strides.data() : nullptr, false, name);
    t.device = Device::cuda;
    t.device_index = device_of_pointer(t.data);
    return t;
  }

  TensorView from_shape_dtype(py::handle obj, const char* name) {
    TensorView t;
    const auto shape = py::tuple(obj.attr("shape")).cast<std::vector<int64_t>>();
    set_dims(t, int(shape.size()), shape.data(), static_cast<const int64_t*>(nullptr), false, name);
    std::string dt = py::str(obj.attr("dtype"));
    if (dt.rfind("torch.", 0) == 0) dt = dt.substr(6);
    t.dtype = dtype_named(dt);
    // A torch (fake) tensor says where it lives; JAX tracers do not (their check is the CPU's).
    py::object dev = py::reinterpret_steal<py::object>(PyObject_GetAttrString(obj.ptr(), "device"));
    if (!dev) PyErr_Clear();
    else if (PyObject_HasAttrString(dev.ptr(), "type") && std::string(py::str(dev.attr("type"))) == "cuda") {
      t.device = Device::cuda;
      py::object idx = dev.attr("index");
      t.device_index = idx.is_none() ? 0 : idx.cast<int>();
    }
    return t;
  }

  static DType dtype_named(const std::string& name) {
    for (int i = 0; i <= int(DType::complex128); ++i)
      if (name == dtype_name(DType(i))) return DType(i);
    if (name == "float") return DType::float32;
    if (name == "half") return DType::float16;
    return DType::other;
  }

  // The CUDA device of a __cuda_array_interface__ pointer (_cuda sets the runtime's answer).
  static inline int (*device_of_pointer)(const void*) = [](const void*) { return 0; };

  // Argument i as an array. The first array seen picks the framework of the outputs.
  TensorView array(Py_ssize_t i, const char* name) {
    py::handle obj = at(i);
    const bool first = like.ptr() == nullptr;
    if (first) { like = py::reinterpret_borrow<py::object>(obj); fw = framework_of(obj); }
    if (i < 16) objs[i] = py::reinterpret_borrow<py::object>(obj);
    TensorView t = view(obj, name);
    if (first) { first_name = name; first_device = t.device; }
    return t;
  }

  // Converts argument i to `to` with its framework's astype (a copy) and views the result.
  TensorView converted(Py_ssize_t i, const char* name, DType to) {
    py::handle obj = at(i);
    const int f = framework_of(obj);
    py::object conv;
    if (f >= 0) conv = frameworks()[size_t(f)].astype(obj, dtype_name(to));
    else conv = py::module_::import("numpy").attr("asarray")(obj).attr("astype")(dtype_name(to));
    keep.push_back(conv);
    if (i < 16) objs[i] = conv;
    return view(conv, name);
  }

  // The dtype policy (docs/ops.md "Dtypes"): float inputs a kernel does not take are computed
  // in float32: float64 always, float16 / bfloat16 where the kernel has no half path.
  TensorView float_array(Py_ssize_t i, const char* name) {
    TensorView t = array(i, name);
    const bool half = t.dtype == DType::float16 || t.dtype == DType::bfloat16;
    const bool keep_half = half && t.device == Device::cuda;  // the CUDA kernels take them
    if (t.dtype != DType::float64 && (!half || keep_half)) return t;
    if (abstract) { t.dtype = DType::float32; return t; }
    return converted(i, name, DType::float32);
  }

  // Host real values of another dtype as `to` (int8 or uint32), exactly: an integral value in
  // [lo, hi] is kept; another becomes `fallback` (a value the op's check rejects by index) or,
  // when fallback < 0, a ValueError. Device arrays and other dtypes are left for the check.
  TensorView exact(Py_ssize_t i, const char* name, DType to, double lo, double hi,
                   int64_t fallback, bool floats = true) {
    TensorView t = array(i, name);
    const bool real = is_integer(t.dtype) || (floats && is_float(t.dtype));
    if (t.dtype == to || !real || t.device != Device::cpu) return t;
    if (abstract) { t.dtype = to; return t; }
    const TensorView v = host_copy(i, name, "float64");  // ours: the fallbacks go in place
    for (int64_t k = 0; k < v.numel(); ++k) {
      double& x = v.ptr<double>()[k];
      if (x >= lo && x <= hi && x == std::floor(x)) continue;
      if (fallback < 0)
        value_error(std::string(name) + ": values must be integers in [" + std::to_string(int64_t(lo)) +
                    ", " + std::to_string(int64_t(hi)) + "], got " + std::to_string(x));
      x = double(fallback);
    }
    keep.push_back(keep.back().attr("astype")(dtype_name(to)));
    return view(keep.back(), name);
  }

  // Host argument i (of any framework) as a new C-contiguous NumPy array of `dtype`.
  TensorView host_copy(Py_ssize_t i, const char* name, const char* dtype) {
    py::object a = py::module_::import("numpy").attr("asarray")(at(i)).attr("astype")(
        dtype, py::arg("order") = "C");
    keep.push_back(a);
    return view(a, name);
  }

  // Fitness-shaping input: float32 / float64 as they are; integers and half floats as float64
  // (exact); anything else is left for the check to reject by name.
  TensorView shaping_array(Py_ssize_t i, const char* name) {
    TensorView t = array(i, name);
    const bool widen = is_integer(t.dtype) || t.dtype == DType::float16 || t.dtype == DType::bfloat16;
    if (!widen) return t;
    if (abstract) { t.dtype = DType::float64; return t; }
    return converted(i, name, DType::float64);
  }

  // ---- outputs ---------------------------------------------------------------------------------
  // A new array of t's shape and dtype from the framework of the inputs (t.data set to it).
  py::object allocate(TensorView& t, std::vector<int64_t> shape = {}) {
    if (shape.empty()) shape.assign(t.shape, t.shape + t.ndim);
    py::object arr;
    if (fw >= 0) {
      arr = frameworks()[size_t(fw)].empty(py_shape(shape), dtype_name(t.dtype), like);
      if (PyTuple_Check(arr.ptr())) {  // (array, its data address): no export of a new array
        t.data = reinterpret_cast<void*>(py::tuple(arr)[1].cast<uintptr_t>());
        arr = py::tuple(arr)[0];
      } else {
        t.data = view(arr, "out").data;
      }
    } else {
      static py::dtype* cache[16] = {};  // np.dtype objects by DType, made once
      py::dtype*& dt = cache[int(t.dtype) & 15];
      if (!dt) dt = new py::dtype(dtype_name(t.dtype));
      py::array a(*dt, shape);
      t.data = a.mutable_data();
      arr = std::move(a);
    }
    return arr;
  }
  // The result for output argument i: the caller's out, or a new array (shape: the caller-
  // facing shape when it differs from the view's, e.g. without a population axis).
  // out at argument i: the caller's array (with a leading axis of 1 added when add_axis), or
  // an abstract view of `shape` to allocate once the check has passed.
  TensorView out(Py_ssize_t i, const std::vector<int64_t>& shape, DType dtype, const TensorView& ref,
                 bool add_axis) {
    out_arg = i;
    if (none(i) || abstract) return eggroll::bridge::abstract(shape, dtype, ref);
    TensorView o = view(at(i), "out");
    return add_axis ? with_member_axis(o, 1, "out") : o;
  }
  // The device of `like` (an array of the framework and device the results go to; None: NumPy).
  TensorView like_view(Py_ssize_t i) { return none(i) ? TensorView{} : array(i, "like"); }
  py::object result(Py_ssize_t i, TensorView& t, std::vector<int64_t> shape = {}) {
    out_obj = none(i) ? allocate(t, std::move(shape)) : py::reinterpret_borrow<py::object>(at(i));
    return out_obj;
  }
  const Framework* framework() const { return fw >= 0 ? &frameworks()[size_t(fw)] : nullptr; }

  // ---- scalars --------------------------------------------------------------------------------
  static std::string type_name(py::handle o) { return Py_TYPE(o.ptr())->tp_name; }

  // o as a Python int (anything with __index__ but a bool), else a TypeError naming `name`.
  static py::object index(py::handle o, const std::string& name, const char* expected = "an int") {
    PyObject* v = PyBool_Check(o.ptr()) || !PyIndex_Check(o.ptr()) ? nullptr : PyNumber_Index(o.ptr());
    if (!v) {  // e.g. a float or a non-scalar array, whose __index__ refuses
      PyErr_Clear();
      type_error(name + ": expected " + expected + ", got " + type_name(o));
    }
    return py::reinterpret_steal<py::object>(v);
  }
  // As int64: values beyond it are a ValueError here, the op's own range one from its check.
  static int64_t i64(py::handle v, const std::string& name) {
    int overflow = 0;
    const long long r = PyLong_AsLongLongAndOverflow(v.ptr(), &overflow);
    if (overflow) value_error(name + ": " + std::string(py::str(v)) + " is out of range");
    return r;
  }
  int64_t int_(Py_ssize_t i, const char* name) {
    py::handle o = at(i);
    return PyLong_CheckExact(o.ptr()) ? i64(o, name) : i64(index(o, name), name);
  }
  // An index of the noise key (param_id, epoch_index, noise_index): an int in [0, 2^32).
  uint32_t u32(Py_ssize_t i, const char* name) {
    const int64_t v = int_(i, name);
    if (v < 0 || v > int64_t(UINT32_MAX))
      value_error(std::string(name) + ": must be in [0, 2^32), got " + std::to_string(v));
    return uint32_t(v);
  }
  uint64_t seed(Py_ssize_t i) {
    py::handle o = at(i);
    py::object v = PyLong_CheckExact(o.ptr()) ? py::reinterpret_borrow<py::object>(o) : index(o, "seed");
    const unsigned long long r = PyLong_AsUnsignedLongLong(v.ptr());
    if (PyErr_Occurred()) {
      PyErr_Clear();
      value_error("seed: must be in [0, 2^64), got " + std::string(py::str(v)));
    }
    return r;
  }
  bool flag(Py_ssize_t i, const char* name) {
    py::handle o = at(i);
    if (PyBool_Check(o.ptr())) return o.ptr() == Py_True;
    if (std::string(type_name(o)) == "numpy.bool" || std::string(type_name(o)) == "numpy.bool_")
      return PyObject_IsTrue(o.ptr()) == 1;
    type_error(std::string(name) + ": expected a bool, got " + type_name(o));
  }
  // A real number: a Python float or int (not a bool), or a NumPy scalar / 0-d array.
  double real(Py_ssize_t i, const char* name) {
    py::handle o = at(i);
    bool ok = !PyBool_Check(o.ptr()) && (PyFloat_Check(o.ptr()) || PyLong_Check(o.ptr()));
    if (!ok && !PyBool_Check(o.ptr()) && Py_TYPE(o.ptr())->tp_as_number &&
        Py_TYPE(o.ptr())->tp_as_number->nb_float && PyObject_HasAttrString(o.ptr(), "dtype")) {
      py::object shape = py::reinterpret_steal<py::object>(PyObject_GetAttrString(o.ptr(), "shape"));
      ok = shape && PyTuple_Check(shape.ptr()) && PyTuple_GET_SIZE(shape.ptr()) == 0;
      PyErr_Clear();
      const std::string dt = py::str(o.attr("dtype"));
      ok = ok && dt.find("complex") == std::string::npos && dt.find("bool") == std::string::npos;
    }
    if (!ok) type_error(std::string(name) + ": expected a float, got " + type_name(o));
    const double v = PyFloat_AsDouble(o.ptr());
    if (v == -1.0 && PyErr_Occurred()) {
      PyErr_Clear();
      value_error(std::string(name) + ": out of range for a float");
    }
    return v;
  }

  // A key value given as a CUDA array of a registered framework (device_ok: the CUDA module):
  // seed uint32 [2] (low, high) or one int64 / uint64; epoch one integer (converted to int64 on
  // the device). Null for anything else (read as an int); the kernels read it (key.h), so a
  // replayed CUDA graph sees the array's current value.
  const void* device_scalar(Py_ssize_t i, const char* name, bool seed) {
    py::handle o = at(i);
    if (PyLong_Check(o.ptr()) || framework_of(o) < 0) return nullptr;
    TensorView t = view(o, name);
    if (t.device != Device::cuda) return nullptr;
    const bool words = seed && t.dtype == DType::uint32 && t.numel() == 2;
    const bool one = t.numel() == 1 && (t.dtype == DType::int64 || t.dtype == DType::uint64 ||
                                        (!seed && is_integer(t.dtype)));
    if (!words && !one)
      type_error(std::string(name) + (seed ? ": expected an int, or a device array of uint32 [2] "
                                             "(low, high) or one int64"
                                           : ": expected an int, or a device array of one integer"));
    if (!seed && t.dtype != DType::int64) t = converted(i, name, DType::int64);
    return t.data;
  }

  // The key: seed, param_id, epoch, noise_reuse, antithetic, sigma, rank, fixed_point,
  // sigma_shift at arguments i .. i + 8. At trace time a None is a traced (unknown) value;
  // device_ok: seed / epoch may be device arrays (Key::seed_device / epoch_device).
  Key key(Py_ssize_t i, bool device_ok = false) {
    Key k;
    if (device_ok && !abstract) {
      k.seed_device = static_cast<const uint32_t*>(device_scalar(i, "seed", true));
      k.epoch_device = static_cast<const int64_t*>(device_scalar(i + 2, "epoch", false));
    }
    if (!(abstract && none(i)) && !k.seed_device) k.seed = seed(i);
    k.param_id = u32(i + 1, "param_id");
    if (!(abstract && none(i + 2)) && !k.epoch_device) k.epoch = int_(i + 2, "epoch");
    k.noise_reuse = int_(i + 3, "noise_reuse");
    k.antithetic = flag(i + 4, "antithetic");
    k.sigma = real(i + 5, "sigma");
    k.rank = int_(i + 6, "rank");
    k.fixed_point = int_(i + 7, "fixed_point");
    k.sigma_shift = int_(i + 8, "sigma_shift");
    return k;
  }

  // shape: a tuple / list of ints (not bools).
  std::vector<int64_t> dims(Py_ssize_t i, const char* name) {
    py::handle o = at(i);
    if (!PyTuple_Check(o.ptr()) && !PyList_Check(o.ptr()))
      type_error(std::string(name) + ": expected a tuple of ints, got " + type_name(o));
    std::vector<int64_t> d;
    for (py::handle v : py::reinterpret_borrow<py::sequence>(o))
      d.push_back(i64(index(v, name, "a tuple of ints"), name));
    return d;
  }

  // ---- members ----------------------------------------------------------------------------------
  // None, a range (never materialised), an index array of any integer dtype (int64 used in
  // place; others converted), or a sequence of ints. At trace time an abstract array gives the
  // count only (its values are checked when they exist).
  Members members(Py_ssize_t i, bool device_ok) {
    py::handle o = at(i);
    if (o.is_none()) return Members::none();
    if (PyRange_Check(o.ptr())) {
      int64_t v[3];
      static PyObject* attr[3] = {PyUnicode_InternFromString("start"),
                                  PyUnicode_InternFromString("step"),
                                  PyUnicode_InternFromString("stop")};
      for (int j = 0; j < 3; ++j) {
        py::object a = py::reinterpret_steal<py::object>(PyObject_GetAttr(o.ptr(), attr[j]));
        int overflow = 0;
        v[j] = PyLong_AsLongLongAndOverflow(a.ptr(), &overflow);
        if (overflow) check_member_bounds(overflow < 0 ? -1 : 0, overflow < 0 ? 0 : INT64_MAX, true);
      }
      // len(range), exactly (Python's rule), in 128 bits: no overflow for any int64 bounds.
      const __int128 span = v[1] > 0 ? __int128(v[2]) - v[0] : __int128(v[0]) - v[2];
      const __int128 len = span <= 0 ? 0 : (span - 1) / (v[1] > 0 ? __int128(v[1]) : -__int128(v[1])) + 1;
      return Members::range(v[0], v[1], len > INT64_MAX ? INT64_MAX : int64_t(len));
    }
    TensorView t = view(o, "members");
    if (t.ndim == 1 && t.shape[0] == 0) return Members::range(0, 1, 0);
    if (!is_integer(t.dtype))
      type_error(std::string("members: expected integer indices, got ") + dtype_name(t.dtype));
    if (t.data && t.device != Device::cpu && !device_ok) type_error("members: expected a host index array or a range");
    if (t.ndim != 1) value_error("members: expected a 1-D index array or a range, got shape " + t.shape_str());
    if (!t.data) return Members::range(0, 1, t.shape[0]);  // abstract (traced): the values when they exist
    // Any other integer layout: a contiguous int64 copy (values kept exactly; a uint64 beyond
    // int64 becomes negative and is rejected by the check).
    if (t.dtype == DType::int64 && t.is_contiguous()) return Members::indices(t);
    t = t.device == Device::cpu ? host_copy(i, "members", "int64") : converted(i, "members", DType::int64);
    if (!t.is_contiguous()) value_error("members: expected a contiguous index array");
    return Members::indices(t);
  }
};

// A METH_FASTCALL entry around body(call): C++ and core errors become Python exceptions.
// Abstract: the check_<op> form (arrays may be abstract, unknown scalars None).
template <py::object (*Body)(Call&), bool Abstract = false>
PyObject* entry(PyObject*, PyObject* const* argv, Py_ssize_t argc) {
  try {
    Call c{argv, argc};
    c.abstract = Abstract;
    return Body(c).release().ptr();
  } catch (const eggroll::Error& e) {  // the core's ValueError / TypeError, as Python's
    PyErr_SetString(dynamic_cast<const TypeError*>(&e) ? PyExc_TypeError : PyExc_ValueError, e.what());
  } catch (py::error_already_set& e) {
    e.restore();
  } catch (const py::builtin_exception& e) {
    e.set_error();
  } catch (const std::bad_alloc&) {
    PyErr_NoMemory();
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
  }
  return nullptr;
}

// (shape, dtype name) of an abstract output, what check_<op> returns.
inline py::object spec(const TensorView& t, std::vector<int64_t> shape = {}) {
  if (shape.empty()) shape.assign(t.shape, t.shape + t.ndim);
  return py::make_tuple(py_shape(shape), dtype_name(t.dtype));
}

// What _core and _cuda both define: register_framework (the table above; gemm may answer
// NotImplemented: eggroll's kernels then) and the core's exceptions.
inline void def_common(py::module_& mod) {
  mod.def("register_framework", [](py::object type, py::object exporter, py::object empty,
                                   py::object astype, py::object gemm, bool host_threads,
                                   py::object from_dlpack) {
    frameworks().push_back({type, exporter, empty, astype, gemm, host_threads, from_dlpack});
    framework_cache().clear();
  }, py::arg("type"), py::arg("exporter"), py::arg("empty"), py::arg("astype"), py::arg("gemm"),
     py::arg("host_threads"), py::arg("from_dlpack") = py::none(),
     "Arrays of `type`: exporter(obj) -> DLPack capsule (or None: the array protocols), "
     "empty(shape, dtype_name, like) and astype(obj, dtype_name) make new ones, gemm "
     "multiplies on a GPU, from_dlpack(obj) wraps eggroll's scratch for it; host_threads: run "
     "on the registered OpenMP runtime.");
  py::register_local_exception<eggroll::ValueError>(mod, "CoreValueError", PyExc_ValueError);
  py::register_local_exception<eggroll::TypeError>(mod, "CoreTypeError", PyExc_TypeError);
}

}  // namespace eggroll::bridge
