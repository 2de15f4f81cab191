// The array bridge of the Python modules (_core, _cuda): any framework's array -> TensorView
// (NumPy directly; DLPack, __cuda_array_interface__ or the buffer protocol otherwise; shape
// and dtype only at trace time), Python scalars / ranges -> the core's Key and Members, outputs
// allocated by the caller's framework (one small table), and core errors -> ValueError /
// TypeError. Entries are METH_FASTCALL functions: one C++ call parses everything.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
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
struct DLDataType { uint8_t code, bits; uint16_t lanes; };  // code 0 int, 1 uint, 2 float, 4 bfloat, 5 complex, 6 bool
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
  py::object empty;     // (shape tuple, dtype name, like) -> a new array on like's device
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
inline std::unordered_map<PyTypeObject*, int>& framework_cache() {
  static std::unordered_map<PyTypeObject*, int> c;
  return c;
}
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

inline DType dtype_of_dl(DLDataType d) {
  if (d.lanes != 1) return DType::other;
  switch (d.code * 1000 + d.bits) {
    case 2032: return DType::float32; case 2064: return DType::float64;
    case 2016: return DType::float16; case 4016: return DType::bfloat16;
    case 8: return DType::int8; case 16: return DType::int16; case 32: return DType::int32;
    case 64: return DType::int64; case 1008: return DType::uint8; case 1016: return DType::uint16;
    case 1032: return DType::uint32; case 1064: return DType::uint64; case 6008: return DType::bool_;
    case 5064: return DType::complex64; case 5128: return DType::complex128;
    default: return DType::other;
  }
}

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

// Strides in bytes -> elements; a stride that is not a multiple of the item size cannot be
// expressed, so the view is marked non-contiguous (the op's check rejects it by name).
inline void set_strides(TensorView& t, const int64_t* bytes) {
  const int64_t size = dtype_size(t.dtype);
  for (int i = 0; i < t.ndim; ++i) {
    if (bytes[i] % size != 0) {
      t.strides[i] = t.shape[i] > 1 ? (int64_t(1) << 40) : 0;  // never contiguous
      continue;
    }
    t.strides[i] = bytes[i] / size;
  }
}

inline void set_contiguous_strides(TensorView& t) {
  int64_t s = 1;
  for (int i = t.ndim - 1; i >= 0; --i) { t.strides[i] = s; s *= t.shape[i]; }
}

inline void check_ndim(int64_t ndim, const char* name) {
  if (ndim > TensorView::kMaxDims)
    value_error(std::string(name) + ": at most 8 dimensions, got " + std::to_string(ndim));
}

// One Python call's arguments and the objects that must outlive it.
struct Call {
  PyObject* const* argv;
  Py_ssize_t argc;
  bool abstract = false;          // trace-time check: shapes and dtypes only, no data
  std::vector<py::object> keep;   // converted arrays, capsules, index copies
  std::vector<std::vector<int64_t>> index_copies;
  int fw = -1;                    // the framework of the first array (allocates outputs)
  py::object like;                // that array
  py::object objs[16];            // argument i as viewed (after any conversion)
  py::object out_obj;             // the result array
  bool shared = false;            // a forward's x has no member axis (the `shared` option)
  bool shared_rows = false;       // a forward's rows are one input's for every member (CUDA)
  const char* first_name = "x";   // the first array argument and where it lives
  Device first_device = Device::cpu;
  int first_index = 0;

