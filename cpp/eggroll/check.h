// Error types the core throws on bad input. The Python bindings map them onto
// ValueError / TypeError; C++ callers catch eggroll::Error. Messages name the argument.
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
void check_contiguous(const TensorView& t, const char* name);
void check_no_overlap(const TensorView& out, const char* out_name,
                      const TensorView& in, const char* in_name);

}  // namespace eggroll
