// The integer (int8) path (spec/ops.md "Integer (int8) path", choices in docs/ops.md):
// the perturbed int8 forward and the thresholded +-1 vote update. Every result is exact
// integer arithmetic, bit-identical on every ISA path and thread count.
#pragma once
#include <cstdint>
#include "eggroll/tensor.h"

namespace eggroll {

// The noise key and fixed-point format of an int8 call.
struct Int8Args {
  uint64_t seed = 0;
  uint32_t param_id = 0;
  int64_t epoch = 0;        // 0 <= epoch < 2^32
  int64_t noise_reuse = 1;  // e = epoch // noise_reuse, or 0 when noise_reuse == 0
  bool antithetic = true;   // forward only: k = i // 2, sign (-1)^i
  int64_t rank = 1;         // 1 <= rank <= kInt8MaxRank
  int64_t fixed_point = 4;  // 0 <= fixed_point <= 7: q = clamp(trunc(z * 2^fp), -127, 127)
  int64_t sigma_shift = 0;  // 0 <= sigma_shift <= 32 (forward only)
};

// Limits that keep every int32 accumulator of the kernels exact (docs/ops.md):
// |x_i . W_j| <= 128 * 128 * n <= 2^30 for n <= 2^16.
constexpr int64_t kInt8MaxN = int64_t(1) << 16;
constexpr int64_t kInt8MaxRank = 1024;

// Throws ValueError naming the field.
void validate_int8_args(const Int8Args& a);

// y [M, m] | [M, b, m] int8 from x [M, n] | [M, b, n] int8 and W [m, n] int8:
//   acc = x_i W^T + (((x_i B_k) (s_i A_k)^T) >> (fixed_point + sigma_shift))   (exact)
//   y_i = clamp(floor(acc / (2^fixed_point * isqrt(n))), -127, 127)
// members: int64 [M], or a null view for the unperturbed product (no correction).
void perturbed_matmul_int8(const TensorView& x, const TensorView& W, const TensorView& members,
                           const Int8Args& a, const TensorView& y);

// out [m, n] int8 = clamp(W + [Z >= T] - [Z <= -T], -127, 127) with
// Z = sum_k f_k A_k B_k^T over pairs k = 0 .. P-1 (noise index k), W int8 [m, n],
// pair_fitness int8 [P] with values in {-1, 0, 1}, threshold T >= 1. out may alias W.
void int8_update(const TensorView& W, const TensorView& pair_fitness, int64_t threshold,
                 const Int8Args& a, const TensorView& out);

// The int8 GEMM path (for tests and benchmarks): every path gives identical results.
enum class Int8Isa : int { scalar = 0, avx2 = 1, avx_vnni = 2, avx512_vnni = 3, amx = 4 };
Int8Isa best_int8_isa();              // fastest this CPU (and OS) supports
Int8Isa active_int8_isa();            // the one in use now
void set_int8_isa(Int8Isa isa);       // ValueError if the CPU or OS lacks it
bool int8_isa_supported(Int8Isa isa);
const char* int8_isa_name(Int8Isa isa);

}  // namespace eggroll
