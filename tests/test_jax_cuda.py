"""The JAX adapter on NVIDIA GPUs: the CUDA handlers (eggroll._xla_ffi_cuda) and their
lowerings (eggroll/jax/_cuda.py).

Three ways this file runs:
- anywhere with a CUDA + JAX build: the CUDA lowering of every op, staged for platform
  "cuda" on this machine (no GPU needed), the int64 words and the chunk plan;
- on a GPU that JAX sees (marker ``cuda``): every op vs the reference (noise, factors,
  vectors, full-rank estimates, ranks and int8 bit for bit; float forwards and the low-rank
  estimate within the derived tolerance), jit with traced seed/epoch/members compiling once,
  vmap folding, bad device values raised by the next call, arrays on the CPU keeping the CPU
  handlers, and (a real GPU) a jitted step captured in XLA's command buffers (CUDA graphs);
- under tools/cuda_emu/run_jax.sh (EGGROLL_JAX_CUDA_EMU=1): the same GPU tests on XLA's CPU
  backend, with the handlers and kernels compiled against the host emulation of CUDA.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
pytest.importorskip("eggroll._xla_ffi", reason="eggroll was built without the JAX handlers")
pytest.importorskip("eggroll._xla_ffi_cuda",
                    reason="eggroll was built without CUDA (or without jaxlib's headers)")

import eggroll  # noqa: E402
import eggroll.jax as ej  # noqa: E402
from eggroll import _core, _xla_ffi, _xla_ffi_cuda  # noqa: E402
from eggroll import reference as ref  # noqa: E402
from eggroll.jax import _cuda, _ffi  # noqa: E402

from conftest import (MEMBER_FORMS, assert_close_derived, ffi_call_count,  # noqa: E402
                      forward_inputs, fullrank_forward_magnitude,
                      lowrank_forward_magnitude, make_members, stream_rows)

EMU = os.environ.get("EGGROLL_JAX_CUDA_EMU") == "1"


def _gpu_device():
    try:
        return jax.devices("gpu")[0]
    except RuntimeError:
        return None


def _install_emulation() -> None:
    """tools/cuda_emu/run_jax.sh: register the emulated CUDA handlers for XLA's CPU backend
    (as eggroll_emu_<op>, beside the real CPU handlers) and route every op to its CUDA
    lowering, so the rest of this file runs them on the CPU device."""
    for name, capsule in _xla_ffi_cuda.registrations()["CUDA"].items():
        jax.ffi.register_ffi_target(f"eggroll_emu_{name}", capsule, platform="cpu")

    def call(name, results, *operands, aliases=None, **attrs):
        return jax.ffi.ffi_call(f"eggroll_emu_{name}", results, vmap_method="sequential",
                                input_output_aliases=aliases)(*operands, **attrs)

    _ffi.ensure_registered()
    _ffi.call = call
    _ffi.platform = lambda cpu, cuda, *args: cuda(*args)
    _ffi._CUDA = True


if EMU:
    _install_emulation()
DEV = jax.devices("cpu")[0] if EMU else _gpu_device()
on_gpu = pytest.mark.skipif(DEV is None, reason="no GPU visible to JAX (jax.devices('gpu') is "
                                                 "empty: a CPU-only jaxlib, or no driver)")
real_gpu = pytest.mark.skipif(EMU or DEV is None, reason="needs a real GPU (not the emulation)")
not_emu = pytest.mark.skipif(EMU, reason="the emulation reroutes the custom calls")

SEED = 0x0123456789ABCDEF            # uses both 32-bit words of the seed operand
PARAM_ID = 11
EPOCH = 7
M = 6


def put(a):
    return jax.device_put(np.asarray(a), DEV)


_inputs = forward_inputs


def _key(members, **kw):
    base = dict(members=members, epoch=EPOCH, seed=SEED, param_id=PARAM_ID, sigma=0.3)
    base.update(kw)
    return base


# ------------------------------------------------------------------------------------------
# anywhere (CPU): the module, the key packing, the CUDA lowering staged for platform "cuda"
# ------------------------------------------------------------------------------------------

def test_registrations_cover_every_cpu_op():
    cpu = _xla_ffi.registrations()["cpu"]
    gpu = _xla_ffi_cuda.registrations()["CUDA"]
    assert set(cpu) == set(gpu)
    assert "es_gradient_factors" in gpu


@pytest.mark.parametrize("dtype", ["int32", "uint32"])
def test_int64_words_are_the_int64_bytes(dtype):
    """Members and epoch travel as the little-endian words of int64 values (JAX without x64
    has no int64): the layout the kernels read in place; int32 sign-extends, so a negative
    value stays negative for the kernels' checks."""
    members = np.array([0, 5, 2**31 - 1, 7] + ([-3] if dtype == "int32" else []), np.int64)
    with jax.default_device(jax.devices("cpu")[0]):
        got = np.asarray(_ffi.int64_words(jnp.asarray(members.astype(dtype))))
    np.testing.assert_array_equal(got.reshape(-1), members.view(np.uint32))


