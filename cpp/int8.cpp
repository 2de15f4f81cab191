// The integer path: the checks, dispatch onto the active int8 GEMM path, operand packing,
// integer noise, and the exact epilogues (correction, shifts, requantisation, vote update).
// Parallel decomposition: noise runs (one task per run of members sharing a noise index),
// then (row tile x column chunk) GEMM tiles; each output element is owned by one task, and
// all arithmetic is exact, so results never depend on the thread count or the ISA.
#include "eggroll/int8.h"
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>
#include "eggroll/check.h"
#include "eggroll/noise.h"
#include "eggroll/parallel.h"
#include "int8_kernel.h"
#include "kernels.h"

namespace eggroll {
namespace {

constexpr int64_t kRowTile = 64;    // rows per GEMM task (multiple of 32)
constexpr int64_t kColBlocks = 16;  // 16-column blocks per GEMM task (256 columns)
constexpr int64_t kUpdateK = 4096;  // update: factor columns per chunk (<= 2^17, exact int32)

detail::Int8GemmFn kernel_for(Int8Isa isa) {
  switch (isa) {
#if defined(EGGROLL_X86_KERNELS)  // built on x86-64 only (CMakeLists.txt)
    case Int8Isa::avx2: return detail::int8_gemm_avx2;
    case Int8Isa::avx_vnni: return detail::int8_gemm_avx_vnni;
    case Int8Isa::avx512_vnni: return detail::int8_gemm_avx512_vnni;
    case Int8Isa::amx: return detail::int8_gemm_amx;
#endif
    default: break;
  }
  return detail::int8_gemm_scalar;
}

// ---- packing (cpp/int8_kernel.h) ---------------------------------------------------------

int64_t round_up(int64_t v, int64_t to) { return (v + to - 1) / to * to; }

EGGROLL_CLONES int32_t sum_i8(const int8_t* a, int64_t n) {
  int32_t s = 0;
  for (int64_t j = 0; j < n; ++j) s += a[j];
  return s;
}

struct PackedCols {
  std::vector<int8_t> data;    // [nb][Kp/4][16][4]
  std::vector<int32_t> wsum;   // [nb * 16]
  int64_t cols = 0, nb = 0, Kp = 0;
};

// Scratch buffers are thread_local and only grow: a training loop calls the same shapes
// again and again, and fresh allocations cost more in page faults than the GEMM itself.
template <class T> T* zeroed(std::vector<T>& v, int64_t n) {
  v.assign(size_t(n), T(0));
  return v.data();
}

// Only the VNNI kernels (u8 x s8) need the column sums.
bool needs_wsum(Int8Isa isa) { return isa == Int8Isa::avx512_vnni || isa == Int8Isa::avx_vnni; }

void pack_cols(const int8_t* W, int64_t cols, int64_t K, bool with_wsum, PackedCols& P) {
  P.cols = cols; P.nb = (cols + 15) / 16; P.Kp = round_up(std::max<int64_t>(K, 1), 64);
  zeroed(P.data, P.nb * P.Kp * 16);
  zeroed(P.wsum, P.nb * 16);
  const int64_t K4 = K / 4 * 4, Kp = P.Kp;
  int8_t* data = P.data.data();
  int32_t* wsum = P.wsum.data();
  parallel_for(P.nb, 4, [=](int64_t lo, int64_t hi) {  // by value: int8 stores alias all
    for (int64_t jb = lo; jb < hi; ++jb) {
      int8_t* dst = data + jb * Kp * 16;
      for (int64_t jj = 0; jj < 16 && jb * 16 + jj < cols; ++jj) {
        const int8_t* w = W + (jb * 16 + jj) * K;
        int8_t* d = dst + jj * 4;
        for (int64_t k = 0; k < K4; k += 4) std::memcpy(d + k * 16, w + k, 4);
        for (int64_t k = K4; k < K; ++k) dst[(k >> 2) * 64 + jj * 4 + (k & 3)] = w[k];
        if (with_wsum) wsum[jb * 16 + jj] = sum_i8(w, K);
      }
    }
  });
}

// rows x K (leading dimension K) -> Rpad x Kp, zero padded.
void pack_rows(const int8_t* X, int64_t rows, int64_t K, int64_t Kp, std::vector<int8_t>& Xp) {
  zeroed(Xp, round_up(std::max<int64_t>(rows, 1), 16) * Kp);
  parallel_for(rows, 64, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) std::copy(X + i * K, X + (i + 1) * K, Xp.data() + i * Kp);
  });
}

