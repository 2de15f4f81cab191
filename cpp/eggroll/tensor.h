// TensorView: the one array type the core sees — a borrowed pointer with dtype, shape,
// strides (in elements) and device. The core never allocates user-visible arrays.
#pragma once
#include <cstdint>
#include <string>

namespace eggroll {

// The dtypes the kernels take (float32 .. uint32) and the others an array may arrive with, so
// that a check can name what it got ("x: expected float32, got complex64").
enum class DType : int { float32 = 0, float64 = 1, float16 = 2, bfloat16 = 3,
                         int8 = 4, int32 = 5, int64 = 6, uint32 = 7,
                         bool_ = 8, uint8 = 9, int16 = 10, uint16 = 11, uint64 = 12,
                         complex64 = 13, complex128 = 14, other = 15 };
enum class Device : int { cpu = 0, cuda = 1 };

const char* dtype_name(DType dt);
int64_t dtype_size(DType dt);
inline bool is_float(DType dt) { return int(dt) <= int(DType::bfloat16); }
inline bool is_integer(DType dt) {
  return (dt >= DType::int8 && dt <= DType::uint32) || (dt >= DType::uint8 && dt <= DType::uint64);
}

struct TensorView {
  static constexpr int kMaxDims = 8;
  void* data = nullptr;  // null: an abstract array (shape and dtype only, as at trace time)
  DType dtype = DType::float32;
  int ndim = 0;
  int64_t shape[kMaxDims] = {};
  int64_t strides[kMaxDims] = {};  // in elements, not bytes
  Device device = Device::cpu;
  int device_index = 0;
  bool writeable = true;  // false for read-only memory (checked for outputs)

  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= shape[i];
    return n;
  }
  bool is_contiguous() const;     // C order (size-1 dims may have any stride)
  std::string shape_str() const;  // "(3, 4)"
  template <class T> T* ptr() const { return static_cast<T*>(data); }
};

// Builds a contiguous view; for C++ callers that own plain buffers.
TensorView make_view(void* data, DType dtype, std::initializer_list<int64_t> shape);

// t with a new leading axis of M and stride 0: an input shared by M members seen as one row
// per member (docs/ops.md "Shared inputs"); ValueError naming `name` beyond kMaxDims.
TensorView with_member_axis(TensorView t, int64_t M, const char* name);

}  // namespace eggroll