def _cuda_hlo(fn, *args) -> str:
    return jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",)).as_text()


def _calls(hlo: str) -> list[str]:
    return re.findall(r"custom_call @(\w+)", hlo)


@not_emu
def test_cuda_lowering_of_the_forwards():
    """On a GPU the forward is XLA's dot at HIGHEST precision (true float32, never TF32) and
    one custom call that adds the correction in place onto it; members=None is the dot
    alone; the CPU call (with W and the perturb flag) is not in the program."""
    x, W = jnp.ones((4, 3, 5)), jnp.ones((6, 5))
    for full, op in ((False, eggroll.perturbed_matmul), (True, eggroll.perturbed_matmul_full)):
        hlo = _cuda_hlo(lambda x, W, e: op(x, W, members=jnp.arange(4), epoch=e, seed=3,
                                           sigma=0.1), x, W, jnp.int32(1))
        name = "eggroll_perturbed_matmul_full" if full else "eggroll_perturbed_matmul"
        assert _calls(hlo) == [name]
        call = re.search(r"custom_call @\w+\((.*?)\) \{(.*?)\} :", hlo).groups()
        assert call[0].count("%") == 4                  # x, base, member words, key words
        assert "output_operand_aliases" in call[1] and "operand_index = 1" in call[1]
        assert "perturb" not in call[1]
        assert "precision = [HIGHEST, HIGHEST]" in hlo
        assert "tensor<4x2xui32>" in hlo                                # the members' int64 words
        assert re.search(r"tensor<\d+xui8>", hlo)                        # the workspace result
    hlo = _cuda_hlo(lambda x, W: eggroll.perturbed_matmul(
        x, W, members=None, epoch=0, seed=1, sigma=0.1), x, W)
    assert _calls(hlo) == [] and "dot_general" in hlo


@not_emu
def test_cuda_lowering_of_the_other_ops():
    f = jnp.arange(8.0)
    cases = {
        "perturb_vector": (lambda: eggroll.perturb_vector(jnp.ones(5), members=jnp.arange(4),
                                                          epoch=0, seed=1, sigma=0.1), ["eggroll_perturb_vector"]),
        "lowrank_factors": (lambda: ej.lowrank_factors((5, 3), members=jnp.arange(4), epoch=0, seed=1, sigma=0.1),
                            ["eggroll_lowrank_factors"]),
        "es_gradient low rank": (lambda: eggroll.es_gradient(f, (5, 3), epoch=0, seed=1, sigma=0.1),
                                 ["eggroll_es_gradient_factors"]),
        "es_gradient full rank": (lambda: eggroll.es_gradient(f, (5, 3), epoch=0, seed=1,
                                                              sigma=0.1, full_rank=True), ["eggroll_es_gradient"]),
        "es_gradient vector": (lambda: eggroll.es_gradient(f, (5,), epoch=0, seed=1, sigma=0.1),
                               ["eggroll_es_gradient"]),
        "centered_rank": (lambda: eggroll.centered_rank(f), ["eggroll_centered_rank"]),
        "zscore": (lambda: eggroll.zscore(f, 2), ["eggroll_zscore"]),
        "antithetic_sign": (lambda: eggroll.antithetic_sign(f), ["eggroll_antithetic_sign"]),
        "int8 forward": (lambda: eggroll.perturbed_matmul_int8(
            jnp.ones((4, 5), jnp.int8), jnp.ones((3, 5), jnp.int8), members=jnp.arange(4),
            epoch=0, seed=1, sigma_shift=1), ["eggroll_perturbed_matmul_int8"]),
        "int8_update": (lambda: eggroll.int8_update(jnp.ones((3, 5), jnp.int8),
                                                    jnp.array([1, -1], jnp.int8), threshold=2,
                                                    epoch=0, seed=1),
                        ["eggroll_int8_update"]),
    }
    for what, (fn, want) in cases.items():
        assert _calls(_cuda_hlo(fn)) == want, what
    # the low-rank estimate: the factors' product is XLA's dot, in true float32
    assert "precision = [HIGHEST, HIGHEST]" in _cuda_hlo(cases["es_gradient low rank"][0])