// fn(t) for t in [0, n) with dynamic scheduling: the pool's threads take items from a
// shared counter, so a thread the OS preempts (the cores are often shared) does not hold
// the others up. Which thread computes an item never changes its (exact) result.
void dynamic_for(int64_t n, const std::function<void(int64_t)>& fn) {
  std::atomic<int64_t> next{0};
  parallel_for(std::min<int64_t>(n, num_threads()), 1, [&](int64_t, int64_t) {
    for (int64_t t; (t = next.fetch_add(1, std::memory_order_relaxed)) < n;) fn(t);
  });
}

// Runs the active kernel over every (row tile, column chunk) and hands each int32 tile to
// epi(r0, nr, c0, nc, C, ldc) with nr/nc the real (unpadded) rows and columns.
using TileFn = std::function<void(int64_t, int64_t, int64_t, int64_t, const int32_t*, int64_t)>;
void gemm_tiles(Int8Isa isa, const int8_t* Xp, int64_t rows, const PackedCols& P,
                const TileFn& epi) {
  const detail::Int8GemmFn kern = kernel_for(isa);
  const int64_t Rpad = round_up(std::max<int64_t>(rows, 1), 16);
  const int64_t rt = (Rpad + kRowTile - 1) / kRowTile, ct = (P.nb + kColBlocks - 1) / kColBlocks;
  const int64_t ldc = kColBlocks * 16;
  dynamic_for(rt * ct, [&](int64_t t) {
    thread_local std::vector<int32_t> tl_C;
    std::vector<int32_t>& C = tl_C;
    C.resize(size_t(kRowTile * ldc));
    {
      const int64_t r0 = (t / ct) * kRowTile, jb0 = (t % ct) * kColBlocks;
      const int64_t nr = std::min(kRowTile, Rpad - r0), nb = std::min(kColBlocks, P.nb - jb0);
      kern(Xp + r0 * P.Kp, nr, P.Kp, P.data.data() + jb0 * P.Kp * 16,
           P.wsum.data() + jb0 * 16, nb, C.data(), ldc);
      const int64_t real_r = std::min(nr, rows - r0), real_c = std::min(nb * 16, P.cols - jb0 * 16);
      if (real_r > 0 && real_c > 0) epi(r0, real_r, jb0 * 16, real_c, C.data(), ldc);
    }
  });
}

// ---- integer noise -----------------------------------------------------------------------

// q = clamp(trunc(z * 2^fp), -127, 127); z * 2^fp is exact in float32 (a power of two),
// and clamping to the integers +-127 before the truncating conversion gives the same value.
EGGROLL_CLONES void quantize(const float* z, int64_t count, int64_t fp, int8_t* q) {
  const float scale = float(int64_t(1) << fp);
  // |z| < 7 for every value Box-Muller can produce from 32-bit uniforms, so z * 2^fp
  // (< 2^10) converts to int32 without overflow; truncate, then clamp in integers.
  for (int64_t j = 0; j < count; ++j)
    q[j] = int8_t(std::min(std::max(int32_t(z[j] * scale), -127), 127));
}

// The same into column-major order: out[l * rows + j] = q(z[j * r + l]) (the factor's
// columns contiguous, as the dot products and the epilogue read them).
EGGROLL_CLONES void quantize_t(const float* z, int64_t rows, int64_t r, int64_t fp, int8_t* out) {
  const float scale = float(int64_t(1) << fp);
  for (int64_t l = 0; l < r; ++l)
    for (int64_t j = 0; j < rows; ++j)
      out[l * rows + j] = int8_t(std::min(std::max(int32_t(z[j * r + l] * scale), -127), 127));
}

EGGROLL_CLONES int32_t dot_i8(const int8_t* a, const int8_t* b, int64_t n) {
  int32_t s = 0;  // |s| <= 128 * 127 * n < 2^31 for n <= 2^16
  for (int64_t j = 0; j < n; ++j) s += int32_t(a[j]) * int32_t(b[j]);
  return s;
}

