// C++ tests of the core, built with -DEGGROLL_BUILD_TESTS=ON and run by ctest; CI runs them
// under AddressSanitizer + UBSan (-DEGGROLL_SANITIZE=ON). Each check compares against an
// independent construction (the explicit factors, a naive loop), never against itself.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <atomic>
#include <functional>
#include <stdexcept>
#include <thread>
#include <vector>
#include "eggroll/eggroll.h"
#include "cache_sizes.h"  // private: the GEMM test varies the cache blocking
#include "gemm_kernel.h"  // private: ... and forces each of its paths
#include "check.h"

using namespace eggroll;

static std::vector<float> normals(int64_t count, const NoiseKey& k, uint64_t off) {
  std::vector<float> v(static_cast<size_t>(count));
  normal(make_view(v.data(), DType::float32, {count}), k, off);
  return v;
}

static void test_philox() {
  const uint32_t c0[4] = {0, 0, 0, 0}, k0[2] = {0, 0};
  const uint32_t c1[4] = {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, k1[2] = {0xffffffffu, 0xffffffffu};
  const uint32_t c2[4] = {0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, k2[2] = {0xa4093822u, 0x299f31d0u};
  const uint32_t e0[4] = {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u};
  const uint32_t e1[4] = {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu};
  const uint32_t e2[4] = {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u};
  uint32_t o[4];
  philox4x32(c0, k0, o); CHECK(std::memcmp(o, e0, 16) == 0, "philox KAT 0");
  philox4x32(c1, k1, o); CHECK(std::memcmp(o, e1, 16) == 0, "philox KAT 1");
  philox4x32(c2, k2, o); CHECK(std::memcmp(o, e2, 16) == 0, "philox KAT 2");
}

static void test_noise_isa_threads() {
  const NoiseKey key{0x123456789abcdefULL, 7, 3, 11};
  set_isa(IsaLevel::scalar); set_num_threads(1);
  const auto ref = normals(100003, key, 13);
#if defined(__aarch64__)  // the baseline level runs the NEON kernels there, and says so
  CHECK(std::strcmp(isa_name(IsaLevel::scalar), "neon") == 0, "aarch64 baseline named %s", isa_name(IsaLevel::scalar));
#else
  CHECK(std::strcmp(isa_name(IsaLevel::scalar), "scalar") == 0, "baseline named %s", isa_name(IsaLevel::scalar));
#endif
  for (IsaLevel isa : {IsaLevel::scalar, IsaLevel::avx2, IsaLevel::avx512}) {
    if (!isa_supported(isa)) continue;
    set_isa(isa);
    for (int th : {1, 2, 3}) {
      set_num_threads(th);
      const auto v = normals(100003, key, 13);
      CHECK(std::memcmp(v.data(), ref.data(), v.size() * 4) == 0, "noise differs on %s x%d", isa_name(isa), th);
      for (int64_t off : {0, 1, 2, 3, 5, 61}) {  // any window equals the slice of a longer read
        const auto w = normals(37, key, uint64_t(13 + off));
        CHECK(std::memcmp(w.data(), ref.data() + off, 37 * 4) == 0, "window %lld on %s", (long long)off, isa_name(isa));
      }
    }
  }
  set_isa(best_isa()); set_num_threads(2);
  double mean = 0, var = 0;
  for (float z : ref) mean += z;
  mean /= double(ref.size());
  for (float z : ref) var += (z - mean) * (z - mean);
  var /= double(ref.size());
  CHECK(std::fabs(mean) < 0.02 && std::fabs(var - 1) < 0.03, "moments mean=%g var=%g", mean, var);
}

// The larger error, and NaN if either is NaN (std::fmax would drop a NaN error). A plain
// comparison also keeps GCC 12 for aarch64 from crashing while vectorising an fmax reduction.
static double worse(double maxerr, double err) {
  return (maxerr != maxerr || err <= maxerr) ? maxerr : err;
}

// perturbed_matmul == x (W + A_i B_i^T)^T built from lowrank_factors, and the update equals
// the explicit sum of f_i E_i / (N sigma).
static void test_ops() {
  const int64_t M = 6, b = 3, n = 17, m = 13, r = 3;
  Key a; a.seed = 99; a.param_id = 4; a.epoch = 5; a.sigma = 0.3; a.rank = r;
  std::vector<float> x(M * b * n), W(m * n), y(M * b * m), A(M * m * r), B(M * n * r);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(std::sin(0.37 * double(i)));
  for (size_t i = 0; i < W.size(); ++i) W[i] = float(std::cos(0.11 * double(i)));
  std::vector<int64_t> mem = {0, 1, 2, 3, 9, 4};
  auto memv = Members::indices(make_view(mem.data(), DType::int64, {M}));
  lowrank_factors(memv, m, n, a, make_view(A.data(), DType::float32, {M, m, r}), make_view(B.data(), DType::float32, {M, n, r}));
  perturbed_matmul(make_view(x.data(), DType::float32, {M, b, n}), make_view(W.data(), DType::float32, {m, n}), memv, a,
                   make_view(y.data(), DType::float32, {M, b, m}));
  double maxerr = 0;
  for (int64_t i = 0; i < M; ++i)
    for (int64_t row = 0; row < b; ++row)
      for (int64_t o = 0; o < m; ++o) {
        double acc = 0;
        for (int64_t j = 0; j < n; ++j) {
          double e = 0;
          for (int64_t l = 0; l < r; ++l) e += double(A[(i * m + o) * r + l]) * B[(i * n + j) * r + l];
          acc += double(x[(i * b + row) * n + j]) * (W[o * n + j] + e);
        }
        maxerr = worse(maxerr, std::fabs(acc - y[(i * b + row) * m + o]));
      }
  CHECK(maxerr < 1e-4, "perturbed_matmul vs explicit: %g", maxerr);

  std::vector<float> f = {0.5f, -1.0f, 2.0f, 0.25f, -0.75f, 1.5f}, g(m * n);
  es_gradient(make_view(f.data(), DType::float32, {M}), memv, a, false, M, false, make_view(g.data(), DType::float32, {m, n}));
  maxerr = 0;
  for (int64_t o = 0; o < m; ++o)
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0;
      for (int64_t i = 0; i < M; ++i)
        for (int64_t l = 0; l < r; ++l) acc += f[i] * double(A[(i * m + o) * r + l]) * B[(i * n + j) * r + l];
      acc /= double(M) * a.sigma;
      maxerr = worse(maxerr, std::fabs(acc - g[o * n + j]));
    }
  CHECK(maxerr < 1e-5, "es_gradient vs explicit: %g", maxerr);

  // One input shared by every member (a stride-0 leading axis): the materialised input's bits,
  // low rank and full rank.
  std::vector<float> xs(b * n), xfull(M * b * n), y1(M * b * m), y2(M * b * m);
  for (size_t i = 0; i < xs.size(); ++i) xs[i] = float(std::sin(0.7 * double(i)));
  for (int64_t i = 0; i < M; ++i) std::copy(xs.begin(), xs.end(), xfull.begin() + i * b * n);
  TensorView xsv = make_view(xs.data(), DType::float32, {M, b, n});
  xsv.strides[0] = 0;
  for (bool full : {false, true}) {
    perturbed_matmul(check_perturbed_matmul(xsv, make_view(W.data(), DType::float32, {m, n}), memv, a,
                                            make_view(y1.data(), DType::float32, {M, b, m}), full));
    perturbed_matmul(check_perturbed_matmul(make_view(xfull.data(), DType::float32, {M, b, n}),
                                            make_view(W.data(), DType::float32, {m, n}), memv, a,
                                            make_view(y2.data(), DType::float32, {M, b, m}), full));
    CHECK(std::memcmp(y1.data(), y2.data(), y1.size() * 4) == 0, "shared input differs (full=%d)", int(full));
  }
}

// The GEMM contract (cpp/gemm_kernel.h, docs/ops.md): y[r, o] = ((s_0 + s_1) + ...) with s_q
// one std::fma chain from +0 over k in [256 q, 256 q + 256). Every element must match this
// naive loop bit for bit on every SIMD path, thread count and cache blocking (the detected
// sizes, a tiny L2 that makes every W group one panel and keeps the column-split path, a huge
// one that sends every tall product down the row-split path), for gemm_nt and for gemm_tn on
// the transposed (k-major) operands and gemm_nk on W^T. Both paths, packed tiles and the
// small-row kernel (rows in the vector lanes, W read in place), forced on every shape, must
// give those bits: the small path's row groups of 8, its blocks of 8, 4 and 1-3 outputs and
// its transposed store (8 rows, 8 outputs) all have a shape here.
// Odd sizes exercise the edge tiles and short last slices; inputs span 2^-3 .. 2^3 so that a
// different rounding sequence shows in the bits.
static std::vector<float> gemm_naive(const std::vector<float>& x, const std::vector<float>& W,
                                     int64_t R, int64_t m, int64_t n) {
  std::vector<float> y(static_cast<size_t>(R * m));
  for (int64_t r = 0; r < R; ++r)
    for (int64_t o = 0; o < m; ++o) {
      float total = 0.0f;
      for (int64_t k0 = 0; k0 < n; k0 += 256) {
        float s = 0.0f;
        for (int64_t k = k0; k < std::min(n, k0 + 256); ++k) s = std::fma(x[r * n + k], W[o * n + k], s);
        total = k0 == 0 ? s : total + s;
      }
      y[r * m + o] = total;
    }
  return y;
}

static std::vector<float> transpose(const std::vector<float>& a, int64_t rows, int64_t cols) {
  std::vector<float> t(a.size());
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) t[j * rows + i] = a[i * cols + j];
  return t;
}