  py::handle at(Py_ssize_t i) const { return i < argc ? py::handle(argv[i]) : py::handle(Py_None); }
  bool none(Py_ssize_t i) const { return at(i).is_none(); }

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
      check_ndim(a->nd, name);
      t.data = a->data;
      t.ndim = a->nd;
      py::dtype dt = py::reinterpret_borrow<py::dtype>(a->descr);
      t.dtype = dtype_of_numpy(d->kind, int64_t(dt.itemsize()), d->byteorder);
      for (int i = 0; i < t.ndim; ++i) t.shape[i] = a->dimensions[i];
      if (t.dtype != DType::other) set_strides(t, reinterpret_cast<const int64_t*>(a->strides));
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
    if (PyObject_CheckBuffer(obj.ptr())) return from_buffer(obj, name);
    if (PyObject_HasAttrString(obj.ptr(), "__dlpack__"))
      return from_capsule(obj.attr("__dlpack__")(), name);
    // Anything else (a list, a scalar): as a NumPy array.
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
    check_ndim(dl->ndim, name);
    TensorView t;
    t.data = static_cast<char*>(dl->data) + dl->byte_offset;
    t.ndim = dl->ndim;
    t.dtype = dtype_of_dl(dl->dtype);
    for (int i = 0; i < t.ndim; ++i) t.shape[i] = dl->shape[i];
    if (dl->strides) for (int i = 0; i < t.ndim; ++i) t.strides[i] = dl->strides[i];
    else set_contiguous_strides(t);
    const int dev = dl->device.device_type;
    if (dev == 2 || dev == 13) { t.device = Device::cuda; t.device_index = dl->device.device_id; }
    else if (dev != 1 && dev != 3) type_error(std::string(name) + ": arrays on DLPack device type " +
                                              std::to_string(dev) + " are not supported");
    t.writeable = !readonly;
    return t;
  }

  TensorView from_cai(py::object cai, const char* name) {
    py::dict d = cai;
    py::tuple shape = d["shape"];
    check_ndim(int64_t(shape.size()), name);
    TensorView t;
    t.ndim = int(shape.size());
    for (int i = 0; i < t.ndim; ++i) t.shape[i] = shape[size_t(i)].cast<int64_t>();
    py::object typestr = d["typestr"];
    const std::string ts = typestr.cast<std::string>();
    t.dtype = ts.size() >= 3 ? dtype_of_numpy(ts[1], std::stoll(ts.substr(2)), ts[0]) : DType::other;
    py::tuple data = d["data"];
    t.data = reinterpret_cast<void*>(data[0].cast<uintptr_t>());
    t.writeable = !data[1].cast<bool>();
    if (d.contains("strides") && !d["strides"].is_none()) {
      int64_t bytes[TensorView::kMaxDims];
      py::tuple st = d["strides"];
      for (int i = 0; i < t.ndim; ++i) bytes[i] = st[size_t(i)].cast<int64_t>();
      set_strides(t, bytes);
    } else {
      set_contiguous_strides(t);
    }
    t.device = Device::cuda;
    t.device_index = device_of_pointer(t.data);
    return t;
  }

  TensorView from_buffer(py::handle obj, const char* name) {
    Py_buffer b;
    if (PyObject_GetBuffer(obj.ptr(), &b, PyBUF_RECORDS_RO) != 0) throw_py();
    struct Release { Py_buffer* b; ~Release() { PyBuffer_Release(b); } } release{&b};
    check_ndim(b.ndim, name);
    TensorView t;
    t.data = b.buf;
    t.ndim = b.ndim;
    std::string f = b.format ? b.format : "B";
    char order = '=';
    if (!f.empty() && std::string("@=<>!").find(f[0]) != std::string::npos) {
      order = f[0] == '!' ? '>' : f[0];
      f = f.substr(1);
    }
    static const std::pair<const char*, DType> kFormats[] = {
        {"f", DType::float32}, {"d", DType::float64}, {"e", DType::float16}, {"b", DType::int8},
        {"B", DType::uint8}, {"h", DType::int16}, {"H", DType::uint16}, {"i", DType::int32},
        {"I", DType::uint32}, {"l", DType::int64}, {"q", DType::int64}, {"L", DType::uint64},
        {"Q", DType::uint64}, {"?", DType::bool_}, {"Zf", DType::complex64}, {"Zd", DType::complex128}};
    t.dtype = DType::other;
    for (const auto& [fmt, dt] : kFormats)
      if (f == fmt && order != '>' && int64_t(b.itemsize) == dtype_size(dt)) t.dtype = dt;
    for (int i = 0; i < t.ndim; ++i) t.shape[i] = b.shape[i];
    if (t.dtype != DType::other) set_strides(t, reinterpret_cast<const int64_t*>(b.strides));
    t.writeable = !b.readonly;
    keep.push_back(py::reinterpret_borrow<py::object>(obj));  // the exporter keeps the memory
    return t;
  }

  TensorView from_shape_dtype(py::handle obj, const char* name) {
    py::tuple shape = py::tuple(obj.attr("shape"));
    check_ndim(int64_t(shape.size()), name);
    TensorView t;
    t.ndim = int(shape.size());
    for (int i = 0; i < t.ndim; ++i) t.shape[i] = shape[size_t(i)].cast<int64_t>();
    set_contiguous_strides(t);
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

  static int device_of_pointer(const void* p);  // defined by the module (CUDA or not)

  // Argument i as an array. The first array seen picks the framework of the outputs.
  TensorView array(Py_ssize_t i, const char* name) {
    py::handle obj = at(i);
    const bool first = like.ptr() == nullptr;
    if (first) { like = py::reinterpret_borrow<py::object>(obj); fw = framework_of(obj); }
    if (i < 16) objs[i] = py::reinterpret_borrow<py::object>(obj);
    TensorView t = view(obj, name);
    if (first) { first_name = name; first_device = t.device; first_index = t.device_index; }
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
    py::object d = py::module_::import("numpy").attr("ascontiguousarray")(objs[i < 16 ? i : 0], "float64");
    keep.push_back(d);
    const TensorView v = view(d, name);
    std::vector<int64_t>& store = index_copies.emplace_back(size_t(v.numel() + 1));
    for (int64_t k = 0; k < v.numel(); ++k) {
      const double x = v.ptr<const double>()[k];
      const bool ok = x >= lo && x <= hi && x == std::floor(x);
      if (!ok && fallback < 0)
        value_error(std::string(name) + ": values must be integers in [" + std::to_string(int64_t(lo)) +
                    ", " + std::to_string(int64_t(hi)) + "], got " + std::to_string(x));
      const int64_t q = ok ? int64_t(x) : fallback;
      if (to == DType::int8) reinterpret_cast<int8_t*>(store.data())[k] = int8_t(q);
      else reinterpret_cast<uint32_t*>(store.data())[k] = uint32_t(q);
    }
    TensorView r = v;
    r.data = store.data();
    r.dtype = to;
    set_contiguous_strides(r);
    return r;
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
  // out (argument i) as given, or an abstract view of `shape` to be allocated after the check.
  TensorView out(Py_ssize_t i, std::initializer_list<int64_t> shape, DType dtype, const TensorView& ref) {
    if (!none(i) && !abstract) return view(at(i), "out");
    TensorView t = make_view(nullptr, dtype, shape);
    t.device = ref.device;
    t.device_index = ref.device_index;
    return t;
  }
  // A new array of t's shape and dtype from the framework of the inputs (t.data set to it).
  py::object allocate(TensorView& t, std::vector<int64_t> shape = {}) {
    if (shape.empty()) shape.assign(t.shape, t.shape + t.ndim);
    py::tuple dims(shape.size());
    for (size_t i = 0; i < shape.size(); ++i) dims[i] = py::int_(shape[i]);
    py::object arr;
    if (fw >= 0) {
      arr = frameworks()[size_t(fw)].empty(dims, dtype_name(t.dtype), like);
      t.data = view(arr, "out").data;
    } else {
      py::array a(py::dtype(dtype_name(t.dtype)), shape);
      t.data = a.mutable_data();
      arr = std::move(a);
    }
    return arr;
  }
  // The result for output argument i: the caller's out, or a new array (shape: the caller-
  // facing shape when it differs from the view's, e.g. without a population axis).
  py::object result(Py_ssize_t i, TensorView& t, std::vector<int64_t> shape = {}) {
    out_obj = none(i) ? allocate(t, std::move(shape)) : py::reinterpret_borrow<py::object>(at(i));
    return out_obj;
  }
  const Framework* framework() const { return fw >= 0 ? &frameworks()[size_t(fw)] : nullptr; }

  // ---- scalars --------------------------------------------------------------------------------
  static std::string type_name(py::handle o) { return Py_TYPE(o.ptr())->tp_name; }

  // An integer (Python int or anything with __index__ but bool) as int64; values beyond int64
  // are a ValueError here, the op's own range a ValueError from its check.
  int64_t int_(Py_ssize_t i, const char* name) {
    py::handle o = at(i);
    if (PyBool_Check(o.ptr()) || !PyIndex_Check(o.ptr()))
      type_error(std::string(name) + ": expected an int, got " + type_name(o));
    py::object v = py::reinterpret_steal<py::object>(PyNumber_Index(o.ptr()));
    if (!v) {  // e.g. a float or non-scalar array, whose __index__ refuses
      PyErr_Clear();
      type_error(std::string(name) + ": expected an int, got " + type_name(o));
    }
    int overflow = 0;
    const long long r = PyLong_AsLongLongAndOverflow(v.ptr(), &overflow);
    if (overflow) value_error(std::string(name) + ": " + std::string(py::str(v)) + " is out of range");
    return r;
  }
  uint64_t seed(Py_ssize_t i) {
    py::handle o = at(i);
    if (PyBool_Check(o.ptr()) || !PyIndex_Check(o.ptr()))
      type_error("seed: expected an int, got " + type_name(o));
    py::object v = py::reinterpret_steal<py::object>(PyNumber_Index(o.ptr()));
    if (!v) {
      PyErr_Clear();
      type_error("seed: expected an int, got " + type_name(o));
    }
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
    const int64_t pid = int_(i + 1, "param_id");
    if (pid < 0 || pid > int64_t(UINT32_MAX))
      value_error("param_id: must be in [0, 2^32), got " + std::to_string(pid));
    k.param_id = uint32_t(pid);
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
    py::sequence s = py::reinterpret_borrow<py::sequence>(o);
    std::vector<int64_t> d;
    for (py::handle v : s) {
      if (PyBool_Check(v.ptr()) || !PyIndex_Check(v.ptr()))
        type_error(std::string(name) + ": expected a tuple of ints, got an element of type " + type_name(v));
      int overflow = 0;
      py::object iv = py::reinterpret_steal<py::object>(PyNumber_Index(v.ptr()));
      if (!iv) {
        PyErr_Clear();
        type_error(std::string(name) + ": expected a tuple of ints, got an element of type " + type_name(v));
      }
      const long long x = PyLong_AsLongLongAndOverflow(iv.ptr(), &overflow);
      if (overflow) value_error(std::string(name) + ": " + std::string(py::str(iv)) + " is out of range");
      d.push_back(x);
    }
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
      const char* attr[3] = {"start", "step", "stop"};
      for (int j = 0; j < 3; ++j) {
        py::object a = o.attr(attr[j]);
        int overflow = 0;
        v[j] = PyLong_AsLongLongAndOverflow(a.ptr(), &overflow);
        if (overflow) check_member_bounds(overflow < 0 ? -1 : 0, overflow < 0 ? 0 : INT64_MAX, true);
      }
      const int64_t start = v[0], step = v[1], stop = v[2];
      // len(range) without overflow: the same rule as Python's range.
      const double span = step > 0 ? double(stop) - double(start) : double(start) - double(stop);
      const double len = span <= 0 ? 0 : std::floor((span - 1) / std::fabs(double(step))) + 1;
      int64_t count = len > 9e18 ? INT64_MAX : int64_t(len);
      if (count > 0 && len < 9e15) {  // exact integer arithmetic where it fits
        const int64_t s = step > 0 ? stop - start : start - stop;
        const int64_t a = step > 0 ? step : -step;
        count = s <= 0 ? 0 : (s - 1) / a + 1;
      }
      return Members::range(start, step, count);
    }
    TensorView t = view(o, "members");
    if (!t.data) {  // abstract (traced): the count and dtype now, the values when they exist
      Members m = Members::range(0, 1, t.ndim >= 1 ? t.shape[0] : 0);
      if (t.ndim != 1) value_error("members: expected a 1-D index array or a range, got shape " + t.shape_str());
      if (t.shape[0] && !is_integer(t.dtype))
        type_error(std::string("members: expected integer indices, got ") + dtype_name(t.dtype));
      return m;
    }
    if (t.ndim == 1 && t.shape[0] == 0) return Members::range(0, 1, 0);
    if (!is_integer(t.dtype))
      type_error(std::string("members: expected integer indices, got ") + dtype_name(t.dtype));
    if (t.device != Device::cpu) {
      if (!device_ok) type_error("members: expected a host index array or a range");
      if (t.dtype != DType::int64 && is_integer(t.dtype)) t = converted(i, "members", DType::int64);
      if (!t.is_contiguous()) t = converted(i, "members", DType::int64);
      return Members::indices(t);
    }
    if (t.ndim != 1) value_error("members: expected a 1-D index array or a range, got shape " + t.shape_str());
    if (t.dtype == DType::int64 && t.is_contiguous()) return Members::indices(t);
    // Any other integer layout: copied into int64 here (values kept exactly; a uint64 beyond
    // int64 becomes negative and is rejected by the check).
    std::vector<int64_t>& idx = index_copies.emplace_back(size_t(t.shape[0]));
    const char* p = static_cast<const char*>(t.data);
    const int64_t es = dtype_size(t.dtype), st = t.strides[0] * es;
    for (int64_t j = 0; j < t.shape[0]; ++j) {
      const char* q = p + j * st;
      switch (t.dtype) {
        case DType::int8: idx[size_t(j)] = *reinterpret_cast<const int8_t*>(q); break;
        case DType::uint8: idx[size_t(j)] = *reinterpret_cast<const uint8_t*>(q); break;
        case DType::int16: idx[size_t(j)] = *reinterpret_cast<const int16_t*>(q); break;
        case DType::uint16: idx[size_t(j)] = *reinterpret_cast<const uint16_t*>(q); break;
        case DType::int32: idx[size_t(j)] = *reinterpret_cast<const int32_t*>(q); break;
        case DType::uint32: idx[size_t(j)] = *reinterpret_cast<const uint32_t*>(q); break;
        default: idx[size_t(j)] = *reinterpret_cast<const int64_t*>(q); break;
      }
    }
    return Members::indices(make_view(idx.data(), DType::int64, {t.shape[0]}));
  }
};