// corr[o] = sum_l t[l] * At[l * lda + o]. Exact in double: |t| < 2^31, |A| <= 127,
// r <= 1024, so every partial sum is an integer below 2^48 < 2^53.
EGGROLL_CLONES void lowrank_corr(double* corr, int64_t nc, const double* t, int64_t r,
                                 const int8_t* At, int64_t lda) {
  for (int64_t o = 0; o < nc; ++o) corr[o] = t[0] * double(At[o]);
  for (int64_t l = 1; l < r; ++l)
    for (int64_t o = 0; o < nc; ++o) corr[o] += t[l] * double(At[l * lda + o]);
}

// y[o] = clamp(floor(v / D), -127, 127) with v = c[o] + floor(corr[o] / 2^shift) (corr
// null: v = c[o]). Exact: floor(corr * 2^-shift) is a power-of-two scaling and a floor of
// an integer-valued double (the arithmetic shift of ops.md); v is clamped to [-128 D, 128 D]
// first (the result is clamped anyway), so |v| <= 2^22 is exact in float32, and with
// D <= 2^15 a non-integer true quotient lies >= 2^-15 below the next integer while float32
// rounds by <= 2^-18 at magnitudes < 128: floor(float(v) / float(D)) is the exact floor.
EGGROLL_CLONES void requant_row(const int32_t* c, int64_t nc, const double* corr, double inv2sh,
                                int64_t D, int8_t* y) {
  const double lim = 128.0 * double(D);
  if (!corr && (D & (D - 1)) == 0) {  // exact scaling by 1/D, see requant_row_r1
    const double invD = 1.0 / double(D);
    for (int64_t o = 0; o < nc; ++o) {
      const double v = std::min(std::max(double(c[o]), -lim), lim);
      const int32_t q = int32_t(std::floor(v * invD));
      y[o] = int8_t(std::min(std::max(q, -127), 127));
    }
    return;
  }
  const float Df = float(D);
  for (int64_t o = 0; o < nc; ++o) {
    double v = double(c[o]);
    if (corr) v += std::floor(corr[o] * inv2sh);  // unswitched by the compiler
    v = std::min(std::max(v, -lim), lim);
    const int32_t q = int32_t(std::floor(float(v) / Df));
    y[o] = int8_t(std::min(std::max(q, -127), 127));
  }
}

// out[j] = clamp(w[j] + [z_j >= T] - [z_j <= -T], -127, 127) (z = 0 when null). out may be w.
EGGROLL_CLONES void vote_row(const int32_t* z, int64_t nc, const int8_t* w, int64_t T,
                             int8_t* out) {
  // |z| < 2^31 here; a threshold beyond int32 can never be reached.
  const int32_t t = int32_t(std::min<int64_t>(T, INT32_MAX));
  for (int64_t j = 0; j < nc; ++j) {
    const int32_t v = int32_t(w[j]) + (z[j] >= t) - (z[j] <= -t);
    out[j] = int8_t(std::min(std::max(v, -127), 127));
  }
}
void vote_row64(const int64_t* z, int64_t nc, const int8_t* w, int64_t T, int8_t* out) {
  for (int64_t j = 0; j < nc; ++j) {
    const int64_t zj = z ? z[j] : 0;
    const int64_t v = int64_t(w[j]) + (zj >= T) - (zj <= -T);
    out[j] = int8_t(v < -127 ? -127 : (v > 127 ? 127 : v));
  }
}

// Rank 1 in one pass: corr[o] = t * A[o] (|t * A| < 2^38, exact in double), then as above.
// When D is a power of two (n a power of 4, as in the paper's layers) the division is an
// exact scaling by 1/D: floor(v * 2^-k) in double.
EGGROLL_CLONES void requant_row_r1(const int32_t* c, int64_t nc, double t, const int8_t* A,
                                   double inv2sh, int64_t D, int8_t* y) {
  const double lim = 128.0 * double(D);
  if ((D & (D - 1)) == 0) {
    const double invD = 1.0 / double(D);
    for (int64_t o = 0; o < nc; ++o) {
      double v = double(c[o]) + std::floor(t * double(A[o]) * inv2sh);
      v = std::min(std::max(v, -lim), lim);
      const int32_t q = int32_t(std::floor(v * invD));
      y[o] = int8_t(std::min(std::max(q, -127), 127));
    }
    return;
  }
  const float Df = float(D);
  for (int64_t o = 0; o < nc; ++o) {
    double v = double(c[o]) + std::floor(t * double(A[o]) * inv2sh);
    v = std::min(std::max(v, -lim), lim);
    const int32_t q = int32_t(std::floor(float(v) / Df));
    y[o] = int8_t(std::min(std::max(q, -127), 127));
  }
}

