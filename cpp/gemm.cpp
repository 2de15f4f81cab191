// The core's deterministic GEMM driver (packing, blocking, threading; the contract is in
// gemm_kernel.h) and the scalar micro-tile that every SIMD tile reproduces bit for bit.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <vector>
#include "eggroll/noise.h"
#include "eggroll/parallel.h"
#include "eggroll/perturb.h"
#include "cache_sizes.h"
#include "gemm_kernel.h"

namespace eggroll {
namespace detail {
namespace {

constexpr int kScalarMR = 4, kScalarNR = 4;

void tile_scalar(int64_t kc, const float* Ap, const float* Bp, float* y, int64_t ldy, int mr,
                 int nr, bool accumulate) {
  float acc[kScalarMR][kScalarNR] = {};
  for (int64_t k = 0; k < kc; ++k)
    for (int i = 0; i < kScalarMR; ++i)
      for (int j = 0; j < kScalarNR; ++j)
        acc[i][j] = std::fma(Ap[k * kScalarMR + i], Bp[k * kScalarNR + j], acc[i][j]);
  for (int i = 0; i < mr; ++i)
    for (int j = 0; j < nr; ++j) y[i * ldy + j] = accumulate ? y[i * ldy + j] + acc[i][j] : acc[i][j];
}

}  // namespace

void pack_scalar(const float* src, int64_t ld, int64_t valid, int64_t R, int64_t kc, float* dst) {
  for (int64_t i = 0; i < R; ++i) {
    if (i < valid) {
      const float* row = src + i * ld;
      for (int64_t k = 0; k < kc; ++k) dst[k * R + i] = row[k];
    } else {
      for (int64_t k = 0; k < kc; ++k) dst[k * R + i] = 0.0f;
    }
  }
}

GemmKernel gemm_kernel_scalar() { return {kScalarMR, kScalarNR, &tile_scalar, &pack_scalar}; }

std::atomic<GemmPath> g_forced_path{GemmPath::automatic};

void force_gemm_path(GemmPath path) { g_forced_path.store(path, std::memory_order_relaxed); }

}  // namespace detail

namespace {

// dst[k * R + i] = src[k * ld + i] for i < valid, 0 up to R: packing from a k-major source is
// a copy of `valid` floats per k.
void pack_kmajor(const float* src, int64_t ld, int64_t valid, int64_t R, int64_t kc, float* dst) {
  for (int64_t k = 0; k < kc; ++k) {
    std::copy(src + k * ld, src + k * ld + valid, dst + k * R);
    std::fill(dst + k * R + valid, dst + (k + 1) * R, 0.0f);
  }
}

// y [rows, m] = X Wt with X given as x [rows, n] (x_kmajor false) or as x^T [n, rows] (true),
// and W as [m, n] (w_kmajor false) or W^T [n, m] (true). Same FMA chains either way.
void gemm_impl(const float* x, bool x_kmajor, const float* W, bool w_kmajor, float* y,
               int64_t rows, int64_t m, int64_t n) {
  if (rows <= 0 || m <= 0) return;
  if (n <= 0) { std::fill(y, y + rows * m, 0.0f); return; }
  detail::GemmKernel kern;
  switch (active_isa()) {
#if defined(EGGROLL_X86_KERNELS)  // built on x86-64 only (CMakeLists.txt)
    case Isa::avx512: kern = detail::gemm_kernel_avx512(); break;
    case Isa::avx2: kern = detail::gemm_kernel_avx2(); break;
#endif
#if defined(EGGROLL_NEON_KERNELS)  // aarch64: NEON is always there, so it is the baseline
    default: kern = detail::gemm_kernel_neon(); break;
#else
    default: kern = detail::gemm_kernel_scalar(); break;
#endif
  }
  const int64_t MR = kern.MR, NR = kern.NR;
  constexpr int64_t KC = detail::kGemmKC;
  const detail::CacheSizes& cache = detail::cache_sizes();
  const int64_t fsz = int64_t(sizeof(float));
  // The small-row path (gemm_kernel.h) for at most 8 rows, where it measured faster than the
  // packed tiles on every shape tried (thread CPU time, one Zen 4 core, AVX2): x [8, 64]
  // W [64, 64] 0.9 against 1.6 us (packing W cost as much as the product); x [8, 1024]
  // W [1024, 1024] 0.23 against 0.38 ms, one row 0.34 against 0.37; x [8, 4096]
  // W [4096, 4096] 5.4 against 10 ms (W streams from memory once, and is not also written).
  const detail::GemmPath forced = detail::g_forced_path.load(std::memory_order_relaxed);
  const bool small_fits = rows <= detail::kGemmSmallRows;
  if (kern.small && forced != detail::GemmPath::packed &&
      (forced == detail::GemmPath::small || small_fits)) {
    // Rows in the lanes: x^T packed per group of 8 rows, W read in place. Tasks are (row
    // group, 8-output block) items of at least ~32K vector FMAs, so a tiny product runs on
    // the caller without waking a thread.
    constexpr int64_t G = 8, SO = 8;
    const int64_t groups = (rows + G - 1) / G, nob = (m + SO - 1) / SO;
    static thread_local std::vector<float> xT;
    if (xT.size() < static_cast<size_t>(groups * n * G)) xT.resize(static_cast<size_t>(groups * n * G));
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t valid = std::min(G, rows - g * G);
      if (x_kmajor) pack_kmajor(x + g * G, rows, valid, G, n, xT.data() + g * n * G);
      else kern.pack(x + g * G * n, n, valid, G, n, xT.data() + g * n * G);
    }
    const int64_t so = w_kmajor ? 1 : n, sk = w_kmajor ? m : 1;
    const float* xTd = xT.data();
    const int64_t grain = std::max<int64_t>(1, 32768 / (SO * n));
    if (groups == 1 && nob <= grain) {  // one task: no thread pool, no std::function
      kern.small(n, xTd, int(rows), W, so, sk, 0, m, y, m);
      return;
    }
    parallel_for(groups * nob, grain, [&](int64_t lo, int64_t hi) {
      for (int64_t it = lo; it < hi;) {  // items g * nob + b, run as one o-range per group
        const int64_t g = it / nob, b0 = it % nob, b1 = std::min(nob, b0 + (hi - it));
        kern.small(n, xTd + g * n * G, int(std::min(G, rows - g * G)), W, so, sk, b0 * SO,
                   std::min(m, b1 * SO), y + g * G * m, m);
        it += b1 - b0;
      }
    });
    return;
  }
  // Blocking: a row block's packed x slice (MR x KC) sits in L1 while packed W panels
  // (KC x NR each) stream from L2; the sizes that depend on the cache come from
  // cache_sizes() (the CPU's reported L2), never from constants fitted to one CPU.
  const int64_t nrb = (rows + MR - 1) / MR;            // row blocks
  const int64_t npanels = (m + NR - 1) / NR;           // column panels

