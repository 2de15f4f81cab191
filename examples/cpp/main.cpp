// One ES step of EGGROLL from C++ through the installed package (find_package(eggroll)):
// a window of the noise stream, a perturbed forward pass of a small population, fitness
// shaping and the gradient estimate. Prints one JSON object on stdout (inputs and outputs,
// so tests/test_cpp_example.py can redo every call in Python and compare the bits); an
// eggroll::Error is printed on stderr with exit status 1.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "eggroll/eggroll.h"

namespace {

// %.9g: nine significant digits make any float32 survive a round trip through text.
void print_floats(const char* name, const std::vector<float>& v) {
  std::printf("  \"%s\": [", name);
  for (size_t i = 0; i < v.size(); ++i) std::printf("%s%.9g", i ? ", " : "", double(v[i]));
  std::printf("],\n");
}

// Error messages quote argument values; keep the output valid JSON whatever they hold.
std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += (c == '\n') ? ' ' : c;
  }
  return out + "\"";
}

}  // namespace

int main() {
  using eggroll::DType;
  using eggroll::make_view;
  try {
    // (a) Noise: values [0, 8) of the stream z(seed=42, param_id=7, e=0, k=3). A pure function
    // of the key, so any program (or the Python package) regenerates the same bits.
    const eggroll::NoiseKey key{42, 7, 0, 3};
    std::vector<float> noise(8);  // float32 [8]
    eggroll::normal(make_view(noise.data(), DType::float32, {8}), key, /*offset=*/0);

    // (b) Forward: a population of M = 4 members (two antithetic pairs), one input row each.
    constexpr int64_t M = 4, n = 5, m = 3;
    eggroll::Key args;  // the noise key and scale shared by the forward pass and the update
    args.seed = 42;
    args.param_id = 7;
    args.epoch = 3;
    args.sigma = 0.1;
    args.rank = 2;
    args.antithetic = true;  // members 2k, 2k+1 share noise index k with signs +1, -1

    // Deterministic inputs computed here; printed below, so the check needs no libm agreement.
    std::vector<float> x(M * n), W(m * n), y(M * m);  // x [M, n], W [m, n], y [M, m]
    for (size_t i = 0; i < x.size(); ++i) x[i] = float(std::sin(0.5 * double(i)));
    for (size_t i = 0; i < W.size(); ++i) W[i] = float(std::cos(0.3 * double(i)));
    // Which member each row of x is: the range 0, 1, 2, 3 (Members::indices takes an int64 [M]
    // index array instead).
    const auto members_v = eggroll::Members::range(/*start=*/0, /*step=*/1, /*count=*/M);

    // y_i = x_i W^T + s_i (sigma / sqrt r) (x_i B_k) A_k^T, with A_k, B_k regenerated on the fly.
    eggroll::perturbed_matmul(make_view(x.data(), DType::float32, {M, n}),
                              make_view(W.data(), DType::float32, {m, n}), members_v, args,
                              make_view(y.data(), DType::float32, {M, m}));

    // (c) Fitness: any black box; here "every output close to 1", computed in double.
    std::vector<float> fitness(M), shaped(M), g(m * n);  // float32 [M], [M], g [m, n]
    for (int64_t i = 0; i < M; ++i) {
      double sq = 0;
      for (int64_t o = 0; o < m; ++o) sq += std::pow(double(y[i * m + o]) - 1.0, 2);
      fitness[i] = float(-sq);
    }
    // Ranks onto [-0.5, 0.5]: the update then ignores the fitness scale and outliers.
    eggroll::centered_rank(make_view(fitness.data(), DType::float32, {M}),
                           make_view(shaped.data(), DType::float32, {M}));
    // g = (1 / (N sigma)) sum_i f_i E_i over the whole population (N = M here, so the
    // estimate is complete in one call: population = M, accumulate = false).
    eggroll::es_gradient(make_view(shaped.data(), DType::float32, {M}), members_v, args,
                         /*full_rank=*/false, /*population=*/M, /*accumulate=*/false,
                         make_view(g.data(), DType::float32, {m, n}));

    // Bad input is an exception naming the argument, never a crash or silent garbage.
    std::string error_demo;
    try {
      eggroll::Key bad = args;
      bad.sigma = -1.0;
      eggroll::perturbed_matmul(make_view(x.data(), DType::float32, {M, n}),
                                make_view(W.data(), DType::float32, {m, n}), members_v, bad,
                                make_view(y.data(), DType::float32, {M, m}));
    } catch (const eggroll::ValueError& e) {
      error_demo = e.what();
    }

    std::printf("{\n");
    std::printf("  \"key\": {\"seed\": %llu, \"param_id\": %u, \"epoch_index\": %u, "
                "\"noise_index\": %u},\n", (unsigned long long)key.seed, key.param_id,
                key.epoch_index, key.noise_index);
    print_floats("noise", noise);
    std::printf("  \"args\": {\"seed\": %llu, \"param_id\": %u, \"epoch\": %lld, "
                "\"noise_reuse\": %lld, \"antithetic\": %s, \"sigma\": %.17g, \"rank\": %lld},\n",
                (unsigned long long)args.seed, args.param_id, (long long)args.epoch,
                (long long)args.noise_reuse, args.antithetic ? "true" : "false", args.sigma,
                (long long)args.rank);
    std::printf("  \"shapes\": {\"x\": [%lld, %lld], \"W\": [%lld, %lld], \"y\": [%lld, %lld], "
                "\"g\": [%lld, %lld]},\n", (long long)M, (long long)n, (long long)m,
                (long long)n, (long long)M, (long long)m, (long long)m, (long long)n);
    print_floats("x", x);
    print_floats("W", W);
    print_floats("y", y);
    print_floats("fitness", fitness);
    print_floats("shaped", shaped);
    print_floats("g", g);
    std::printf("  \"isa\": \"%s\",\n  \"threads\": %d,\n",
                eggroll::isa_name(eggroll::active_isa_level()), eggroll::num_threads());
    std::printf("  \"error_demo\": %s\n}\n", json_string(error_demo).c_str());
    return 0;
  } catch (const eggroll::Error& e) {  // ValueError (values, shapes) or TypeError (dtypes)
    std::fprintf(stderr, "eggroll error: %s\n", e.what());
    return 1;
  }
}