int64_t isqrt(int64_t n) {
  int64_t s = int64_t(std::sqrt(double(n)));
  while (s * s > n) --s;
  while ((s + 1) * (s + 1) <= n) ++s;
  return s;
}

void check_int8_tensor(const TensorView& t, const char* name) {
  check_dtype(t, name, DType::int8);
  check_contiguous(t, name);
}

}  // namespace

// ---- forward -------------------------------------------------------------------------------

Int8ForwardPlan check_perturbed_matmul_int8(const TensorView& x, const TensorView& W,
                                            const Members& members, const Key& key,
                                            const TensorView& out) {
  check_key(key, KeyUse::int8_forward);
  check_dtype(x, "x", DType::int8);
  check_dtype(W, "W", DType::int8);
  const detail::ForwardDims d = detail::check_forward(x, W, members, key, out, false);
  if (d.n < 1 || d.n > kInt8MaxN)
    value_error("x: the inner dimension n must be in [1, 65536] (exact int32 accumulation), got " +
                std::to_string(d.n));
  Int8ForwardPlan p;
  p.x = x; p.W = W; p.out = out; p.members = members; p.key = key;
  p.M = d.M; p.b = d.b; p.n = d.n; p.m = d.m; p.x_stride = d.x_stride;
  return p;
}