def test_gradient_chunks_bound_the_factor_memory():
    """The core's chunk plan (the CUDA lowering's and the C++ launchers'): known members the
    exact factor-row count per chunk (antithetic pairs fold), traced ones the bound M * rank;
    chunks of even length whose factors stay near 64 MiB."""
    N, m, n, r = 1000, 30000, 20000, 3
    exact = _core.es_gradient_chunks(range(N), N, m, n, r, True)
    bound = _core.es_gradient_chunks(None, N, m, n, r, True)
    assert len(exact) > 1 and [c[:2] for c in exact] == [c[:2] for c in bound]
    assert exact[0][0] == 0 and exact[-1][1] == N
    for (c0, c1, C), (_, _, Cb) in zip(exact, bound):
        assert (c1 - c0) % 2 == 0 or c1 == N
        assert C == (c1 - c0 + 1) // 2 * r and Cb == (c1 - c0) * r
        assert 4 * Cb * (m + n) <= 64 << 20
    assert len(_core.es_gradient_chunks(None, 4, 2**24, 2**24, 1, False)) == 2   # at least 2 each


def test_workspace_sizes_follow_the_launchers():
    """The scratch each keyed handler gets as its last result, sized from the plan its entry's
    arguments make (abstract arrays): the forward's dots (M b r float32), the folded runs of an
    update, the int8 factor columns; none where no launch needs one (rounded up to 256-byte
    pieces). Index members are the handler's device values: never an upload."""
    def ws(name, *args, rank=1):
        return getattr(_xla_ffi_cuda, "workspace_" + name)(*args, None, 0, None, 1, True, 1.0,
                                                            rank, 4, 0)

    def a(*shape, dtype=jnp.float32):
        return jax.ShapeDtypeStruct(shape, dtype)
    W = a(5, 7)
    assert ws("perturbed_matmul", a(6, 3, 7), W, range(6), None, False, True, rank=2) == 256
    assert ws("perturbed_matmul", a(6, 3, 7), W, a(6, dtype=jnp.int32), None, False, True,
              rank=2) == 256                                                  # no upload
    assert ws("perturbed_matmul", a(3, 7), W, range(6), None, True, True, rank=2) == 256
    assert ws("perturbed_matmul", a(100, 4, 7), W, range(100), None, False, True,
              rank=3) == 4864                                                 # 4800 rounded
    assert ws("perturbed_matmul", a(6, 7), W, None, None, False, True) == 0
    assert ws("perturbed_matmul_full", a(6, 7), W, range(6), None, False, True) == 0
    assert ws("es_gradient_factors", a(10), (5, 7), range(10), 10) == 256      # 12 + 10 words
    assert ws("es_gradient", a(10), (5, 7), range(10), None, True, 10, False) == 256   # full rank
    assert ws("int8_update", a(13, 21, dtype=jnp.int8), a(8, dtype=jnp.int8), None, 1,
              rank=2) == 768                                                  # 34 * 16 bytes
    assert ws("perturb_vector", a(7), range(6), None) == 0


# ------------------------------------------------------------------------------------------
# on the GPU: every op vs the reference
# ------------------------------------------------------------------------------------------