static void test_gemm() {
  const int64_t shapes[][3] = {{1, 1, 1},    {6, 16, 256},  {7, 17, 300},  {13, 33, 513},
                               {2, 70, 1000}, {101, 40, 300}, {97, 5, 33},  {230, 37, 300},
                               {8, 64, 64},   {8, 20, 9},     {8, 21, 520}, {8, 8, 3},
                               {8, 24, 257},  {5, 11, 257},   {16, 36, 40}, {9, 29, 70}};
  const detail::GemmPath paths[] = {detail::GemmPath::automatic, detail::GemmPath::packed,
                                    detail::GemmPath::small};
  const detail::CacheSizes tiny{8 << 10, 64 << 10, 1 << 20}, huge{1 << 20, int64_t(64) << 20, int64_t(1) << 30};
  const detail::CacheSizes* caches[] = {nullptr, &tiny, &huge};
  for (const auto& sh : shapes) {
    const int64_t R = sh[0], m = sh[1], n = sh[2];
    std::vector<float> x(static_cast<size_t>(R * n)), W(static_cast<size_t>(m * n));
    for (size_t i = 0; i < x.size(); ++i) x[i] = std::ldexp(float(std::sin(1.7 * double(i) + 0.3)), int(i % 7) - 3);
    for (size_t i = 0; i < W.size(); ++i) W[i] = std::ldexp(float(std::cos(0.9 * double(i))), int(i % 5) - 2);
    const auto want = gemm_naive(x, W, R, m, n);
    const auto xt = transpose(x, R, n), Wt = transpose(W, m, n);
    for (IsaLevel isa : {IsaLevel::scalar, IsaLevel::avx2, IsaLevel::avx512}) {
      if (!isa_supported(isa)) continue;
      set_isa(isa);
      for (detail::GemmPath path : paths) {
        detail::force_gemm_path(path);
        for (const detail::CacheSizes* c : caches) {
          detail::override_cache_sizes(c);
          for (int th : {1, 2, 3}) {
            set_num_threads(th);
            std::vector<float> y(want.size(), -1.0f), yt(want.size(), -1.0f), yk(want.size(), -1.0f);
            gemm_nt(x.data(), W.data(), y.data(), R, m, n);
            gemm_tn(xt.data(), Wt.data(), yt.data(), R, m, n);
            gemm_nk(x.data(), Wt.data(), yk.data(), R, m, n);
            const std::vector<float>* got[] = {&y, &yt, &yk};
            const char* names[] = {"gemm_nt", "gemm_tn", "gemm_nk"};
            for (int v = 0; v < 3; ++v)
              CHECK(std::memcmp(got[v]->data(), want.data(), want.size() * 4) == 0,
                    "%s %lldx%lldx%lld on %s path %d x%d cache %d", names[v], (long long)R,
                    (long long)m, (long long)n, isa_name(isa), int(path), th, int(c ? c->l2 >> 10 : 0));
          }
        }
      }
    }
  }
  detail::force_gemm_path(detail::GemmPath::automatic);
  detail::override_cache_sizes(nullptr);
  const auto& cs = detail::cache_sizes();
  CHECK(cs.l1d >= (8 << 10) && cs.l2 >= (64 << 10) && cs.l3 >= (256 << 10), "cache sizes %lld %lld %lld",
        (long long)cs.l1d, (long long)cs.l2, (long long)cs.l3);
  set_isa(best_isa()); set_num_threads(2);
}