void perturbed_matmul_int8(const Int8ForwardPlan& p) {
  check_cpu(p.x, "x");
  ScopedIeeeFloat ieee;
  const Members& mem = p.members;
  const Key& a = p.key;
  const int64_t M = p.M, b = p.b, n = p.n, m = p.m;
  // A shared input (x_stride 0): one GEMM over its b rows, then every member's epilogue.
  const bool shared = p.x_stride == 0 && M > 1;
  const int64_t R = shared ? b : M * b;  // GEMM rows
  if (M == 0 || b == 0 || m == 0) return;

  const int8_t* xp = p.x.ptr<const int8_t>();
  // Named by local references: a lambda naming a thread_local directly would see the
  // worker thread's own (empty) instance.
  thread_local PackedCols tl_P;
  thread_local std::vector<int8_t> tl_Xp;
  PackedCols& P = tl_P;
  std::vector<int8_t>& Xp = tl_Xp;
  const Int8Isa isa = active_int8_isa();  // read once: packing depends on it
  pack_cols(p.W.ptr<const int8_t>(), m, n, needs_wsum(isa), P);
  // x already has the packed layout when its rows need no padding (n % 64 == 0, R % 16 == 0).
  const bool direct = n == P.Kp && R % 16 == 0;
  if (!direct) pack_rows(xp, R, n, P.Kp, Xp);
  const int8_t* xpacked = direct ? xp : Xp.data();

  // Noise phase: per run of members sharing k, the integer factors; At [run][r][m] keeps
  // A_k, t [row][r] = s_i x_row . B_k[:, l] (the sign folded into t, exact). For a shared
  // input t [run][row][r] holds the unsigned products (the rows are the same for the run).
  const int64_t r = a.rank;
  std::vector<int64_t> runs;
  thread_local std::vector<int64_t> tl_run_of;
  thread_local std::vector<int8_t> tl_At;
  thread_local std::vector<double> tl_t;
  std::vector<int64_t>& run_of = tl_run_of;
  std::vector<int8_t>& At = tl_At;
  std::vector<double>& t = tl_t;  // integer values (|t| < 2^31), exact in double
  if (mem.given) {
    runs = detail::noise_runs(mem, a.antithetic);
    const int64_t nruns = int64_t(runs.size()) - 1;
    run_of.resize(size_t(M));
    At.resize(size_t(nruns * r * m));
    t.resize(size_t((shared ? nruns * b : R) * r));
    // Plain locals and pointers in the loops: int8 stores may alias anything, so values
    // reached through references would be reloaded (and TLS re-resolved) every iteration.
    const int64_t nr_ = n * r, mr_ = m * r;
    const int64_t* runs_p = runs.data();
    int64_t* run_of_p = run_of.data();
    int8_t* At_p = At.data();
    double* t_p = t.data();
    const bool anti = a.antithetic;
    const int64_t fp = a.fixed_point;
    const Members mv = mem;
    const Key key = a;
    dynamic_for(nruns, [=](int64_t run) {
      thread_local std::vector<float> tl_z;
      thread_local std::vector<int8_t> tl_q, tl_Bt;
      tl_z.resize(size_t(nr_ + mr_)); tl_q.resize(size_t(nr_ + mr_)); tl_Bt.resize(size_t(nr_));
      float* z = tl_z.data();
      int8_t* q = tl_q.data();
      int8_t* Bt = r == 1 ? q : tl_Bt.data();  // [r][n]; for r = 1 the stream order already
      const MemberNoise mn0 = member_noise(mv[runs_p[run]], anti);
      fill_normal(z, nr_ + mr_, key.noise(mn0.k), 0);
      int8_t* Ar = At_p + run * mr_;
      if (r == 1) {
        quantize(z, nr_, fp, q);
        quantize(z + nr_, mr_, fp, Ar);
      } else {
        quantize_t(z, n, r, fp, Bt);
        quantize_t(z + nr_, m, r, fp, Ar);
      }
      for (int64_t i = runs_p[run]; i < runs_p[run + 1]; ++i) run_of_p[i] = run;
      if (shared) {
        for (int64_t row = 0; row < b; ++row)
          for (int64_t l = 0; l < r; ++l)
            t_p[(run * b + row) * r + l] = double(dot_i8(xp + row * n, Bt + l * n, n));
        return;
      }
      for (int64_t i = runs_p[run]; i < runs_p[run + 1]; ++i) {
        const int32_t s = (anti && (mv[i] & 1)) ? -1 : 1;
        for (int64_t row = i * b; row < (i + 1) * b; ++row)
          for (int64_t l = 0; l < r; ++l)
            t_p[row * r + l] = double(s * dot_i8(xp + row * n, Bt + l * n, n));
      }
    });
  }

  const double inv2sh = std::ldexp(1.0, -int(a.fixed_point + a.sigma_shift));
  const int64_t D = (int64_t(1) << a.fixed_point) * isqrt(n);
  int8_t* yp = p.out.ptr<int8_t>();
  // One output row: the GEMM row c plus (members) the correction of member i's run with the
  // products tr [r] (signed).
  auto finish = [&](const int32_t* c, int64_t nc, int64_t c0, int64_t i, const double* tr,
                    int8_t* y, std::vector<double>& corr) {
    if (!mem.given) return requant_row(c, nc, nullptr, 0.0, D, y);
    const int64_t run = run_of[size_t(i)];
    if (r == 1) return requant_row_r1(c, nc, tr[0], At.data() + run * m + c0, inv2sh, D, y);
    corr.resize(size_t(nc));
    lowrank_corr(corr.data(), nc, tr, r, At.data() + run * r * m + c0, m);
    requant_row(c, nc, corr.data(), inv2sh, D, y);
  };
  if (!shared) {
    gemm_tiles(isa, xpacked, R, P, [&](int64_t r0, int64_t nr, int64_t c0, int64_t nc, const int32_t* C, int64_t ldc) {
      thread_local std::vector<double> tl_corr;
      for (int64_t row = r0; row < r0 + nr; ++row)
        finish(C + (row - r0) * ldc, nc, c0, row / b, mem.given ? t.data() + row * r : nullptr,
               yp + row * m + c0, tl_corr);
    });
  } else {
    thread_local std::vector<int32_t> tl_C;  // the b rows of x W^T, int32 [b, m]
    std::vector<int32_t>& Cb = tl_C;
    Cb.resize(size_t(b * m));
    int32_t* Cp = Cb.data();
    gemm_tiles(isa, xpacked, R, P, [=](int64_t r0, int64_t nr, int64_t c0, int64_t nc, const int32_t* C, int64_t ldc) {
      for (int64_t row = r0; row < r0 + nr; ++row)
        std::copy(C + (row - r0) * ldc, C + (row - r0) * ldc + nc, Cp + row * m + c0);
    });
    const double cost = double(b * m) * (2 + double(r));
    parallel_for(M, detail::task_grain(cost, 1), [&](int64_t lo, int64_t hi) {
      std::vector<double> corr, tr(static_cast<size_t>(r));
      for (int64_t i = lo; i < hi; ++i) {
        const double s = (a.antithetic && (mem.given ? mem[i] & 1 : 0)) ? -1.0 : 1.0;
        for (int64_t row = 0; row < b; ++row) {
          if (mem.given)
            for (int64_t l = 0; l < r; ++l) tr[size_t(l)] = s * t[size_t((run_of[size_t(i)] * b + row) * r + l)];
          finish(Cp + row * m, m, 0, i, tr.data(), yp + (i * b + row) * m, corr);
        }
      }
    });
  }
  // Keep the scratch for the next call of a training loop, but not a one-off giant's.
  constexpr size_t kKeepBytes = size_t(64) << 20;
  if (Xp.capacity() > kKeepBytes) std::vector<int8_t>().swap(Xp);
  if (P.data.capacity() > kKeepBytes) PackedCols().data.swap(P.data);
  if (At.capacity() > kKeepBytes) std::vector<int8_t>().swap(At);
  if (t.capacity() * sizeof(double) > kKeepBytes) std::vector<double>().swap(t);
}

