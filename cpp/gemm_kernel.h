// The core's GEMM, y [R, m] = x [R, n] W [m, n]^T, defined so that every element has ONE
// rounding sequence whatever the ISA, thread count or number of rows. k is cut into slices
// of KC = 256; each slice is one FMA chain from +0, and the slices are added in order:
//     s_q = fma-chain over k in [256 q, 256 q + 256) of x[r, k] * W[o, k]
//     y[r, o] = ((s_0 + s_1) + s_2) + ...
// (short chains keep the error near a blocked BLAS's; a plain std::fma loop per slice is the
// reference). A member's output therefore never depends on
// which other members share the call — BLAS switches kernels with the row count — and that
// is what makes a population splittable over calls, threads and machines bit for bit.
//
// Structure (Goto/BLIS style): x is packed in row blocks of MR rows, k-major; W is packed per
// thread in panels of NR output columns for each KC-long slice of k; an MR x NR micro-tile
// keeps its accumulators in registers for one slice and adds them to y after the first.
// Tiles: scalar 4 x 4 (std::fma), AVX2 + FMA 6 x 16, AVX-512 14 x 32, aarch64 NEON 8 x 12;
// the blocking around them is sized from the CPU's reported caches (cache_sizes.h).
// Parallel decomposition: the column panels are split over threads (or, for a tall product
// whose packed W fits L2, the row blocks); each output element is written only by the thread
// that owns its panel (row block).
// A few rows (at most kGemmSmallRows, e.g. a small population's inputs): packing W and padding
// x to MR rows would cost more than the arithmetic, so the rows go into the vector lanes
// instead (x^T packed, 8 rows a group) and W is read in place, one broadcast per FMA. Each
// element is still the same FMA chains summed in the same order, so the bits are the same as
// the packed path's (tests/cpp compare both paths against the naive loop on every shape).
#pragma once
#include <cstdint>


namespace eggroll::detail {

constexpr int64_t kGemmKC = 256;  // part of the contract: changing it changes results

// One micro-tile: acc = +0; for k < kc, acc[i][j] = fma(Ap[k*MR + i], Bp[k*NR + j], acc[i][j]);
// then, for rows i < mr and columns j < nr, y = y + acc (accumulate) or y = acc (row stride
// ldy). Ap and Bp are zero-padded to MR and NR.
using GemmTileFn = void (*)(int64_t kc, const float* Ap, const float* Bp, float* y,
                            int64_t ldy, int mr, int nr, bool accumulate);

// Packs a panel: dst[k * R + i] = src[i * ld + k] for i < valid, 0 for valid <= i < R; k < kc.
using GemmPackFn = void (*)(const float* src, int64_t ld, int64_t valid, int64_t R, int64_t kc,
                            float* dst);

// The small-row path: y[g * 8 + r, o] for every row r < rows of row group g (rows <= 8) and
// o in [o0, o1). xT [n, 8]: xT[k * 8 + r] = x[g * 8 + r, k], lanes >= rows zero; W[o, k] is
// read at W[o * so + k * sk] (so = n, sk = 1 for W [m, n]; so = 1, sk = m for W^T [n, m]);
// y points at row g * 8 (row stride ldy). Per element: the slice chains of gemm_kernel.h.
using GemmSmallFn = void (*)(int64_t n, const float* xT, int rows, const float* W, int64_t so,
                             int64_t sk, int64_t o0, int64_t o1, float* y, int64_t ldy);
constexpr int64_t kGemmSmallRows = 8;  // a speed choice only: both paths give the same bits

struct GemmKernel {
  int MR, NR;
  GemmTileFn tile;
  GemmPackFn pack;
  GemmSmallFn small = nullptr;  // none: every shape takes the packed path
};

// Tests only: which path gemm_nt / gemm_tn / gemm_nk take (automatic: the small-row path for
// at most kGemmSmallRows rows where the ISA has one). Not thread-safe against running GEMMs.
enum class GemmPath { automatic, packed, small };
void force_gemm_path(GemmPath path);

void pack_scalar(const float* src, int64_t ld, int64_t valid, int64_t R, int64_t kc, float* dst);

GemmKernel gemm_kernel_scalar();
GemmKernel gemm_kernel_avx2();    // x86-64 builds only (EGGROLL_X86_KERNELS)
GemmKernel gemm_kernel_avx512();
GemmKernel gemm_kernel_neon();    // aarch64 builds only (EGGROLL_NEON_KERNELS): the baseline there

}  // namespace eggroll::detail
