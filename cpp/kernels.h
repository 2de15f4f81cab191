// Small private building blocks shared by perturb.cpp, update.cpp and int8.cpp.
#pragma once
#include <cstdint>
#include <string>
#include <vector>
#include "eggroll/check.h"
#include "eggroll/key.h"
#include "eggroll/perturb.h"

namespace eggroll::detail {

// Hot loops are compiled for AVX-512, AVX2 and baseline x86-64 and picked at load time
// (GCC/Clang function multiversioning). Results do not depend on the clone: see dot16.
#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__))
#define EGGROLL_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define EGGROLL_CLONES
#endif

// Dot product with 16 partial sums in a fixed order: whatever vector width the compiler
// picks, every build adds the same numbers in the same order (and never fuses into FMA),
// so results do not depend on the ISA or on which thread computed them.
float dot16(const float* a, const float* b, int64_t n);
// y[0:n] += a * x[0:n]  (elementwise, so identical on every ISA)
void axpy(float* y, float a, const float* x, int64_t n);

// Member i's (noise index, sign) and the coefficient s_i * scale rounded once to float.
inline float member_coef(int64_t member, bool antithetic, double scale) {
  return float((antithetic && (member & 1)) ? -scale : scale);
}

// Runs of consecutive members that share a noise index: run q covers members
// [starts[q], starts[q+1]).
std::vector<int64_t> noise_runs(const Members& members, bool antithetic);

// Rows per parallel_for task so that one task holds about 64K cost units (1 unit ~ one
// multiply-add, ~16 per generated normal): small calls then run inline on the caller.
int64_t task_grain(double cost_per_item, int64_t at_least);

// Shared pieces of the checks (cpp/perturb.cpp): the float dtypes a device's forward kernels
// take, members on the arrays' device, and the stream-length rule of each noise layout.
void check_float_storage(const TensorView& t, const char* name);
void check_member_device(const Members& members, const TensorView& ref, const char* ref_name);
void check_stream(int64_t m, int64_t n, int64_t rank, bool full_rank);

// What every forward's check shares (float and int8, after each has checked its dtypes):
// x [M, n] | [M, b, n] whose member rows are contiguous (or one input shared with stride 0),
// W [m, n] and out [M, (b,) m] of x's dtype, on x's device, out writeable and apart from both,
// and the members. Returns the dimensions and the member stride of x.
struct ForwardDims { int64_t M, b, n, m, x_stride; };
ForwardDims check_forward(const TensorView& x, const TensorView& W, const Members& members,
                          const Key& key, const TensorView& out, bool full_rank);

}  // namespace eggroll::detail