// ---- update --------------------------------------------------------------------------------

Int8UpdatePlan check_int8_update(const TensorView& W, const TensorView& pair_fitness,
                                 int64_t threshold, const Key& key, const TensorView& out) {
  check_key(key, KeyUse::int8_update);
  check_int8_tensor(W, "W");
  check_same_device(pair_fitness, "pair_fitness", W, "W");
  check_same_device(out, "out", W, "W");
  check_int8_tensor(pair_fitness, "pair_fitness");
  check_int8_tensor(out, "out");
  if (W.ndim != 2) value_error("W: expected [m, n], got shape " + W.shape_str());
  if (pair_fitness.ndim != 1)
    value_error("pair_fitness: expected a 1-D array [P] (one value per antithetic pair), got "
                "shape " + pair_fitness.shape_str());
  if (out.ndim != 2 || out.shape[0] != W.shape[0] || out.shape[1] != W.shape[1])
    shape_error("out", W.shape_str(), out);
  check_writeable(out, "out");
  if (out.data != W.data) check_no_overlap(out, "out", W, "W");  // out = W: in place
  check_no_overlap(out, "out", pair_fitness, "pair_fitness");
  if (threshold < 1) value_error("threshold: must be >= 1, got " + std::to_string(threshold));
  Int8UpdatePlan p;
  p.W = W; p.pair_fitness = pair_fitness; p.out = out; p.key = key; p.threshold = threshold;
  p.m = W.shape[0]; p.n = W.shape[1]; p.P = pair_fitness.shape[0];
  if (p.P > (int64_t(1) << 32))
    value_error("pair_fitness: at most 2^32 pairs (the noise index fits 32 bits)");
  detail::check_stream(p.m, p.n, key.rank, false);
  check_pair_fitness_values(pair_fitness);
  return p;
}

void check_pair_fitness_values(const TensorView& f) {
  if (!f.data || f.device != Device::cpu || f.dtype != DType::int8) return;
  for (int64_t k = 0; k < f.numel(); ++k) {
    const int8_t v = f.ptr<const int8_t>()[k];
    if (v < -1 || v > 1)
      value_error("pair_fitness: values must be exactly -1, 0 or 1 (e.g. "
                  "eggroll.antithetic_sign(fitness)); index " + std::to_string(k) + " is not");
  }
}