@on_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("m,n,b", [(1, 17, None), (17, 97, 3), (97, 1, None), (64, 128, 2)])
@pytest.mark.parametrize("rank", [1, 3, 12])
@pytest.mark.parametrize("form", MEMBER_FORMS)
def test_perturbed_matmul(m, n, b, rank, form, rng):
    x, W = _inputs(rng, M, m, n, b)
    key = _key(make_members(form, M, rng), rank=rank, antithetic=form != "range")
    y = eggroll.perturbed_matmul(put(x), put(W), **key)
    assert isinstance(y, jax.Array) and y.dtype == jnp.float32 and y.shape == x.shape[:-1] + (m,)
    if not EMU:
        assert y.devices() == {DEV}
    A, B = ref.lowrank_factors((m, n), **key, dtype=np.float64)
    assert_close_derived(np.asarray(y), ref.perturbed_matmul(x, W, **key, dtype=np.float64),
                         ref.perturbed_matmul(x, W, **key), lowrank_forward_magnitude(x, W, A, B),
                         "jax cuda perturbed_matmul")


@on_gpu
@pytest.mark.cuda
def test_unperturbed_is_the_product(rng):
    x, W = _inputs(rng, M, 33, 40, 3)
    y = np.asarray(eggroll.perturbed_matmul(put(x), put(W), members=None, epoch=0, seed=1,
                                            sigma=0.5))
    assert_close_derived(y, x.astype(np.float64) @ W.astype(np.float64).T, x @ W.T,
                         np.abs(x.astype(np.float64)) @ np.abs(W.astype(np.float64)).T,
                         "members=None")


@on_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("m,n,b", [(1, 1, None), (17, 97, None), (97, 17, 3)])
@pytest.mark.parametrize("antithetic", [True, False])
def test_perturbed_matmul_full(m, n, b, antithetic, rng):
    x, W = _inputs(rng, M, m, n, b)
    members = make_members("shuffled_int32", M, rng)
    key = _key(members, antithetic=antithetic, noise_reuse=2)
    y = np.asarray(eggroll.perturbed_matmul_full(put(x), put(W), **key))
    Z, s = stream_rows(m * n, members, seed=SEED, param_id=PARAM_ID, epoch=EPOCH, noise_reuse=2,
                       antithetic=antithetic)
    E = (s[:, None] * 0.3 * Z.astype(np.float64)).reshape(M, m, n)
    assert_close_derived(y, ref.perturbed_matmul_full(x, W, **key, dtype=np.float64),
                         ref.perturbed_matmul_full(x, W, **key),
                         fullrank_forward_magnitude(x, W, E), "jax cuda perturbed_matmul_full")


@on_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("m", [1, 17, 1000])
@pytest.mark.parametrize("form", MEMBER_FORMS)
def test_perturb_vector_bit_identical(m, form, rng):
    v = rng.standard_normal(m).astype(np.float32)
    key = _key(make_members(form, M, rng), noise_reuse=0, antithetic=form != "range")
    out = np.asarray(eggroll.perturb_vector(put(v), **key))
    np.testing.assert_array_equal(out, ref.perturb_vector(v, **key))


@on_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("m,n,rank", [(1, 1, 1), (17, 97, 3), (97, 17, 8)])
@pytest.mark.parametrize("form", MEMBER_FORMS)
def test_lowrank_factors_bit_identical(m, n, rank, form, rng):
    key = _key(make_members(form, M, rng), rank=rank, antithetic=rank != 3)
    with jax.default_device(DEV):   # no array argument: the factors land on the default device
        A, B = ej.lowrank_factors((m, n), **key)
    A_ref, B_ref = ref.lowrank_factors((m, n), **key)
    np.testing.assert_array_equal(np.asarray(A), A_ref)
    np.testing.assert_array_equal(np.asarray(B), B_ref)


def _grad_magnitude(f, shape, N, full, **kw):
    fa = np.abs(f.astype(np.float64))
    if full:
        Z, _ = stream_rows(int(np.prod(shape)), range(N), seed=kw["seed"], param_id=kw["param_id"],
                           epoch=kw["epoch"], noise_reuse=kw["noise_reuse"],
                           antithetic=kw["antithetic"])
        return ((fa / N) @ np.abs(Z.astype(np.float64))).reshape(shape)
    A, B = ref.lowrank_factors(shape, members=range(N), epoch=kw["epoch"], seed=kw["seed"],
                               param_id=kw["param_id"], sigma=kw["sigma"], rank=kw["rank"],
                               noise_reuse=kw["noise_reuse"], antithetic=kw["antithetic"],
                               dtype=np.float64)
    return np.einsum("i,imr,inr->mn", fa / (N * kw["sigma"]), np.abs(A), np.abs(B))


