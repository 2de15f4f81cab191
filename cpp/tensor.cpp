// TensorView helpers and the array checks shared by every check_<op> (cpp/eggroll/check.h).
#include <cmath>
#include <string>
#include "eggroll/check.h"
#include "eggroll/tensor.h"

namespace eggroll {

const char* dtype_name(DType dt) {
  switch (dt) {
    case DType::float32: return "float32";
    case DType::float64: return "float64";
    case DType::float16: return "float16";
    case DType::bfloat16: return "bfloat16";
    case DType::int8: return "int8";
    case DType::int32: return "int32";
    case DType::int64: return "int64";
    case DType::uint32: return "uint32";
    case DType::bool_: return "bool";
    case DType::uint8: return "uint8";
    case DType::int16: return "int16";
    case DType::uint16: return "uint16";
    case DType::uint64: return "uint64";
    case DType::complex64: return "complex64";
    case DType::complex128: return "complex128";
    case DType::other: break;
  }
  return "an unsupported dtype";
}

int64_t dtype_size(DType dt) {
  switch (dt) {
    case DType::float32: case DType::int32: case DType::uint32: return 4;
    case DType::float64: case DType::int64: case DType::uint64: case DType::complex64: return 8;
    case DType::float16: case DType::bfloat16: case DType::int16: case DType::uint16: return 2;
    case DType::int8: case DType::uint8: case DType::bool_: return 1;
    case DType::complex128: return 16;
    case DType::other: break;
  }
  return 1;
}

bool TensorView::is_contiguous() const {
  if (numel() == 0) return true;  // an empty array has no layout (NumPy gives it 0 strides)
  int64_t expect = 1;
  for (int i = ndim - 1; i >= 0; --i) {
    if (shape[i] != 1 && strides[i] != expect) return false;
    expect *= shape[i];
  }
  return true;
}

std::string TensorView::shape_str() const {
  // Plain string concatenation, no iostreams: this runs on error paths of every module
  // (including _cuda), where the less runtime machinery involved the better.
  std::string s = "(";
  for (int i = 0; i < ndim; ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  if (ndim == 1) s += ",";
  return s + ")";
}

TensorView make_view(void* data, DType dtype, std::initializer_list<int64_t> shape) {
  TensorView t;
  t.data = data; t.dtype = dtype; t.ndim = int(shape.size());
  if (t.ndim > TensorView::kMaxDims) value_error("make_view: at most 8 dimensions");
  int i = 0;
  for (int64_t s : shape) t.shape[i++] = s;
  int64_t st = 1;
  for (int d = t.ndim - 1; d >= 0; --d) { t.strides[d] = st; st *= t.shape[d]; }
  return t;
}

TensorView with_member_axis(TensorView t, int64_t M, const char* name) {
  if (t.ndim + 1 > TensorView::kMaxDims)
    value_error(std::string(name) + ": a shared input has at most 7 dimensions");
  for (int i = t.ndim; i > 0; --i) { t.shape[i] = t.shape[i - 1]; t.strides[i] = t.strides[i - 1]; }
  t.shape[0] = M;
  t.strides[0] = 0;
  t.ndim += 1;
  return t;
}

void check_dtype(const TensorView& t, const char* name, DType expected) {
  if (t.dtype != expected)
    type_error(std::string(name) + ": expected dtype " + dtype_name(expected) + ", got " +
               dtype_name(t.dtype));
}

void check_cpu(const TensorView& t, const char* name) {
  if (t.device != Device::cpu) type_error(std::string(name) + ": expected a CPU array");
}

void check_same_device(const TensorView& t, const char* name, const TensorView& ref,
                       const char* ref_name) {
  auto where = [](const TensorView& v) {
    return v.device == Device::cpu ? std::string("the CPU")
                                   : "cuda:" + std::to_string(v.device_index);
  };
  if (t.device != ref.device || (t.device == Device::cuda && t.device_index != ref.device_index))
    type_error(std::string(name) + ": is on " + where(t) + " but " + ref_name + " is on " +
               where(ref) + "; move both to one device");
}

void check_writeable(const TensorView& t, const char* name) {
  if (!t.writeable) value_error(std::string(name) + ": is read-only; pass a writeable array");
}

std::string shape_str(std::initializer_list<int64_t> dims) {
  std::string s = "(";
  int i = 0;
  for (int64_t d : dims) s += (i++ ? ", " : "") + std::to_string(d);
  if (dims.size() == 1) s += ",";
  return s + ")";
}

void check_finite(const TensorView& t, const char* name) {
  if (!t.data || t.device != Device::cpu) return;
  const int64_t N = t.numel();
  for (int64_t i = 0; i < N; ++i) {
    const double v = t.dtype == DType::float32 ? double(t.ptr<const float>()[i])
                     : t.dtype == DType::float64 ? t.ptr<const double>()[i] : 0.0;
    if (!std::isfinite(v)) value_error(std::string(name) + ": contains NaN or inf at index " + std::to_string(i));
  }
}

void shape_error(const char* name, const std::string& want, const TensorView& t) {
  value_error(std::string(name) + ": expected shape " + want + ", got " + t.shape_str());
}

void check_contiguous(const TensorView& t, const char* name) {
  if (!t.is_contiguous())
    value_error(std::string(name) + ": must be C-contiguous (got strides that are not; make a "
                "contiguous copy first, e.g. numpy.ascontiguousarray or tensor.contiguous())");
}

void check_no_overlap(const TensorView& out, const char* out_name, const TensorView& in,
                      const char* in_name) {
  if (!out.data || !in.data || out.numel() == 0 || in.numel() == 0) return;
  if (out.device != in.device || out.device_index != in.device_index) return;
  // Byte ranges [lo, hi) spanned by each view (strides may be 0: a broadcast input).
  auto span = [](const TensorView& t) {
    int64_t last = 0;
    for (int i = 0; i < t.ndim; ++i) last += (t.shape[i] - 1) * (t.strides[i] < 0 ? -t.strides[i] : t.strides[i]);
    return (last + 1) * dtype_size(t.dtype);
  };
  auto lo_o = static_cast<const char*>(out.data), lo_i = static_cast<const char*>(in.data);
  if (lo_o < lo_i + span(in) && lo_i < lo_o + span(out))
    value_error(std::string(out_name) + ": overlaps the input " + in_name);
}

}  // namespace eggroll