// A plan's output view given the caller-facing shape of a shared input: x [b, n] / [n] as
// member-axis views of stride 0 (M = members.count, or 1 when there are no members).
inline TensorView with_member_axis(TensorView t, int64_t M) {
  check_ndim(t.ndim + 1, "x");
  for (int i = t.ndim; i > 0; --i) { t.shape[i] = t.shape[i - 1]; t.strides[i] = t.strides[i - 1]; }
  t.shape[0] = M;
  t.strides[0] = 0;
  t.ndim += 1;
  return t;
}

// A METH_FASTCALL entry around body(call): C++ and core errors become Python exceptions.
template <py::object (*Body)(Call&)>
PyObject* entry(PyObject*, PyObject* const* argv, Py_ssize_t argc) {
  try {
    Call c{argv, argc};
    return Body(c).release().ptr();
  } catch (const eggroll::ValueError& e) {
    PyErr_SetString(PyExc_ValueError, e.what());
  } catch (const eggroll::TypeError& e) {
    PyErr_SetString(PyExc_TypeError, e.what());
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
// The same entry in check mode: arrays may be abstract, unknown scalars None.
template <py::object (*Body)(Call&)>
PyObject* check_entry(PyObject*, PyObject* const* argv, Py_ssize_t argc) {
  try {
    Call c{argv, argc};
    c.abstract = true;
    return Body(c).release().ptr();
  } catch (const eggroll::ValueError& e) {
    PyErr_SetString(PyExc_ValueError, e.what());
  } catch (const eggroll::TypeError& e) {
    PyErr_SetString(PyExc_TypeError, e.what());
  } catch (py::error_already_set& e) {
    e.restore();
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
  }
  return nullptr;
}

// (shape, dtype name) of an abstract output, what check_<op> returns.
inline py::object spec(const TensorView& t, std::vector<int64_t> shape = {}) {
  if (shape.empty()) shape.assign(t.shape, t.shape + t.ndim);
  py::tuple dims(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) dims[i] = py::int_(shape[i]);
  return py::make_tuple(dims, dtype_name(t.dtype));
}

inline void register_framework(py::object type, py::object exporter, py::object empty,
                               py::object astype, py::object gemm, bool host_threads,
                               py::object from_dlpack) {
  frameworks().push_back({std::move(type), std::move(exporter), std::move(empty), std::move(astype),
                          std::move(gemm), host_threads, std::move(from_dlpack)});
  framework_cache().clear();
}

}  // namespace eggroll::bridge
