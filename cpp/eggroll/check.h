// Error types the core throws on bad input, and the array checks every check_<op> shares.
// The Python bindings map them onto ValueError / TypeError; C++ callers catch eggroll::Error.
// Messages start with the argument's name.
#pragma once
#include <stdexcept>
#include <string>
#include "eggroll/tensor.h"

namespace eggroll {

struct Error : std::runtime_error { using std::runtime_error::runtime_error; };
struct ValueError : Error { using Error::Error; };   // value or shape problem
struct TypeError : Error { using Error::Error; };    // unsupported dtype / device

[[noreturn]] inline void value_error(const std::string& msg) { throw ValueError(msg); }
[[noreturn]] inline void type_error(const std::string& msg) { throw TypeError(msg); }

// Each helper throws with "name: ..." on failure.
void check_dtype(const TensorView& t, const char* name, DType expected);
void check_cpu(const TensorView& t, const char* name);
// On ref's device (the same CUDA ordinal); ref_name names the array it is compared with.
void check_same_device(const TensorView& t, const char* name, const TensorView& ref,
                       const char* ref_name);
void check_contiguous(const TensorView& t, const char* name);
void check_writeable(const TensorView& t, const char* name);
void check_no_overlap(const TensorView& out, const char* out_name,
                      const TensorView& in, const char* in_name);
// Host float32 / float64 values: ValueError "name: contains NaN or inf at index i".
void check_finite(const TensorView& t, const char* name);
// ValueError "name: expected shape <want>, got <t's shape>".
[[noreturn]] void shape_error(const char* name, const std::string& want, const TensorView& t);
// "(3, 4)" for a shape given as values.
std::string shape_str(std::initializer_list<int64_t> dims);

}  // namespace eggroll
