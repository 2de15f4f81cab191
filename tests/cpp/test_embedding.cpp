// C++ tests of perturbed_embedding (built with -DEGGROLL_BUILD_TESTS=ON, run by ctest, under
// ASan + UBSan in CI). The expected rows are built independently: lowrank_factors' explicit
// A and B (E_i = A_i B_i^T) applied to W row by row in the documented rounding order.
#include <cstdio>
#include <cstring>
#include <functional>
#include <vector>
#include "eggroll/eggroll.h"
#include "check.h"

using namespace eggroll;

static TensorView view2(void* p, DType dt, int64_t a, int64_t b, int64_t s0) {
  TensorView t = make_view(p, dt, {a, b});
  t.strides[0] = s0;
  return t;
}

// out[i, t] = W[id] + sum_l (A_i[id, l]) B_i[:, l], corr accumulated in l order.
static std::vector<float> expected(const std::vector<int64_t>& ids, int64_t T, const std::vector<float>& W,
                                   int64_t V, int64_t d, const std::vector<int64_t>& mem, const Key& a,
                                   bool shared) {
  const int64_t M = int64_t(mem.size()), r = a.rank;
  std::vector<float> A(size_t(M * V * r)), B(size_t(M * d * r));
  lowrank_factors(Members::indices(make_view(const_cast<int64_t*>(mem.data()), DType::int64, {M})), V, d, a,
                  make_view(A.data(), DType::float32, {M, V, r}), make_view(B.data(), DType::float32, {M, d, r}));
  std::vector<float> out(static_cast<size_t>(M * T * d)), corr(static_cast<size_t>(d));
  for (int64_t i = 0; i < M; ++i)
    for (int64_t t = 0; t < T; ++t) {
      const int64_t id = ids[size_t((shared ? 0 : i) * T + t)];
      for (int64_t j = 0; j < d; ++j) corr[size_t(j)] = A[size_t((i * V + id) * r)] * B[size_t((i * d + j) * r)];
      for (int64_t l = 1; l < r; ++l)
        for (int64_t j = 0; j < d; ++j)
          corr[size_t(j)] += A[size_t((i * V + id) * r + l)] * B[size_t((i * d + j) * r + l)];
      for (int64_t j = 0; j < d; ++j) out[size_t((i * T + t) * d + j)] = W[size_t(id * d + j)] + corr[size_t(j)];
    }
  return out;
}

static void test_rows_equal_explicit_factors() {
  const int64_t V = 37, d = 19, T = 150;  // T > one token block of 64
  std::vector<float> W(size_t(V * d));
  for (size_t j = 0; j < W.size(); ++j) W[j] = float(int(j % 23) - 11) / 8.0f;
  std::vector<int64_t> mem = {0, 1, 2, 3, 6, 5, 40};
  const int64_t M = int64_t(mem.size());
  std::vector<int64_t> ids(size_t(M * T));
  for (size_t j = 0; j < ids.size(); ++j) ids[j] = int64_t((j * 7 + 3) % size_t(V));
  std::vector<int32_t> ids32(ids.begin(), ids.end());
  const int threads0 = num_threads();
  for (int64_t r : {1, 3}) {
    for (bool anti : {true, false}) {
      Key a;
      a.seed = 0x9E3779B97F4A7C15ULL; a.param_id = 12345u; a.epoch = 9; a.noise_reuse = 2;
      a.antithetic = anti; a.sigma = 0.05; a.rank = r;
      const auto want = expected(ids, T, W, V, d, mem, a, false);
      const auto want_shared = expected(ids, T, W, V, d, mem, a, true);
      for (int th : {1, 2, 3}) {
        set_num_threads(th);
        std::vector<float> out(size_t(M * T * d)), out32(out.size()), out_sh(out.size());
        auto mv = Members::indices(make_view(mem.data(), DType::int64, {M}));
        auto ov = [&](std::vector<float>& o) { return make_view(o.data(), DType::float32, {M, T, d}); };
        auto Wv = make_view(W.data(), DType::float32, {V, d});
        perturbed_embedding(view2(ids.data(), DType::int64, M, T, T), Wv, mv, a, ov(out));
        perturbed_embedding(view2(ids32.data(), DType::int32, M, T, T), Wv, mv, a, ov(out32));
        perturbed_embedding(view2(ids.data(), DType::int64, M, T, 0), Wv, mv, a, ov(out_sh));
        CHECK(std::memcmp(out.data(), want.data(), out.size() * 4) == 0, "r=%lld anti=%d threads=%d", (long long)r, int(anti), th);
        CHECK(std::memcmp(out32.data(), want.data(), out.size() * 4) == 0, "int32 ids r=%lld", (long long)r);
        CHECK(std::memcmp(out_sh.data(), want_shared.data(), out.size() * 4) == 0, "shared ids r=%lld", (long long)r);
      }
    }
  }
  set_num_threads(threads0);
}

