// XLA FFI handlers (CUDA) for every eggroll op, and the pybind11 module eggroll._xla_ffi_cuda
// that hands them to JAX as PyCapsules (platform "CUDA"). Each handler turns XLA's device
// buffers into TensorViews (Device::cuda, XLA's device ordinal) and calls the stream-explicit
// launchers of cuda/eggroll/cuda.h on the stream XLA hands it, like the CuPy adapter does.
//
// What differs from the CPU handlers (cpp/bindings/xla_ffi.cpp), and why:
// - No cuBLAS here (the CUDA backend has no cuBLAS dependency): the base product x W^T comes
//   from XLA's own dot (cuBLAS) in the JAX adapter, and the `perturbed_matmul` /
//   `perturbed_matmul_full` handlers add the correction in place onto it (operand 1 aliased
//   to the result). The low-rank es_gradient is `es_gradient_factors` here plus an XLA dot.
//   So the CUDA handlers take the same names but not the same operands as the CPU ones; the
//   adapter (python/eggroll/jax/_cuda.py) lowers each op per platform.
// - The launchers take the noise key (EsArgs / Int8Key) on the host, but seed, epoch and the
//   members are traced device values (one compilation for all epochs). So the adapter packs
//   them into ONE uint32 operand `key` = [seed lo, seed hi, epoch lo, epoch hi, then member i
//   as the two little-endian words of an int64], which the handler copies to the host (one
//   device-to-host copy and a stream synchronisation per call), validates exactly as the CPU
//   core does, and whose member words the kernels read in place as int64 [M] on the device.
//   Fitness shaping copies f (finite check) and int8_update pair_fitness ({-1, 0, 1} check)
//   the same way, because the launchers leave those value checks to the caller.
// No C++ exception crosses the FFI boundary: every handler catches and returns an ffi::Error.
#include <pybind11/pybind11.h>
#include <cuda_runtime_api.h>
#include <cmath>
#include <cstdint>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>
#include "eggroll/cuda.h"
#include "eggroll/eggroll.h"
#include "host_util.h"
#include "xla/ffi/api/ffi.h"
#include "xla_ffi_common.h"

namespace ffi = xla::ffi;
namespace py = pybind11;
using namespace eggroll;
using eggroll::xla_ffi::guarded;
using eggroll::xla_ffi::view;
using eggroll::xla_ffi::capsule;