@on_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("shape,full_rank", [((17, 5), False), ((64, 128), False),
                                             ((3, 97), True), ((33,), False)])
@pytest.mark.parametrize("N,antithetic", [(18, True), (7, False)])
@pytest.mark.parametrize("rank", [1, 4])
def test_es_gradient(shape, full_rank, N, antithetic, rank, rng):
    f = rng.standard_normal(N).astype(np.float32)
    kw = dict(epoch=EPOCH, seed=SEED, param_id=PARAM_ID, sigma=0.05, rank=rank,
              antithetic=antithetic, full_rank=full_rank, noise_reuse=2)
    g = np.asarray(eggroll.es_gradient(put(f), shape, **kw))
    assert g.shape == shape and g.dtype == np.float32
    if full_rank or len(shape) == 1:   # streamed with the CPU's coefficients and add order
        np.testing.assert_array_equal(g, eggroll.es_gradient(f, shape, **kw))
    assert_close_derived(g, ref.es_gradient(f, shape, **kw, dtype=np.float64),
                         ref.es_gradient(f, shape, **kw),
                         _grad_magnitude(f, shape, N, full_rank or len(shape) == 1, **kw),
                         "jax cuda es_gradient")


@on_gpu
@pytest.mark.cuda
def test_es_gradient_traced_members(rng):
    """Members traced under jit (factor rows sized by the bound M * rank, those past the runs
    zero) give the estimate of the known members."""
    N, shape, rank = 12, (9, 7), 2
    f = rng.standard_normal(N).astype(np.float32)
    members = np.array([0, 1, 4, 5, 3, 2, 9, 7, 6, 8, 10, 11], np.int32)  # pairs together and apart
    kw = dict(epoch=EPOCH, seed=SEED, param_id=PARAM_ID, sigma=0.05, rank=rank)
    r64 = ref.es_gradient(f, shape, members=members, **kw, dtype=np.float64)
    r32 = ref.es_gradient(f, shape, members=members, **kw)
    mag = _grad_magnitude(f, shape, N, False, noise_reuse=1, antithetic=True, **kw)
    traced = jax.jit(lambda f, mem: eggroll.es_gradient(f, shape, members=mem, **kw))
    assert_close_derived(np.asarray(traced(put(f), put(members))), r64, r32, mag, "traced members")
    assert_close_derived(np.asarray(eggroll.es_gradient(put(f), shape, members=members, **kw)),
                         r64, r32, mag, "known members")


@real_gpu
@pytest.mark.cuda
def test_es_gradient_over_several_chunks(rng):
    """(m + n) r = 2^22: three chunks of the core's plan, each an XLA dot; the CPU's estimate
    (the same plan) within float32 error."""
    N, shape, rank = 10, (3000, 1194), 1000
    f = rng.standard_normal(N).astype(np.float32)
    assert len(_core.es_gradient_chunks(range(N), N, *shape, rank, True)) == 3
    kw = dict(epoch=EPOCH, seed=SEED, sigma=0.05, rank=rank)
    g = np.asarray(eggroll.es_gradient(put(f), shape, **kw))
    want = eggroll.es_gradient(f, shape, **kw)
    np.testing.assert_allclose(g, want, rtol=0, atol=1e-4 * float(np.abs(want).max()))


@on_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("N", [2, 17, 300])
@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_fitness_shaping(N, dtype, rng):
    f = np.round(rng.standard_normal(N) * 4).astype(dtype)    # many ties
    np.testing.assert_array_equal(np.asarray(eggroll.centered_rank(put(f))),
                                  eggroll.centered_rank(f.astype(np.float32)))
    z = np.asarray(eggroll.zscore(put(f)))
    assert_close_derived(z, ref.zscore(f, dtype=np.float64), ref.zscore(f), what="jax cuda zscore")
    if N % 2 == 0:
        np.testing.assert_array_equal(np.asarray(eggroll.antithetic_sign(put(f))),
                                      ref.antithetic_sign(f))