// Golden bits: FNV-1a hashes of results on inputs that every platform represents exactly.
// The noise and x W^T hashes are those of python/eggroll/reference.py (normal, matmul_nt);
// the perturbed forward's is the x86-64 build's (the same bits on every x86 path and thread
// count, tested in tests/test_perturb.py). Every other target (tools/aarch64_check.sh) must
// reproduce all three.
static uint64_t fnv1a(const std::vector<float>& v) {
  uint64_t h = 1469598103934665603ULL;
  for (float f : v) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    for (int byte = 0; byte < 4; ++byte) { h ^= (u >> (8 * byte)) & 0xFFu; h *= 1099511628211ULL; }
  }
  return h;
}

static void test_golden() {
  set_num_threads(2);
  const auto z = normals(100003, NoiseKey{0x123456789abcdefULL, 7, 3, 11}, 13);
  CHECK(fnv1a(z) == 0xd38fffaa5fce07e9ULL, "noise hash %016llx", (unsigned long long)fnv1a(z));
  const int64_t M = 8, n = 300, m = 37;
  std::vector<float> x(M * n), W(m * n), y(M * m), y0(M * m);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(int64_t((i * 2654435761ULL) % 2001) - 1000) / 256.0f;
  for (size_t i = 0; i < W.size(); ++i) W[i] = float(int64_t((i * 40503ULL) % 1999) - 999) / 1024.0f;
  std::vector<int64_t> mem = {0, 1, 2, 3, 4, 5, 6, 7};
  Key a; a.seed = 2024; a.param_id = 1; a.epoch = 3; a.sigma = 0.125; a.rank = 2;
  const auto xv = make_view(x.data(), DType::float32, {M, n}), Wv = make_view(W.data(), DType::float32, {m, n});
  perturbed_matmul(xv, Wv, Members::indices(make_view(mem.data(), DType::int64, {M})), a, make_view(y.data(), DType::float32, {M, m}));
  perturbed_matmul(xv, Wv, Members::none(), a, make_view(y0.data(), DType::float32, {M, m}));
  CHECK(fnv1a(y) == 0xf273d9c3f62cc5ffULL, "perturbed_matmul hash %016llx", (unsigned long long)fnv1a(y));
  CHECK(fnv1a(y0) == 0x3ac2c36d15223f92ULL, "x W^T hash %016llx", (unsigned long long)fnv1a(y0));
}

