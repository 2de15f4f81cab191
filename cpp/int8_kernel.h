// The private contract of the int8 GEMM kernels (one per ISA, each in its own file compiled
// with its own flags; cpp/int8.cpp packs the operands and dispatches).
#pragma once
#include <cstdint>

namespace eggroll::detail {

// Packed operands, shared by every kernel so that packing happens once per call:
//  Xp: rows x Kp int8, row-major, each row zero-padded from K to Kp (a multiple of 64), and
//      rows a multiple of 16 (padding rows are zero).
//  Wp: the output columns in blocks of 16; block jb holds Kp/4 groups of 64 bytes,
//      Wp[jb * Kp * 16 + g * 64 + jj * 4 + q] = W[jb * 16 + jj][4 * g + q] (zero past K and
//      past the last column). One group is one AVX-512 VNNI operand and one row of an AMX
//      B tile.
//  wsum: int32 per column = sum_k W[j][k] (kernels that compute (x + 128) * w on u8 x
//      subtract 128 * wsum, exact in wrapping int32 arithmetic).
// A kernel writes C[i * ldc + jj] = sum_k X[i][k] * W[jb0 * 16 + jj][k] for i < rows and
// jj < 16 * nb, where Wp and wsum already point at block jb0. Callers keep |sum| < 2^31
// (int32 accumulation is exact then; wrap-around in partial sums cancels out).
using Int8GemmFn = void (*)(const int8_t* Xp, int64_t rows, int64_t Kp, const int8_t* Wp,
                            const int32_t* wsum, int64_t nb, int32_t* C, int64_t ldc);

void int8_gemm_scalar(const int8_t*, int64_t, int64_t, const int8_t*, const int32_t*, int64_t,
                      int32_t*, int64_t);
void int8_gemm_avx2(const int8_t*, int64_t, int64_t, const int8_t*, const int32_t*, int64_t,
                    int32_t*, int64_t);
void int8_gemm_avx_vnni(const int8_t*, int64_t, int64_t, const int8_t*, const int32_t*, int64_t,
                        int32_t*, int64_t);
void int8_gemm_avx512_vnni(const int8_t*, int64_t, int64_t, const int8_t*, const int32_t*,
                           int64_t, int32_t*, int64_t);
void int8_gemm_amx(const int8_t*, int64_t, int64_t, const int8_t*, const int32_t*, int64_t,
                   int32_t*, int64_t);
// Asks Linux for the AMX tile state (arch_prctl ARCH_REQ_XCOMP_PERM); false if refused or
// not on Linux/x86-64. Safe to call repeatedly.
bool amx_os_enable();

}  // namespace eggroll::detail