def _int8(rng, shape):
    return rng.integers(-127, 128, size=shape).astype(np.int8)


@on_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("m,n,b", [(5, 16, None), (13, 33, 3), (64, 128, 2)])
@pytest.mark.parametrize("rank", [1, 3])
@pytest.mark.parametrize("perturb", [True, False])
def test_int8_forward_bit_exact(m, n, b, rank, perturb, rng):
    x = _int8(rng, (M, n) if b is None else (M, b, n))
    W = _int8(rng, (m, n))
    kw = dict(members=make_members("shuffled_int32", M, rng) if perturb else None, epoch=EPOCH,
              seed=SEED, param_id=PARAM_ID, rank=rank, sigma_shift=2)
    y = eggroll.perturbed_matmul_int8(put(x), put(W), **kw)
    assert y.dtype == jnp.int8
    np.testing.assert_array_equal(np.asarray(y), ref.perturbed_matmul_int8(x, W, **kw))


@on_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("rank", [1, 2])
def test_int8_update_bit_exact(rank, rng):
    W = _int8(rng, (13, 21))
    f = rng.integers(-1, 2, size=8).astype(np.int8)
    kw = dict(epoch=EPOCH, seed=SEED, param_id=PARAM_ID, rank=rank, fixed_point=4, threshold=3)
    want = ref.int8_update(W, f, **kw)
    np.testing.assert_array_equal(np.asarray(eggroll.int8_update(put(W), put(f), **kw)), want)
    # float pair fitness (antithetic_sign's output) is accepted as in NumPy
    got = eggroll.int8_update(put(W), put(f.astype(np.float32)), **kw)
    np.testing.assert_array_equal(np.asarray(got), want)


# ------------------------------------------------------------------------------------------
# on the GPU: jit, vmap, placement, run-time errors, the trainer
# ------------------------------------------------------------------------------------------

@on_gpu
@pytest.mark.cuda
def test_jit_with_traced_seed_epoch_members_compiles_once(rng):
    x, W = _inputs(rng, 6, 9, 13, None)

    @jax.jit
    def step(x, W, members, seed, epoch):
        return eggroll.perturbed_matmul(x, W, members=members, epoch=epoch, seed=seed,
                                        sigma=0.1, rank=2, param_id=3)

    for epoch in range(4):
        members = np.arange(6, dtype=np.int32) + 2 * epoch
        y = step(put(x), put(W), put(members), put(np.uint32(12345)), put(np.int32(epoch)))
        key = dict(members=members, epoch=epoch, seed=12345, sigma=0.1, rank=2, param_id=3)
        A, B = ref.lowrank_factors((9, 13), **key, dtype=np.float64)
        assert_close_derived(np.asarray(y), ref.perturbed_matmul(x, W, **key, dtype=np.float64),
                             ref.perturbed_matmul(x, W, **key),
                             lowrank_forward_magnitude(x, W, A, B), f"epoch {epoch}")
    assert step._cache_size() == 1


@on_gpu
@pytest.mark.cuda
def test_vmap_over_members_folds_into_one_call(rng):
    x, W = _inputs(rng, 8, 7, 11, 3)
    Wj = put(W)

    def member(xi, i):   # xi [b, n], i scalar -> [b, m]
        return eggroll.perturbed_matmul(xi[None], Wj, members=i[None], epoch=4, seed=9,
                                        sigma=0.2, rank=2)[0]

    y = jax.jit(jax.vmap(member))(put(x), put(np.arange(8, dtype=np.int32)))
    key = dict(members=range(8), epoch=4, seed=9, sigma=0.2, rank=2)
    A, B = ref.lowrank_factors((7, 11), **key, dtype=np.float64)
    assert_close_derived(np.asarray(y), ref.perturbed_matmul(x, W, **key, dtype=np.float64),
                         ref.perturbed_matmul(x, W, **key), lowrank_forward_magnitude(x, W, A, B),
                         "vmap over members")
    assert ffi_call_count(jax.vmap(member), put(x), put(np.arange(8, dtype=np.int32))) == 1
    v = rng.standard_normal(5).astype(np.float32)
    out = jax.vmap(lambda i: eggroll.perturb_vector(put(v), members=i[None], epoch=2, seed=3,
                                                    sigma=0.4)[0])(put(np.arange(6, dtype=np.int32)))
    np.testing.assert_array_equal(np.asarray(out), ref.perturb_vector(
        v, members=range(6), epoch=2, seed=3, sigma=0.4))