// The int8 forward equals a naive int64 evaluation built from the quantised stream (normals
// -> trunc(z * 16) clamped), on every int8 GEMM path this CPU has and at 1 and 2 threads;
// shapes with odd sizes and padding on both GEMM dimensions.
static int64_t floordiv(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

static void test_int8() {
  const int64_t M = 5, b = 2, n = 70, m = 19, r = 2, sigma_shift = 3;
  Key a; a.seed = 7; a.param_id = 2; a.epoch = 3; a.rank = r; a.sigma_shift = sigma_shift;
  std::vector<int8_t> x(M * b * n), W(m * n), y(M * b * m), want(M * b * m);
  for (size_t i = 0; i < x.size(); ++i) x[i] = int8_t(int(i * 37 % 33) - 16);
  for (size_t i = 0; i < W.size(); ++i) W[i] = int8_t(int(i * 101 % 255) - 127);
  std::vector<int64_t> mem = {0, 1, 4, 9, 2};
  for (int64_t i = 0; i < M; ++i) {
    const auto z = normals((n + m) * r, NoiseKey{a.seed, a.param_id, 3, uint32_t(mem[i] / 2)}, 0);
    std::vector<int64_t> q(z.size());
    for (size_t j = 0; j < z.size(); ++j) q[j] = std::max<int64_t>(-127, std::min<int64_t>(127, int64_t(std::trunc(z[j] * 16.0f))));
    const int64_t s = (mem[i] & 1) ? -1 : 1;
    for (int64_t row = 0; row < b; ++row)
      for (int64_t o = 0; o < m; ++o) {
        const int8_t* xr = &x[(i * b + row) * n];
        int64_t acc = 0, corr = 0;
        for (int64_t j = 0; j < n; ++j) acc += int64_t(xr[j]) * W[o * n + j];
        for (int64_t l = 0; l < r; ++l) {
          int64_t t = 0;
          for (int64_t j = 0; j < n; ++j) t += int64_t(xr[j]) * q[j * r + l];
          corr += t * s * q[n * r + o * r + l];
        }
        acc += corr >> (4 + sigma_shift);
        want[(i * b + row) * m + o] = int8_t(std::max<int64_t>(-127, std::min<int64_t>(127, floordiv(acc, 16 * 8))));
      }
  }
  const IsaLevel saved = active_isa_level();
  const int saved_threads = num_threads();
  for (IsaLevel isa : {IsaLevel::scalar, IsaLevel::avx2, IsaLevel::avx_vnni, IsaLevel::avx512_vnni, IsaLevel::amx}) {
    if (!isa_supported(isa)) continue;
    set_isa(isa);
    for (int th : {1, 2}) {
      set_num_threads(th);
      std::fill(y.begin(), y.end(), int8_t(0));
      perturbed_matmul_int8(make_view(x.data(), DType::int8, {M, b, n}), make_view(W.data(), DType::int8, {m, n}),
                            Members::indices(make_view(mem.data(), DType::int64, {M})), a,
                            make_view(y.data(), DType::int8, {M, b, m}));
      CHECK(y == want, "perturbed_matmul_int8 vs naive int64 on %s x%d", isa_name(isa), th);
    }
  }
  set_isa(saved);
  set_num_threads(saved_threads);
  Key bad = a; bad.fixed_point = 8;
  CHECK(throws<ValueError>([&] { check_key(bad, KeyUse::int8_forward); }), "fixed_point 8");
}

static void test_errors() {
  std::vector<float> x(12), y(12), W(16);
  std::vector<int64_t> mem = {0, 1, 2};
  Key a;
  auto xv = make_view(x.data(), DType::float32, {3, 4});
  auto yv = make_view(y.data(), DType::float32, {3, 4});
  auto Wv = make_view(W.data(), DType::float32, {4, 4});
  auto mv = Members::indices(make_view(mem.data(), DType::int64, {3}));
  Key bad = a; bad.sigma = std::nan("");
  CHECK(throws<ValueError>([&] { perturbed_matmul(xv, Wv, mv, bad, yv); }), "NaN sigma");
  bad = a; bad.rank = 0;
  CHECK(throws<ValueError>([&] { perturbed_matmul(xv, Wv, mv, bad, yv); }), "rank 0");
  CHECK(throws<ValueError>([&] { perturbed_matmul(xv, Wv, mv, a, xv); }), "out aliases x");
  auto xi = make_view(x.data(), DType::int32, {3, 4});
  CHECK(throws<TypeError>([&] { perturbed_matmul(xi, Wv, mv, a, yv); }), "int x");
  mem[1] = -1;
  CHECK(throws<ValueError>([&] { perturbed_matmul(xv, Wv, mv, a, yv); }), "negative member");
  mem[1] = 1;
  std::vector<float> f = {1, 2, 3};
  auto fv = make_view(f.data(), DType::float32, {3});
  CHECK(throws<ValueError>([&] { es_gradient(fv, mv, a, false, 3, false, Wv); }), "odd N antithetic");
  bad = a; bad.sigma = 1e-46;  // 0 as a float32
  CHECK(throws<ValueError>([&] { perturbed_matmul(xv, Wv, mv, bad, yv); }), "sigma below float32");
  bad = a; bad.rank = kMaxRank + 1;
  CHECK(throws<ValueError>([&] { perturbed_matmul(xv, Wv, mv, bad, yv); }), "rank above the limit");
  // A range of members is checked in O(1): a huge one with the wrong length never allocates.
  CHECK(throws<ValueError>([&] { perturbed_matmul(xv, Wv, Members::range(0, 1, int64_t(1) << 40), a, yv); }),
        "huge range of the wrong length");
  CHECK(throws<ValueError>([&] { perturbed_matmul(xv, Wv, Members::range(int64_t(1) << 40, 1, 3), a, yv); }),
        "range beyond the noise index");
  CHECK(throws<ValueError>([&] { perturbed_matmul(xv, Wv, Members::range(1, -1, 3), a, yv); }),
        "range reaching -1");
}

// Executors (parallel.h): whoever runs parallel_for's ranges - a host's schedule-style pool
// that runs tasks late, inline or on other threads, or a fork-join team of any size - every
// range runs exactly once, exceptions reach the caller, and results are the pool's bits.
namespace exec_test {
std::vector<std::pair<void (*)(void*), void*>> deferred;      // tasks a "busy" host runs late
void schedule_deferred(void*, void (*fn)(void*), void* arg) { deferred.emplace_back(fn, arg); }
void schedule_inline(void*, void (*fn)(void*), void* arg) { fn(arg); }
std::vector<std::thread> spawned;
void schedule_thread(void*, void (*fn)(void*), void* arg) { spawned.emplace_back(fn, arg); }
unsigned team_cap = 0;                                        // 0: the requested size
std::atomic<int> team_calls{0};
void fork_join(void (*fn)(void*), void* arg, unsigned threads, unsigned) {
  ++team_calls;
  const unsigned n = team_cap ? std::min(team_cap, threads) : threads;
  std::vector<std::thread> team;
  for (unsigned i = 1; i < n; ++i) team.emplace_back(fn, arg);
  fn(arg);
  for (auto& t : team) t.join();
}
void run_late() {
  for (auto& d : deferred) d.first(d.second);
  deferred.clear();
  for (auto& t : spawned) t.join();
  spawned.clear();
}
}  // namespace exec_test

static void test_executors() {
  using namespace exec_test;
  const int64_t R = 37, m = 300, n = 520;  // two GEMM paths' worth of tiles, ragged edges
  std::vector<float> x(size_t(R * n)), W(size_t(m * n));
  normal(make_view(x.data(), DType::float32, {R * n}), NoiseKey{1, 2, 3, 4}, 0);
  normal(make_view(W.data(), DType::float32, {m * n}), NoiseKey{5, 6, 7, 8}, 0);
  std::vector<int64_t> mem(static_cast<size_t>(R));
  for (int64_t i = 0; i < R; ++i) mem[size_t(i)] = (i * 7) % 50;
  Key a; a.seed = 99; a.param_id = 3; a.epoch = 2; a.sigma = 0.05; a.rank = 2;
  auto forward = [&] {
    std::vector<float> y(size_t(R * m));
    perturbed_matmul(make_view(x.data(), DType::float32, {R, n}), make_view(W.data(), DType::float32, {m, n}),
                     Members::indices(make_view(mem.data(), DType::int64, {R})), a,
                     make_view(y.data(), DType::float32, {R, m}));
    return y;
  };
  set_num_threads(3);
  const auto ref = forward();
  Executor late, inl, thr, team, small;
  late.threads = 3; late.schedule = &schedule_deferred;
  inl.threads = 4; inl.schedule = &schedule_inline;
  thr.threads = 3; thr.schedule = &schedule_thread;
  team.threads = 3; team.fork_join = &fork_join;
  small.threads = 4; small.fork_join = &fork_join;
  const std::pair<const char*, Executor*> cases[] = {{"late", &late}, {"inline", &inl}, {"threads", &thr},
                                                     {"team", &team}, {"team of 1", &small}};
  for (const auto& c : cases) {
    team_cap = c.second == &small ? 1 : 0;
    std::vector<float> y;
    {
      ScopedExecutor scope(c.second);
      CHECK(num_threads() == c.second->threads, "%s: num_threads %d", c.first, num_threads());
      y = forward();
      std::vector<std::atomic<int>> hits(1000);
      parallel_for(1000, 1, [&](int64_t b, int64_t e) { for (int64_t i = b; i < e; ++i) ++hits[size_t(i)]; });
      bool once = true;
      for (auto& h : hits) once = once && h.load() == 1;
      CHECK(once, "%s: a range ran twice or never", c.first);
      CHECK(throws<ValueError>([] {
              parallel_for(8, 1, [](int64_t b, int64_t) { if (b >= 4) value_error("boom"); });
            }), "%s: exception lost", c.first);
    }
    run_late();  // a late helper finds nothing left to claim (its job is still alive)
    CHECK(std::memcmp(y.data(), ref.data(), y.size() * 4) == 0, "%s: bits differ from the pool's", c.first);
  }
  CHECK(team_calls.load() > 0, "fork_join never used");
  CHECK(num_threads() == 3, "scope did not restore num_threads");
  ScopedExecutor none(nullptr);  // nullptr: the core's pool again
  CHECK(std::memcmp(forward().data(), ref.data(), ref.size() * 4) == 0, "pool after scopes");
  set_num_threads(2);
}

int main() {
  test_philox();
  test_noise_isa_threads();
  test_ops();
  test_gemm();
  test_golden();
  test_int8();
  test_errors();
  test_executors();
  std::printf("%d failed\n", failures);
  return failures ? 1 : 0;
}