  // Tall product with a small W (many members x rows, a narrow layer): threads own row blocks
  // instead of column panels. All of W is packed once (at most the L2 size: still faster
  // than the column split with W filling a 1 MiB L2, 28.5 vs 32.6 ms at 4096 x 1024 x 256 on
  // one Zen 4 core), then per row block one KC-slice of x is packed into an L1 buffer and
  // every panel runs through it, slice after slice: x is read once with no row-sized packed
  // copy, and the block's y rows stay in L1 across the k slices. Same tiles, same slice
  // order: same bits as below. The row blocks are claimed in chunks from a shared counter
  // rather than split in fixed halves: a thread that loses its core for a while (to another
  // process, or to a BLAS's spinning workers on a 2-core machine) then delays the call by one
  // chunk, not by its whole half (two threads at 4096 x 256 x 256 took 5.45 ms against 2.5
  // ms in a quiet loop while NumPy's OpenBLAS threads shared the cores).
  if (npanels * n * NR * fsz <= cache.l2 && nrb >= 16) {
    static thread_local std::vector<float> Bw;  // panel p: Bw[(p * n + k) * NR + j]
    if (Bw.size() < static_cast<size_t>(npanels * n * NR)) Bw.resize(static_cast<size_t>(npanels * n * NR));
    float* const Bwd = Bw.data();
    parallel_for(npanels, std::max<int64_t>(1, 65536 / (n * NR)), [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t valid = std::min(NR, m - p * NR);
        if (w_kmajor) pack_kmajor(W + p * NR, m, valid, NR, n, Bwd + p * n * NR);
        else kern.pack(W + p * NR * n, n, valid, NR, n, Bwd + p * n * NR);
      }
    });
    const int64_t nth = std::min<int64_t>(num_threads(), nrb / 2);
    const int64_t chunk = std::max<int64_t>(1, nrb / (32 * std::max<int64_t>(nth, 1)));
    std::atomic<int64_t> next{0};
    parallel_for(std::max<int64_t>(nth, 1), 1, [&](int64_t, int64_t) {
      thread_local std::vector<float> Ab;
      if (Ab.size() < static_cast<size_t>(KC * MR)) Ab.resize(static_cast<size_t>(KC * MR));
      for (;;) {
        const int64_t c0 = next.fetch_add(chunk, std::memory_order_relaxed);
        if (c0 >= nrb) return;
        for (int64_t rb = c0; rb < std::min(nrb, c0 + chunk); ++rb) {
          const int64_t vr = std::min(MR, rows - rb * MR);
          for (int64_t k0 = 0; k0 < n; k0 += KC) {
            const int64_t kc = std::min(KC, n - k0);
            if (x_kmajor) pack_kmajor(x + k0 * rows + rb * MR, rows, vr, MR, kc, Ab.data());
            else kern.pack(x + rb * MR * n + k0, n, vr, MR, kc, Ab.data());
            for (int64_t p = 0; p < npanels; ++p)
              kern.tile(kc, Ab.data(), Bwd + (p * n + k0) * NR, y + rb * MR * m + p * NR, m,
                        int(vr), int(std::min(NR, m - p * NR)), k0 > 0);
          }
        }
      }
    });
    return;
  }