void int8_update(const Int8UpdatePlan& plan) {
  check_cpu(plan.W, "W");
  ScopedIeeeFloat ieee;
  const Key& a = plan.key;
  const int64_t m = plan.m, n = plan.n, P = plan.P, r = a.rank, threshold = plan.threshold;
  const int8_t* f = plan.pair_fitness.ptr<const int8_t>();
  std::vector<int64_t> nz;  // pairs that vote (f_k = 0 contributes nothing)
  for (int64_t k = 0; k < P; ++k)
    if (f[k]) nz.push_back(k);
  const int8_t* wp = plan.W.ptr<const int8_t>();
  int8_t* op = plan.out.ptr<int8_t>();
  if (m == 0 || n == 0) return;
  if (nz.empty()) {  // no votes: Z = 0, only the clamp
    vote_row64(nullptr, m * n, wp, threshold, op);
    return;
  }
  // Z = Af Bf^T with Af [m, K] = f_k A_k[:, l], Bf [n, K] = B_k[:, l] over columns (k, l):
  // the forward's GEMM, in chunks of <= kUpdateK columns (|Z chunk| <= 2^12 * 127^2 < 2^31).
  const int64_t per_chunk = std::max<int64_t>(1, kUpdateK / r);
  const int64_t nchunks = (int64_t(nz.size()) + per_chunk - 1) / per_chunk;
  std::vector<int64_t> Z(nchunks > 1 ? size_t(m * n) : 0, 0);
  const Int8Isa isa = active_int8_isa();
  for (int64_t ch = 0; ch < nchunks; ++ch) {
    const int64_t p0 = ch * per_chunk, np = std::min(per_chunk, int64_t(nz.size()) - p0);
    const int64_t K = np * r, Kp = round_up(K, 64);
    const int64_t Rpad = round_up(m, 16);
    std::vector<int8_t> Xp(size_t(Rpad * Kp), 0);
    PackedCols Pc;
    Pc.cols = n; Pc.nb = (n + 15) / 16; Pc.Kp = Kp;
    Pc.data.assign(size_t(Pc.nb * Kp * 16), 0);
    Pc.wsum.assign(size_t(Pc.nb * 16), 0);
    // Plain pointers and by-value sizes: int8 stores may alias anything (see the forward).
    int8_t* xd = Xp.data();
    int8_t* wd = Pc.data.data();
    int32_t* ws = Pc.wsum.data();
    const int64_t* nzp = nz.data();
    const int64_t fp = a.fixed_point;
    dynamic_for(np, [=](int64_t p) {
      thread_local std::vector<float> tl_z;
      thread_local std::vector<int8_t> tl_q;
      tl_z.resize(size_t((n + m) * r)); tl_q.resize(size_t((n + m) * r));
      float* z = tl_z.data();
      int8_t* q = tl_q.data();
      const int64_t k = nzp[p0 + p];
      fill_normal(z, (n + m) * r, a.noise(uint32_t(k)), 0);
      quantize(z, (n + m) * r, fp, q);
      const int8_t fk = f[k];
      for (int64_t l = 0; l < r; ++l) {
        const int64_t c = p * r + l;
        int8_t* xc = xd + c;
        int8_t* wc = wd + (c >> 2) * 64 + (c & 3);
        for (int64_t o = 0; o < m; ++o) xc[o * Kp] = int8_t(fk * q[n * r + o * r + l]);
        for (int64_t j = 0; j < n; ++j) wc[(j >> 4) * Kp * 16 + (j & 15) * 4] = q[j * r + l];
      }
    });
    if (needs_wsum(isa)) parallel_for(Pc.nb, 4, [=](int64_t lo, int64_t hi) {  // column sums
      for (int64_t jb = lo; jb < hi; ++jb) {
        int32_t acc[16] = {0};
        const int8_t* blk = wd + jb * Kp * 16;
        for (int64_t g = 0; g < Kp / 4; ++g)
          for (int jj = 0; jj < 16; ++jj)
            acc[jj] += blk[g * 64 + jj * 4] + blk[g * 64 + jj * 4 + 1] + blk[g * 64 + jj * 4 + 2] +
                       blk[g * 64 + jj * 4 + 3];
        for (int jj = 0; jj < 16; ++jj) ws[jb * 16 + jj] = acc[jj];
      }
    });
    const bool last = ch == nchunks - 1;
    int64_t* Zp = Z.data();
    gemm_tiles(isa, xd, m, Pc, [=](int64_t r0, int64_t nr, int64_t c0, int64_t nc, const int32_t* C, int64_t ldc) {
      for (int64_t o = r0; o < r0 + nr; ++o) {
        const int32_t* crow = C + (o - r0) * ldc;
        if (nchunks == 1) {
          vote_row(crow, nc, wp + o * n + c0, threshold, op + o * n + c0);
          continue;
        }
        int64_t* zrow = Zp + o * n + c0;
        for (int64_t j = 0; j < nc; ++j) zrow[j] += crow[j];
        if (last) vote_row64(zrow, nc, wp + o * n + c0, threshold, op + o * n + c0);
      }
    });
  }
}

}  // namespace eggroll
