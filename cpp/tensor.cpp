// TensorView helpers and the argument checks shared by every op.
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
  }
  return "unknown";
}

int64_t dtype_size(DType dt) {
  switch (dt) {
    case DType::float32: case DType::int32: case DType::uint32: return 4;
    case DType::float64: case DType::int64: return 8;
    case DType::float16: case DType::bfloat16: return 2;
    case DType::int8: return 1;
  }
  return 0;
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
  if (t.ndim > TensorView::kMaxDims) value_error("make_view: at most 4 dimensions");
  int i = 0;
  for (int64_t s : shape) t.shape[i++] = s;
  int64_t st = 1;
  for (int d = t.ndim - 1; d >= 0; --d) { t.strides[d] = st; st *= t.shape[d]; }
  return t;
}

void check_dtype(const TensorView& t, const char* name, DType expected) {
  if (t.dtype != expected)
    type_error(std::string(name) + ": expected dtype " + dtype_name(expected) + ", got " +
               dtype_name(t.dtype));
}

void check_cpu(const TensorView& t, const char* name) {
  if (t.device != Device::cpu)
    type_error(std::string(name) + ": expected a CPU array (this build computes on the CPU)");
}

void check_contiguous(const TensorView& t, const char* name) {
  if (!t.is_contiguous())
    value_error(std::string(name) + ": must be C-contiguous (got strides that are not; "
                "make a contiguous copy first, e.g. numpy.ascontiguousarray)");
}

void check_no_overlap(const TensorView& out, const char* out_name, const TensorView& in,
                      const char* in_name) {
  if (!out.data || !in.data) return;
  auto lo_o = static_cast<const char*>(out.data), lo_i = static_cast<const char*>(in.data);
  auto hi_o = lo_o + out.numel() * dtype_size(out.dtype);
  auto hi_i = lo_i + in.numel() * dtype_size(in.dtype);
  if (lo_o < hi_i && lo_i < hi_o)
    value_error(std::string(out_name) + ": output buffer overlaps input " + in_name);
}

}  // namespace eggroll