  // 1. Pack x: row block rb, k-major: Ap[(rb * n + k) * MR + i] = x[rb*MR + i, k] (0-padded).
  //    The buffer is reused across calls (no zeroing, no fresh pages each call).
  static thread_local std::vector<float> Ap;
  if (Ap.size() < static_cast<size_t>(nrb * n * MR)) Ap.resize(static_cast<size_t>(nrb * n * MR));
  float* const Apd = Ap.data();
  parallel_for(nrb, 4, [&](int64_t lo, int64_t hi) {
    for (int64_t rb = lo; rb < hi; ++rb) {
      const int64_t valid = std::min(MR, rows - rb * MR);
      if (x_kmajor) pack_kmajor(x + rb * MR, rows, valid, MR, n, Apd + rb * n * MR);
      else kern.pack(x + rb * MR * n, n, valid, MR, n, Apd + rb * n * MR);
    }
  });

  // 2. Each thread owns a contiguous range of column panels; per k slice it packs the W slice
  //    of a group of panels (an eighth of L2: 128 KB on a 1 MiB L2) and runs every row block
  //    through it. Row block outer, panels inner: the row block's packed x slice (MR x KC,
  //    6-14 KB) stays in L1 while the group's W panels (L2) stream past. Groups rather than
  //    the thread's whole slice: on a 1 MiB L2 (Zen 4) a 512 KB W slice plus the streaming
  //    x slices thrashed it; 128 KB groups measured 4 % faster at 2 threads (5.35 vs 5.6 ms
  //    at 512 x 1024 x 1024) and 1 % at one. Same tiles in the same order per element.
  const int64_t group = std::max<int64_t>(1, cache.l2 / 8 / (KC * NR * fsz));
  parallel_for(npanels, 4, [&](int64_t p0, int64_t p1) {
    thread_local std::vector<float> Bp;
    if (Bp.size() < static_cast<size_t>(group * KC * NR)) Bp.resize(static_cast<size_t>(group * KC * NR));
    for (int64_t k0 = 0; k0 < n; k0 += KC) {
      const int64_t kc = std::min(KC, n - k0);
      for (int64_t q0 = p0; q0 < p1; q0 += group) {
        const int64_t q1 = std::min(p1, q0 + group);
        for (int64_t p = q0; p < q1; ++p) {
          const int64_t valid = std::min(NR, m - p * NR);
          float* dst = Bp.data() + (p - q0) * KC * NR;
          if (w_kmajor) pack_kmajor(W + k0 * m + p * NR, m, valid, NR, kc, dst);
          else kern.pack(W + p * NR * n + k0, n, valid, NR, kc, dst);
        }
        for (int64_t rb = 0; rb < nrb; ++rb)
          for (int64_t p = q0; p < q1; ++p)
            kern.tile(kc, Apd + (rb * n + k0) * MR, Bp.data() + (p - q0) * KC * NR,
                      y + rb * MR * m + p * NR, m, int(std::min(MR, rows - rb * MR)),
                      int(std::min(NR, m - p * NR)), k0 > 0);
      }
    }
  });
}

}  // namespace

void gemm_nt(const float* x, const float* W, float* y, int64_t rows, int64_t m, int64_t n) {
  gemm_impl(x, false, W, false, y, rows, m, n);
}

void gemm_tn(const float* A, const float* B, float* y, int64_t rows, int64_t m, int64_t K) {
  gemm_impl(A, true, B, true, y, rows, m, K);
}

void gemm_nk(const float* x, const float* Wt, float* y, int64_t rows, int64_t m, int64_t n) {
  gemm_impl(x, false, Wt, true, y, rows, m, n);
}

}  // namespace eggroll