namespace {

// ---- CUDA host helpers ---------------------------------------------------------------------

using eggroll::cuda::detail::check_cuda;
using eggroll::cuda::detail::DeviceGuard;   // makes XLA's device current for the copies below

// bytes of device memory at src -> host dst, ordered after everything queued on `stream`,
// and waited for (the value is needed on the host now).
void copy_to_host(void* dst, const void* src, size_t bytes, cudaStream_t stream, int dev) {
  if (bytes == 0) return;
  DeviceGuard guard(dev);
  check_cuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync");
  check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
}

// The noise key of one call, read back from the packed `key` operand (see the file comment):
// uint32 [4 + 2 M] = seed (lo, hi), epoch (lo, hi; sign-extended), members as int64 words.
struct Key {
  EsArgs args;
  TensorView members;                // int64 [M] on the device: the member words of `key`, in place
  std::vector<int64_t> host_members; // the same values on the host (validated)
};

Key read_key(ffi::Buffer<ffi::U32> key, int64_t M, cudaStream_t stream, int dev, int64_t param_id,
             double sigma, int64_t rank, int64_t noise_reuse, bool antithetic) {
  const size_t words = key.element_count();
  if (words != size_t(4 + 2 * M))
    value_error("members: the packed key operand has " + std::to_string(words) +
                " words, expected 4 + 2 * " + std::to_string(M) + " (eggroll.jax builds it)");
  std::vector<uint32_t> host(words);
  copy_to_host(host.data(), key.typed_data(), words * sizeof(uint32_t), stream, dev);
  Key k;
  k.args.seed = uint64_t(host[0]) | (uint64_t(host[1]) << 32);
  k.args.param_id = uint32_t(param_id);
  k.args.epoch = int64_t(uint64_t(host[2]) | (uint64_t(host[3]) << 32));
  k.args.noise_reuse = noise_reuse;
  k.args.antithetic = antithetic;
  k.args.sigma = sigma;
  k.args.rank = rank;
  validate_args(k.args);
  // The CPU core's member checks on the host copy (>= 0, noise index < 2^32), same messages.
  std::vector<int64_t>& mem = k.host_members;
  mem.resize(size_t(M));
  for (int64_t i = 0; i < M; ++i)
    mem[size_t(i)] = int64_t(uint64_t(host[size_t(4 + 2 * i)]) |
                             (uint64_t(host[size_t(5 + 2 * i)]) << 32));
  validate_members(make_view(mem.data(), DType::int64, {M}), M, antithetic);
  // XLA buffers are at least 16-byte aligned, so word 4 starts an aligned int64 array.
  k.members = make_view(static_cast<uint32_t*>(key.typed_data()) + 4, DType::int64, {M});
  k.members.device = Device::cuda;
  k.members.device_index = dev;
  return k;
}

// Fitness values (float32 / float64 [N]) must be finite; the launchers leave it to the caller.
void check_finite_fitness(ffi::AnyBuffer f, const char* name, cudaStream_t stream, int dev) {
  const size_t N = f.element_count();
  if (f.element_type() == ffi::DataType::F32) {
    std::vector<float> h(N);
    copy_to_host(h.data(), f.untyped_data(), N * sizeof(float), stream, dev);
    for (size_t i = 0; i < N; ++i)
      if (!std::isfinite(h[i]))
        value_error(std::string(name) + ": contains NaN or inf at index " + std::to_string(i));
  } else if (f.element_type() == ffi::DataType::F64) {
    std::vector<double> h(N);
    copy_to_host(h.data(), f.untyped_data(), N * sizeof(double), stream, dev);
    for (size_t i = 0; i < N; ++i)
      if (!std::isfinite(h[i]))
        value_error(std::string(name) + ": contains NaN or inf at index " + std::to_string(i));
  }  // other dtypes: the launcher raises the TypeError
}

// ---- handlers --------------------------------------------------------------------------------

// x [M, n] | [M, b, n], base = x W^T [M, (b,) m] (XLA's dot), key [4 + 2M] -> y = base +
// the correction. y is base's buffer (input_output_aliases); if XLA gave a separate buffer,
// base is copied into it first.
ffi::Error correction_impl(bool full, cudaStream_t stream, int32_t dev, ffi::AnyBuffer x,
                           ffi::AnyBuffer base, ffi::Buffer<ffi::U32> key,
                           ffi::Result<ffi::AnyBuffer> y, int64_t param_id, double sigma,
                           int64_t rank, int64_t noise_reuse, bool antithetic) {
  return guarded([&] {
    const TensorView xv = view(x, dev), yv = view(y, dev);
    if (base.element_type() != y->element_type() || base.size_bytes() != y->size_bytes())
      value_error("base: expected the result's shape " + yv.shape_str() + " and dtype");
    const Key k = read_key(key, xv.ndim ? xv.shape[0] : 0, stream, dev, param_id, sigma, rank,
                           noise_reuse, antithetic);
    if (y->untyped_data() != base.untyped_data())
      check_cuda(cudaMemcpyAsync(y->untyped_data(), base.untyped_data(), base.size_bytes(),
                                 cudaMemcpyDeviceToDevice, stream), "cudaMemcpyAsync (base)");
    if (full) cuda::fullrank_correction(xv, k.members, k.args, yv, stream);
    else cuda::lowrank_correction(xv, k.members, k.args, yv, stream);
  });
}

ffi::Error perturbed_matmul_ffi(cudaStream_t s, int32_t dev, ffi::AnyBuffer x, ffi::AnyBuffer base,
                                ffi::Buffer<ffi::U32> key, ffi::Result<ffi::AnyBuffer> y,
                                int64_t param_id, double sigma, int64_t rank, int64_t noise_reuse,
                                bool antithetic) {
  return correction_impl(false, s, dev, x, base, key, y, param_id, sigma, rank, noise_reuse,
                         antithetic);
}
ffi::Error perturbed_matmul_full_ffi(cudaStream_t s, int32_t dev, ffi::AnyBuffer x,
                                     ffi::AnyBuffer base, ffi::Buffer<ffi::U32> key,
                                     ffi::Result<ffi::AnyBuffer> y, int64_t param_id, double sigma,
                                     int64_t rank, int64_t noise_reuse, bool antithetic) {
  return correction_impl(true, s, dev, x, base, key, y, param_id, sigma, rank, noise_reuse,
                         antithetic);
}

// v float32 [m], key [4 + 2M] -> out float32 [M, m].
ffi::Error perturb_vector_ffi(cudaStream_t s, int32_t dev, ffi::AnyBuffer v,
                              ffi::Buffer<ffi::U32> key, ffi::Result<ffi::AnyBuffer> out,
                              int64_t param_id, double sigma, int64_t noise_reuse, bool antithetic) {
  return guarded([&] {
    const TensorView ov = view(out, dev);
    const Key k = read_key(key, ov.ndim ? ov.shape[0] : 0, s, dev, param_id, sigma, 1,
                           noise_reuse, antithetic);
    cuda::perturb_vector(view(v, dev), k.members, k.args, ov, s);
  });
}

// key [4 + 2M] -> A float32 [M, m, r], B float32 [M, n, r] (m, n from the result shapes).
ffi::Error lowrank_factors_ffi(cudaStream_t s, int32_t dev, ffi::Buffer<ffi::U32> key,
                               ffi::Result<ffi::AnyBuffer> A, ffi::Result<ffi::AnyBuffer> B,
                               int64_t param_id, double sigma, int64_t rank, int64_t noise_reuse,
                               bool antithetic) {
  return guarded([&] {
    const TensorView Av = view(A, dev), Bv = view(B, dev);
    if (Av.ndim != 3 || Bv.ndim != 3) value_error("A: expected [M, m, r] and B [M, n, r]");
    const Key k = read_key(key, Av.shape[0], s, dev, param_id, sigma, rank, noise_reuse, antithetic);
    cuda::lowrank_factors(k.members, Av.shape[1], Bv.shape[1], k.args, Av, Bv, s);
  });
}

// fitness float32 [M], key [4 + 2M] -> g float32 [m, n] | [m]: the full-rank (or vector)
// estimate for a population of `population` members (the low rank is es_gradient_factors).
ffi::Error es_gradient_ffi(cudaStream_t s, int32_t dev, ffi::AnyBuffer fitness,
                           ffi::Buffer<ffi::U32> key, ffi::Result<ffi::AnyBuffer> g,
                           int64_t param_id, double sigma, int64_t rank, int64_t noise_reuse,
                           bool antithetic, int64_t population) {
  return guarded([&] {
    const TensorView f = view(fitness, dev);
    const Key k = read_key(key, int64_t(fitness.element_count()), s, dev, param_id, sigma, rank,
                           noise_reuse, antithetic);
    cuda::es_gradient(f, k.members, k.args, true, population, false, view(g, dev), s);
  });
}

// fitness float32 [M], key [4 + 2M] -> Af float32 [C, m], Bf float32 [C, n] with g = Af^T Bf
// (this chunk's share, normalised by `population`). C is fixed at trace time: the exact
// es_gradient_columns when the members were known then, else its bound M * rank; rows past
// the real count (from the host copy of the members) are zeroed, so the product is unchanged.
ffi::Error es_gradient_factors_ffi(cudaStream_t s, int32_t dev, ffi::AnyBuffer fitness,
                                   ffi::Buffer<ffi::U32> key, ffi::Result<ffi::AnyBuffer> Af,
                                   ffi::Result<ffi::AnyBuffer> Bf, int64_t param_id, double sigma,
                                   int64_t rank, int64_t noise_reuse, bool antithetic,
                                   int64_t population) {
  return guarded([&] {
    const int64_t M = int64_t(fitness.element_count());
    const Key k = read_key(key, M, s, dev, param_id, sigma, rank, noise_reuse, antithetic);
    TensorView Av = view(Af, dev), Bv = view(Bf, dev);
    if (Av.ndim != 2 || Bv.ndim != 2 || Av.shape[0] != Bv.shape[0])
      value_error("Af: expected [C, m] and Bf [C, n]");
    // The run structure from the members' host copy (read_key validated them).
    std::vector<int64_t> mem = k.host_members;  // es_gradient_columns takes a mutable view
    const int64_t C = es_gradient_columns(make_view(mem.data(), DType::int64, {M}), antithetic, rank);
    const int64_t Cmax = Av.shape[0], m = Av.shape[1], n = Bv.shape[1];
    if (C > Cmax)
      value_error("Af: " + std::to_string(Cmax) + " rows, but the members need " + std::to_string(C));
    Av.shape[0] = Bv.shape[0] = C;  // row-major: the first C rows are a contiguous prefix
    cuda::es_gradient_factors(view(fitness, dev), k.members, m, n, k.args, population, Av, Bv, s);
    if (C < Cmax) {
      DeviceGuard guard(dev);
      check_cuda(cudaMemsetAsync(Av.ptr<float>() + C * m, 0, size_t((Cmax - C) * m) * sizeof(float), s),
                 "cudaMemsetAsync (Af)");
      check_cuda(cudaMemsetAsync(Bv.ptr<float>() + C * n, 0, size_t((Cmax - C) * n) * sizeof(float), s),
                 "cudaMemsetAsync (Bf)");
    }
  });
}

ffi::Error centered_rank_ffi(cudaStream_t s, int32_t dev, ffi::AnyBuffer f,
                             ffi::Result<ffi::AnyBuffer> out) {
  return guarded([&] {
    check_finite_fitness(f, "f", s, dev);
    cuda::centered_rank(view(f, dev), view(out, dev), s);
  });
}
ffi::Error zscore_ffi(cudaStream_t s, int32_t dev, ffi::AnyBuffer f,
                      ffi::Result<ffi::AnyBuffer> out, int64_t group_size) {
  return guarded([&] {
    check_finite_fitness(f, "f", s, dev);
    cuda::zscore(view(f, dev), group_size, view(out, dev), s);
  });
}
ffi::Error antithetic_sign_ffi(cudaStream_t s, int32_t dev, ffi::AnyBuffer f,
                               ffi::Result<ffi::AnyBuffer> out) {
  return guarded([&] {
    check_finite_fitness(f, "f", s, dev);
    cuda::antithetic_sign(view(f, dev), view(out, dev), s);
  });
}

cuda::Int8Key int8_key(const EsArgs& e, int64_t rank, int64_t fixed_point, int64_t sigma_shift) {
  cuda::Int8Key k;
  k.seed = e.seed; k.param_id = e.param_id; k.epoch = e.epoch; k.noise_reuse = e.noise_reuse;
  k.antithetic = e.antithetic; k.rank = rank; k.fixed_point = fixed_point;
  k.sigma_shift = sigma_shift;
  return k;
}

// x int8 [M, n] | [M, b, n], W int8 [m, n], key [4 + 2M] (perturb) or [4] -> y int8
// [M, (b,) m]: the CUDA backend's own dp4a GEMM with the correction in its epilogue (no
// framework GEMM). perturb == 0: the unperturbed product; the key is not read (no sync).
ffi::Error perturbed_matmul_int8_ffi(cudaStream_t s, int32_t dev, ffi::AnyBuffer x,
                                     ffi::AnyBuffer W, ffi::Buffer<ffi::U32> key,
                                     ffi::Result<ffi::AnyBuffer> y, int64_t param_id,
                                     int64_t rank, int64_t noise_reuse, bool antithetic,
                                     int64_t fixed_point, int64_t sigma_shift, bool perturb) {
  return guarded([&] {
    const TensorView xv = view(x, dev);
    EsArgs e;  // unperturbed: epoch 0, seed 0 (never used without members)
    e.noise_reuse = noise_reuse;
    e.antithetic = antithetic;
    TensorView mv;  // null view: no perturbation
    if (perturb) {
      // sigma = 1, rank = 1: placeholders read_key validates (the int8 limits come below).
      Key k = read_key(key, xv.ndim ? xv.shape[0] : 0, s, dev, param_id, 1.0, 1, noise_reuse,
                       antithetic);
      e = k.args;
      mv = k.members;
    }
    Int8Args chk{e.seed, uint32_t(param_id), e.epoch, noise_reuse, antithetic, rank, fixed_point,
                 sigma_shift};
    validate_int8_args(chk);  // the CPU's messages for rank / fixed_point / sigma_shift
    cuda::perturbed_matmul_int8(xv, view(W, dev), mv, int8_key(e, rank, fixed_point, sigma_shift),
                                view(y, dev), s);
  });
}

// W int8 [m, n], pair_fitness int8 [P] in {-1, 0, 1}, key [4] -> out int8 [m, n].
ffi::Error int8_update_ffi(cudaStream_t s, int32_t dev, ffi::AnyBuffer W,
                           ffi::AnyBuffer pair_fitness, ffi::Buffer<ffi::U32> key,
                           ffi::Result<ffi::AnyBuffer> out, int64_t threshold, int64_t param_id,
                           int64_t rank, int64_t noise_reuse, int64_t fixed_point) {
  return guarded([&] {
    const Key k = read_key(key, 0, s, dev, param_id, 1.0, 1, noise_reuse, true);
    Int8Args chk{k.args.seed, k.args.param_id, k.args.epoch, noise_reuse, true, rank, fixed_point, 0};
    validate_int8_args(chk);
    if (pair_fitness.element_type() == ffi::DataType::S8) {
      // The kernels multiply by these values: check them as the CPU core does.
      std::vector<int8_t> h(pair_fitness.element_count());
      copy_to_host(h.data(), pair_fitness.untyped_data(), h.size(), s, dev);
      for (int8_t v : h)
        if (v < -1 || v > 1)
          value_error("pair_fitness: values must be -1, 0 or 1, got " + std::to_string(int(v)));
    }  // other dtypes: the launcher raises the TypeError
    cuda::int8_update(view(W, dev), view(pair_fitness, dev), threshold,
                      int8_key(k.args, rank, fixed_point, 0), view(out, dev), s);
  });
}

}  // namespace