@real_gpu
@pytest.mark.cuda
def test_cpu_arrays_keep_the_cpu_handlers(rng):
    """The same jitted function on CPU arrays runs the CPU handlers (the NumPy path's bits);
    on GPU arrays the CUDA ones (same numbers within tolerance), results on each device."""
    x, W = _inputs(rng, 4, 5, 6, None)
    f = jax.jit(lambda x, W: eggroll.perturbed_matmul(x, W, members=jnp.arange(4), epoch=1,
                                                      seed=2, sigma=0.3))
    cpu = jax.devices("cpu")[0]
    y_cpu = f(jax.device_put(x, cpu), jax.device_put(W, cpu))
    assert y_cpu.devices() == {cpu}
    np.testing.assert_array_equal(np.asarray(y_cpu), eggroll.perturbed_matmul(
        x, W, members=range(4), epoch=1, seed=2, sigma=0.3))
    y_gpu = f(put(x), put(W))
    assert y_gpu.devices() == {DEV}
    key = dict(members=range(4), epoch=1, seed=2, sigma=0.3)
    A, B = ref.lowrank_factors((5, 6), **key, dtype=np.float64)
    assert_close_derived(np.asarray(y_gpu), ref.perturbed_matmul(x, W, **key, dtype=np.float64),
                         ref.perturbed_matmul(x, W, **key), lowrank_forward_magnitude(x, W, A, B),
                         "gpu arrays")


@on_gpu
@pytest.mark.cuda
def test_bad_traced_values_raise_on_the_next_call():
    """Traced values the adapter cannot check at trace time stay on the device: the kernels
    flag a bad one, and the next eggroll call on that device fails with an FFI error naming
    the argument (no handler reads a device value on the host, so none synchronises)."""
    X, W3 = put(np.ones((4, 3), np.float32)), put(np.ones((2, 3), np.float32))
    f = jax.jit(lambda e, mem: eggroll.perturbed_matmul(X, W3, members=mem, epoch=e, seed=1,
                                                        sigma=0.1))
    good = (put(np.int32(1)), put(np.arange(4, dtype=np.int32)))
    shape = jax.jit(eggroll.centered_rank)
    upd = jax.jit(lambda pf: eggroll.int8_update(put(np.ones((3, 4), np.int8)), pf, threshold=1,
                                                 epoch=0, seed=1))
    bad = [(lambda: f(put(np.int32(-3)), good[1]), r"epoch: must be in \[0, 2\^32\)"),
           (lambda: f(good[0], put(np.array([0, 1, -2, 3], np.int32))), "members: indices must be >= 0"),
           (lambda: shape(put(np.array([1.0, np.nan, 2.0], np.float32))), "f: contains NaN or inf"),
           (lambda: upd(put(np.array([1.0, 0.5], np.float32))), "pair_fitness: values must be exactly -1, 0 or 1")]
    for call, message in bad:
        jax.block_until_ready(call())          # runs (on invalid values); nothing waits on them
        with pytest.raises(Exception, match=message):
            jax.block_until_ready(f(*good))
    ok = f(*good)                              # reported once: the process is fine afterwards
    assert np.isfinite(np.asarray(ok)).all()