static void test_no_members_is_the_plain_lookup() {
  const int64_t V = 5, d = 3, M = 2, T = 4;
  std::vector<float> W(size_t(V * d));
  for (size_t j = 0; j < W.size(); ++j) W[j] = float(j);
  std::vector<int64_t> ids = {4, 0, 2, 2, 1, 3, 0, 4};
  std::vector<float> out(size_t(M * T * d), -1.0f);
  perturbed_embedding(view2(ids.data(), DType::int64, M, T, T), make_view(W.data(), DType::float32, {V, d}),
                      Members::none(), Key{}, make_view(out.data(), DType::float32, {M, T, d}));
  bool ok = true;
  for (int64_t k = 0; k < M * T; ++k)
    for (int64_t j = 0; j < d; ++j) ok &= out[size_t(k * d + j)] == W[size_t(ids[size_t(k)] * d + j)];
  CHECK(ok, "members=null is W[ids]");
}

static void test_errors() {
  const int64_t V = 4, d = 2, M = 2, T = 3;
  std::vector<float> W(size_t(V * d), 1.0f), out(size_t(M * T * d), 7.0f), small(4);
  std::vector<int64_t> mem = {0, 1}, ids = {0, 1, 2, 3, 0, 1}, bad = {0, 1, 2, 4, 0, 1}, neg = {0, -1, 0, 0, 0, 0};
  std::vector<float> fids(6);
  auto Wv = make_view(W.data(), DType::float32, {V, d});
  auto mv = Members::indices(make_view(mem.data(), DType::int64, {M}));
  auto ov = make_view(out.data(), DType::float32, {M, T, d});
  Key a;
  CHECK(throws<ValueError>([&] { perturbed_embedding(view2(bad.data(), DType::int64, M, T, T), Wv, mv, a, ov); }), "id >= V");
  CHECK(throws<ValueError>([&] { perturbed_embedding(view2(neg.data(), DType::int64, M, T, T), Wv, mv, a, ov); }), "id < 0");
  bool untouched = true;
  for (float v : out) untouched &= v == 7.0f;
  CHECK(untouched, "a rejected call writes nothing");
  CHECK(throws<TypeError>([&] { perturbed_embedding(view2(fids.data(), DType::float32, M, T, T), Wv, mv, a, ov); }), "float ids");
  CHECK(throws<ValueError>([&] { perturbed_embedding(view2(ids.data(), DType::int64, M, T, 1), Wv, mv, a, ov); }), "stride");
  CHECK(throws<ValueError>([&] { perturbed_embedding(view2(ids.data(), DType::int64, M, T, T), Wv, mv, a,
                                                     make_view(small.data(), DType::float32, {M, 1, 2})); }), "out shape");
  CHECK(throws<ValueError>([&] { perturbed_embedding(view2(ids.data(), DType::int64, M, T, T), Wv, mv, a,
                                                     make_view(W.data(), DType::float32, {1, 4, 2})); }), "out overlaps W");
  std::vector<int64_t> mem3 = {0, 1, 2};
  CHECK(throws<ValueError>([&] { perturbed_embedding(view2(ids.data(), DType::int64, M, T, T), Wv,
                                                     Members::indices(make_view(mem3.data(), DType::int64, {3})), a, ov); }), "members length");
  Key bad_rank; bad_rank.rank = 0;
  CHECK(throws<ValueError>([&] { perturbed_embedding(view2(ids.data(), DType::int64, M, T, T), Wv, mv, bad_rank, ov); }), "rank");
  Members range = Members::range(0, 1, M);
  CHECK(throws<ValueError>([&] { check_perturbed_embedding(view2(ids.data(), DType::int64, M, T, T), Wv, range, a,
                                                           make_view(ids.data(), DType::float32, {M, T, d})); }), "out overlaps ids");
}

int main() {
  test_rows_equal_explicit_factors();
  test_no_members_is_the_plain_lookup();
  test_errors();
  if (failures) { std::printf("%d check(s) failed\n", failures); return 1; }
  std::printf("test_embedding: all checks passed\n");
  return 0;
}
