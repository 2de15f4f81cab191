// AVX2 + FMA GEMM kernels: a 6 x 16 micro-tile (12 ymm accumulators), an 8 x 8-transpose
// packer and the small-row kernel (rows in the lanes, W read in place; the AVX-512 path's
// too, whose CPUs run it at full rate), compiled with -mavx2 -mfma. Same FMA chains as the scalar tile (gemm_kernel.h), so
// results are bit-identical to it on every shape.
#include "gemm_kernel.h"
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

namespace eggroll::detail {
namespace {

constexpr int MR = 6, NR = 16;

// Sixteen ymm registers: 12 accumulators, two B vectors and one broadcast A value. The
// accumulators are named variables, never an array indexed at run time, so they stay in
// registers through the k loop (a run-time-indexed array made GCC store all twelve to the
// stack on every k step, which halved the speed).
#define EGGROLL_AVX2_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)

template <bool kFull>
inline void tile_impl(int64_t kc, const float* Ap, const float* Bp, float* y, int64_t ldy,
                      int mr, int nr, bool accumulate) {
#define DECL(i) __m256 c##i##0 = _mm256_setzero_ps(), c##i##1 = _mm256_setzero_ps();
  EGGROLL_AVX2_ROWS(DECL)
#undef DECL
  if (kFull) {
    // The y tile is read (accumulate) or written after ~1500 cycles of FMAs: start its cache
    // lines on their way now, so a y row block that fell out of cache costs no stall then.
    for (int i = 0; i < MR; ++i) {
      _mm_prefetch(reinterpret_cast<const char*>(y + i * ldy), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(y + i * ldy + NR - 1), _MM_HINT_T0);
    }
  }
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_loadu_ps(Bp + k * NR), b1 = _mm256_loadu_ps(Bp + k * NR + 8);
    const float* a = Ap + k * MR;
#define STEP(i)                                                   \
  {                                                               \
    const __m256 ai = _mm256_broadcast_ss(a + i);                 \
    c##i##0 = _mm256_fmadd_ps(ai, b0, c##i##0);                   \
    c##i##1 = _mm256_fmadd_ps(ai, b1, c##i##1);                   \
  }
    EGGROLL_AVX2_ROWS(STEP)
#undef STEP
  }
  if (kFull) {
    if (accumulate) {
#define ADD(i)                                                                          \
  _mm256_storeu_ps(y + i * ldy, _mm256_add_ps(_mm256_loadu_ps(y + i * ldy), c##i##0));         \
  _mm256_storeu_ps(y + i * ldy + 8, _mm256_add_ps(_mm256_loadu_ps(y + i * ldy + 8), c##i##1));
      EGGROLL_AVX2_ROWS(ADD)
#undef ADD
    } else {
#define PUT(i) _mm256_storeu_ps(y + i * ldy, c##i##0); _mm256_storeu_ps(y + i * ldy + 8, c##i##1);
      EGGROLL_AVX2_ROWS(PUT)
#undef PUT
    }
  } else {
    // Edge tile: spill once to a buffer, then add/copy the valid mr x nr corner (masked
    // stores are microcoded and slow on AMD cores; edges are rare).
    alignas(32) float buf[MR * NR];
#define SPILL(i) _mm256_store_ps(buf + i * NR, c##i##0); _mm256_store_ps(buf + i * NR + 8, c##i##1);
    EGGROLL_AVX2_ROWS(SPILL)
#undef SPILL
    for (int i = 0; i < mr; ++i)
      for (int j = 0; j < nr; ++j)
        y[i * ldy + j] = accumulate ? y[i * ldy + j] + buf[i * NR + j] : buf[i * NR + j];
  }
}
#undef EGGROLL_AVX2_ROWS

void tile(int64_t kc, const float* Ap, const float* Bp, float* y, int64_t ldy, int mr, int nr,
          bool accumulate) {
  if (mr == MR && nr == NR) tile_impl<true>(kc, Ap, Bp, y, ldy, mr, nr, accumulate);
  else tile_impl<false>(kc, Ap, Bp, y, ldy, mr, nr, accumulate);
}

// In-register 8 x 8 transpose: r[i] (row i) becomes column i.
inline void transpose8(__m256 r[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int g = 0; g < 2; ++g) {  // u[4g + e]: rows 4g..4g+3 at columns e, e + 4 (per lane half)
    u[4 * g + 0] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
    u[4 * g + 1] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
    u[4 * g + 2] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
    u[4 * g + 3] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
  }
  for (int e = 0; e < 4; ++e) {
    r[e] = _mm256_permute2f128_ps(u[e], u[4 + e], 0x20);
    r[e + 4] = _mm256_permute2f128_ps(u[e], u[4 + e], 0x31);
  }
}

// Same result as pack_scalar (dst[k * R + i] = src[i * ld + k], zero rows past `valid`),
// 8 x 8 blocks at a time: bands of 8 destination lanes; a band of 6 (R = MR) stores 4 + 2.
void pack(const float* src, int64_t ld, int64_t valid, int64_t R, int64_t kc, float* dst) {
  const int64_t kfull = kc / 8 * 8;
  for (int64_t i0 = 0; i0 < R; i0 += 8) {
    const int64_t width = R - i0 < 8 ? R - i0 : 8;  // lanes of dst rows owned by this band
    const __m256i wm = _mm256_cmpgt_epi32(_mm256_set1_epi32(int(width)),
                                          _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    for (int64_t k = 0; k < kfull; k += 8) {
      __m256 r[8];
      for (int i = 0; i < 8; ++i)
        r[i] = (i0 + i < valid && i < width) ? _mm256_loadu_ps(src + (i0 + i) * ld + k)
                                             : _mm256_setzero_ps();
      transpose8(r);
      float* d = dst + k * R + i0;
      if (width == 8) {
        for (int kk = 0; kk < 8; ++kk) _mm256_storeu_ps(d + kk * R, r[kk]);
      } else if (width == 6) {
        for (int kk = 0; kk < 8; ++kk) {
          _mm_storeu_ps(d + kk * R, _mm256_castps256_ps128(r[kk]));
          _mm_storel_pi(reinterpret_cast<__m64*>(d + kk * R + 4), _mm256_extractf128_ps(r[kk], 1));
        }
      } else {
        for (int kk = 0; kk < 8; ++kk) _mm256_maskstore_ps(d + kk * R, wm, r[kk]);
      }
    }
  }
  for (int64_t i = 0; i < R; ++i)
    for (int64_t k = kfull; k < kc; ++k) dst[k * R + i] = i < valid ? src[i * ld + k] : 0.0f;
}

// Small-row kernel (GemmSmallFn): 8 outputs o a block, one ymm accumulator each whose 8
// lanes are the rows: acc_j[r] = fma(x[r, k], W[o + j, k], acc_j[r]) over a slice, the tile's
// chain (fma is commutative in its two factors, so the bits are the same). Eight chains
// cover the FMA latency of two units; blocks of 12 kept 12 row pointers live and GCC spilled
// some of them (7-10 % slower at n = 256). The last outputs of a row go in blocks of 4 and
// 1-3, always full, so the row pointers stay fixed strides apart.
constexpr int SO = 8;
#define EGGROLL_AVX2_OUTS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)

// One block of outputs [o, o + NO), NO <= SO. kRowMajor: W [m, n] (sk == 1), else W^T [n, m].
template <bool kRowMajor, int NO>
void small_block(int64_t n, const float* xT, int rows, const float* W, int64_t so, int64_t sk,
                 int64_t o, float* y, int64_t ldy) {
#define PTR(j) const float* w##j = W + (o + (j < NO ? j : 0)) * so;
  EGGROLL_AVX2_OUTS(PTR)
#undef PTR
  __m256 tot[SO] = {};  // the slices' running total (n >= 1 always sets it)
  for (int64_t k0 = 0; k0 < n; k0 += kGemmKC) {
    const int64_t k1 = k0 + kGemmKC < n ? k0 + kGemmKC : n;
#define DECL(j) __m256 c##j = _mm256_setzero_ps();
    EGGROLL_AVX2_OUTS(DECL)
#undef DECL
#pragma GCC unroll 4
    for (int64_t k = k0; k < k1; ++k) {
      const __m256 xv = _mm256_loadu_ps(xT + k * 8);
      const int64_t at = kRowMajor ? k : k * sk;
#define STEP(j) if (j < NO) c##j = _mm256_fmadd_ps(xv, _mm256_broadcast_ss(w##j + at), c##j);
      EGGROLL_AVX2_OUTS(STEP)
#undef STEP
    }
#define SUM(j) if (j < NO) tot[j] = k0 == 0 ? c##j : _mm256_add_ps(tot[j], c##j);
    EGGROLL_AVX2_OUTS(SUM)
#undef SUM
  }
  // y[r, o + j] = tot[j][r]: row r of y is column r of tot.
  if (NO == SO && rows == 8) {
    transpose8(tot);
    for (int r = 0; r < 8; ++r) _mm256_storeu_ps(y + r * ldy + o, tot[r]);
    return;
  }
  alignas(32) float buf[SO * 8];
  for (int j = 0; j < NO; ++j) _mm256_store_ps(buf + j * 8, tot[j]);
  for (int r = 0; r < rows; ++r)
    for (int j = 0; j < NO; ++j) y[r * ldy + o + j] = buf[j * 8 + r];
}
#undef EGGROLL_AVX2_OUTS

template <bool kRowMajor>
void small_row(int64_t n, const float* xT, int rows, const float* W, int64_t so, int64_t sk,
               int64_t o0, int64_t o1, float* y, int64_t ldy) {
  for (int64_t o = o0; o < o1;) {
    const int64_t left = o1 - o;
    const int no = left >= 8 ? 8 : left >= 4 ? 4 : int(left);
    switch (no) {
      case 8: small_block<kRowMajor, 8>(n, xT, rows, W, so, sk, o, y, ldy); break;
      case 4: small_block<kRowMajor, 4>(n, xT, rows, W, so, sk, o, y, ldy); break;
      case 3: small_block<kRowMajor, 3>(n, xT, rows, W, so, sk, o, y, ldy); break;
      case 2: small_block<kRowMajor, 2>(n, xT, rows, W, so, sk, o, y, ldy); break;
      default: small_block<kRowMajor, 1>(n, xT, rows, W, so, sk, o, y, ldy); break;
    }
    o += no;
  }
}

void small(int64_t n, const float* xT, int rows, const float* W, int64_t so, int64_t sk,
           int64_t o0, int64_t o1, float* y, int64_t ldy) {
  if (sk == 1) small_row<true>(n, xT, rows, W, so, sk, o0, o1, y, ldy);
  else small_row<false>(n, xT, rows, W, so, sk, o0, o1, y, ldy);
}

}  // namespace

GemmKernel gemm_kernel_avx2() { return {MR, NR, &tile, &pack, &small}; }
}  // namespace eggroll::detail
#else
namespace eggroll::detail {
GemmKernel gemm_kernel_avx2() { return gemm_kernel_scalar(); }
}  // namespace eggroll::detail
#endif