// Every handler binds XLA's stream and device ordinal first, then the operands. No handler
// declares ffi::Traits::kCmdBufferCompatible: they synchronise the stream to read the key, so
// XLA must never capture them into a command buffer (CUDA graph); without the trait it does not.
// (tools/cuda_emu/xla_ffi_cuda_emu.cpp predefines this to run the handlers, with the kernels
// under host emulation, on XLA's CPU backend, which has neither.)
#ifndef EGGROLL_CUDA_CTX
#define EGGROLL_CUDA_CTX \
  ffi::Ffi::Bind().Ctx<ffi::PlatformStream<cudaStream_t>>().Ctx<ffi::DeviceOrdinal>()
#endif
#define EGGROLL_KEY_ATTRS                                                               \
  .Attr<int64_t>("param_id").Attr<double>("sigma").Attr<int64_t>("rank")                \
      .Attr<int64_t>("noise_reuse").Attr<bool>("antithetic")

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    eggroll_cuda_perturbed_matmul, perturbed_matmul_ffi,
    EGGROLL_CUDA_CTX.Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>().Arg<ffi::Buffer<ffi::U32>>()
        .Ret<ffi::AnyBuffer>() EGGROLL_KEY_ATTRS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    eggroll_cuda_perturbed_matmul_full, perturbed_matmul_full_ffi,
    EGGROLL_CUDA_CTX.Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>().Arg<ffi::Buffer<ffi::U32>>()
        .Ret<ffi::AnyBuffer>() EGGROLL_KEY_ATTRS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    eggroll_cuda_perturb_vector, perturb_vector_ffi,
    EGGROLL_CUDA_CTX.Arg<ffi::AnyBuffer>().Arg<ffi::Buffer<ffi::U32>>().Ret<ffi::AnyBuffer>()
        .Attr<int64_t>("param_id").Attr<double>("sigma").Attr<int64_t>("noise_reuse")
        .Attr<bool>("antithetic"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    eggroll_cuda_lowrank_factors, lowrank_factors_ffi,
    EGGROLL_CUDA_CTX.Arg<ffi::Buffer<ffi::U32>>().Ret<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>()
        EGGROLL_KEY_ATTRS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    eggroll_cuda_es_gradient, es_gradient_ffi,
    EGGROLL_CUDA_CTX.Arg<ffi::AnyBuffer>().Arg<ffi::Buffer<ffi::U32>>().Ret<ffi::AnyBuffer>()
        EGGROLL_KEY_ATTRS.Attr<int64_t>("population"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    eggroll_cuda_es_gradient_factors, es_gradient_factors_ffi,
    EGGROLL_CUDA_CTX.Arg<ffi::AnyBuffer>().Arg<ffi::Buffer<ffi::U32>>().Ret<ffi::AnyBuffer>()
        .Ret<ffi::AnyBuffer>() EGGROLL_KEY_ATTRS.Attr<int64_t>("population"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(eggroll_cuda_centered_rank, centered_rank_ffi,
                              EGGROLL_CUDA_CTX.Arg<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(eggroll_cuda_zscore, zscore_ffi,
                              EGGROLL_CUDA_CTX.Arg<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("group_size"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(eggroll_cuda_antithetic_sign, antithetic_sign_ffi,
                              EGGROLL_CUDA_CTX.Arg<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    eggroll_cuda_perturbed_matmul_int8, perturbed_matmul_int8_ffi,
    EGGROLL_CUDA_CTX.Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>().Arg<ffi::Buffer<ffi::U32>>()
        .Ret<ffi::AnyBuffer>()
        .Attr<int64_t>("param_id").Attr<int64_t>("rank").Attr<int64_t>("noise_reuse")
        .Attr<bool>("antithetic").Attr<int64_t>("fixed_point").Attr<int64_t>("sigma_shift")
        .Attr<bool>("perturb"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    eggroll_cuda_int8_update, int8_update_ffi,
    EGGROLL_CUDA_CTX.Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>().Arg<ffi::Buffer<ffi::U32>>()
        .Ret<ffi::AnyBuffer>()
        .Attr<int64_t>("threshold").Attr<int64_t>("param_id").Attr<int64_t>("rank")
        .Attr<int64_t>("noise_reuse").Attr<int64_t>("fixed_point"));

PYBIND11_MODULE(_xla_ffi_cuda, mod) {
  mod.doc() = "eggroll XLA FFI handlers (CUDA). Used by eggroll.jax; not a public API. "
              "Importing needs no GPU or driver (static CUDA runtime).";
  // {"CUDA": {op name -> handler capsule}}: the CPU module's op names (registered under the
  // same target names, eggroll_<op>, for platform CUDA) plus es_gradient_factors.
  mod.def("registrations", [] {
    py::dict gpu;
    gpu["perturbed_matmul"] = capsule(eggroll_cuda_perturbed_matmul);
    gpu["perturbed_matmul_full"] = capsule(eggroll_cuda_perturbed_matmul_full);
    gpu["perturb_vector"] = capsule(eggroll_cuda_perturb_vector);
    gpu["lowrank_factors"] = capsule(eggroll_cuda_lowrank_factors);
    gpu["es_gradient"] = capsule(eggroll_cuda_es_gradient);
    gpu["es_gradient_factors"] = capsule(eggroll_cuda_es_gradient_factors);
    gpu["centered_rank"] = capsule(eggroll_cuda_centered_rank);
    gpu["zscore"] = capsule(eggroll_cuda_zscore);
    gpu["antithetic_sign"] = capsule(eggroll_cuda_antithetic_sign);
    gpu["perturbed_matmul_int8"] = capsule(eggroll_cuda_perturbed_matmul_int8);
    gpu["int8_update"] = capsule(eggroll_cuda_int8_update);
    py::dict out;
    out["CUDA"] = gpu;
    return out;
  });
}