@real_gpu
@pytest.mark.cuda
def test_command_buffer_capture_and_replay(tmp_path):
    """XLA captures the handlers (declared command-buffer compatible) into CUDA graphs and
    replays them: a jitted step (forward + update, traced epoch) with command buffers forced
    on for custom calls, run for two epochs in a child process, equals the reference, and the
    compiled program holds the custom calls inside a command buffer."""
    code = textwrap.dedent(f"""
        import json, sys, numpy as np, jax, eggroll
        sys.path.insert(0, {str(os.path.dirname(__file__))!r})
        from eggroll import reference as ref
        dev = jax.devices("gpu")[0]
        rng = np.random.default_rng(0)
        x = rng.standard_normal((16, 3, 64)).astype(np.float32)
        W = rng.standard_normal((40, 64)).astype(np.float32)
        def step(x, W, epoch):
            y = eggroll.perturbed_matmul(x, W, members=range(16), epoch=epoch, seed=5, sigma=0.1, rank=2)
            g = eggroll.es_gradient(y[:, 0, 0], (40, 64), epoch=epoch, seed=5, sigma=0.1, rank=2)
            return y, g
        f = jax.jit(step)
        xs, Ws = jax.device_put(x, dev), jax.device_put(W, dev)
        text = f.lower(xs, Ws, jax.device_put(np.int32(0), dev)).compile().as_text()
        errs = []
        for e in (3, 8, 3):
            y, g = f(xs, Ws, jax.device_put(np.int32(e), dev))
            key = dict(members=range(16), epoch=e, seed=5, sigma=0.1, rank=2)
            want = ref.perturbed_matmul(x, W, **key, dtype=np.float64)
            errs.append(float(np.abs(np.asarray(y) - want).max() / np.abs(want).max()))
            gw = ref.es_gradient(np.asarray(y)[:, 0, 0], (40, 64), **key, dtype=np.float64)
            errs.append(float(np.abs(np.asarray(g) - gw).max() / np.abs(gw).max()))
        print(json.dumps(dict(errs=errs, text=text)))
    """)
    env = dict(os.environ, XLA_FLAGS="--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,"
               "CUSTOM_CALL --xla_gpu_graph_min_graph_size=1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    import json
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert max(res["errs"]) < 1e-5, res["errs"]
    text = res["text"]
    assert "command_buffer" in text, "XLA formed no command buffer"
    body = "\n".join(re.findall(r"command_buffer[^\n]*\{.*?\n\}", text, re.S))
    assert "eggroll_perturbed_matmul" in body and "eggroll_es_gradient_factors" in body, (
        "the eggroll custom calls are outside the command buffers")


@on_gpu
@pytest.mark.cuda
def test_trace_time_errors_are_unchanged():
    with pytest.raises(ValueError, match="^members:"):
        eggroll.perturbed_matmul(put(np.ones((4, 3), np.float32)), put(np.ones((2, 3), np.float32)),
                                 members=[0, -1, 2, 3], epoch=0, seed=1, sigma=0.1)
    with pytest.raises(TypeError, match="^sigma:"):
        eggroll.perturb_vector(put(np.ones(3, np.float32)), members=range(2), epoch=0, seed=1,
                               sigma=jnp.float32(0.1))


@on_gpu
@pytest.mark.cuda
def test_es_gradient_pytree_on_the_gpu(rng):
    """eggroll.jax.ES.gradient on the GPU, jitted: minus the ascent estimate of each leaf from
    the centered ranks (same leaf names -> same param_ids as the NumPy trainer): the vector
    leaf bit for bit (streamed), the matrix leaf within the low-rank estimate's tolerance."""
    P = {"W1": (rng.standard_normal((8, 5)) * 0.3).astype(np.float32),
         "b1": np.zeros(8, np.float32)}
    fit = rng.standard_normal(16).astype(np.float32)
    params = jax.tree_util.tree_map(put, P)
    es = ej.ES(params, sigma=0.05, population=16, seed=3)
    grads = jax.jit(lambda p, f: es.gradient(p, f, 0))(params, put(fit))
    shaped = eggroll.centered_rank(fit)
    kw = dict(epoch=0, seed=3, sigma=0.05, noise_reuse=1, antithetic=True, rank=1)
    b1 = dict(kw, param_id=ej.param_id("b1"))
    np.testing.assert_array_equal(-np.asarray(grads["b1"]), eggroll.es_gradient(shaped, (8,), **b1))
    w1 = dict(kw, param_id=ej.param_id("W1"))
    assert_close_derived(-np.asarray(grads["W1"]),
                         ref.es_gradient(shaped, (8, 5), **w1, dtype=np.float64),
                         ref.es_gradient(shaped, (8, 5), **w1),
                         _grad_magnitude(shaped, (8, 5), 16, False, **w1), "ES.gradient W1")
