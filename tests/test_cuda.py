"""What only the CUDA backend has (the ops themselves run on the cupy / torch-cuda / jax-cuda
backends of tests/conformance): device index members, device-resident seed and epoch, the
device-value checks (next call, sync mode), the fallback GEMMs, the update's chunk plan and
bound rows, half precision, streams, CUDA-graph capture + replay for CuPy and torch, torch
int8 on CUDA tensors, the trainer on CuPy, the int8 extremes.

Without a GPU, tools/cuda_emu/run.sh runs this file against the host emulation of the kernels
(EGGROLL_CUDA_EMU=1): everything but what needs real streams (marked `needs_gpu`)."""
from __future__ import annotations

import os

import numpy as np
import pytest

import eggroll
from eggroll import _core
from eggroll import reference as ref

from conftest import (MEMBER_FORMS, assert_close_derived, forward_inputs,
                      fullrank_forward_magnitude, lowrank_forward_magnitude, make_members,
                      stream_rows)

cp = pytest.importorskip("cupy", reason="the CUDA tests run through CuPy (pip install cupy-cuda12x)")
if not eggroll.cuda_available():
    pytest.skip("no CUDA: eggroll was built without CUDA or no GPU/driver is visible "
                "(eggroll.cuda_available() is False)", allow_module_level=True)
from eggroll import _cuda  # noqa: E402  (a CUDA build)

pytestmark = pytest.mark.cuda
EMULATED = os.environ.get("EGGROLL_CUDA_EMU") == "1"
needs_gpu = pytest.mark.skipif(EMULATED, reason="needs real streams / graphs (a GPU)")

SEED = 0x0123456789ABCDEF
PARAM_ID = 11
EPOCH = 7
SIZES = (1, 17, 97)
M = 6
DEVICE_FORMS = ("device_int64", "device_int32")


def _like() -> cp.ndarray:
    return cp.empty(0, cp.float32)


def _members(form: str, n: int, rng: np.random.Generator):
    """make_members' forms, plus the same indices as a CuPy int64 / int32 array."""
    if form.startswith("device"):
        host = np.asarray(make_members("shuffled_int32", n, rng), np.int64)
        return cp.asarray(host.astype(np.int64 if form.endswith("64") else np.int32)), host
    m = make_members(form, n, rng)
    return m, m


def _key(members, sigma=0.5, noise_reuse=1, antithetic=True, **extra):
    return dict(members=members, epoch=EPOCH, seed=SEED, param_id=PARAM_ID, sigma=sigma,
                noise_reuse=noise_reuse, antithetic=antithetic, **extra)


def _stream() -> int:
    return int(cp.cuda.get_current_stream().ptr)


@pytest.fixture
def sync_checks():
    """Device-value errors raised by the call that met them (the launchers wait for their
    stream): EGGROLL_CUDA_CHECKS=sync for one test."""
    prev = _cuda.set_sync_checks(True)
    yield
    _cuda.set_sync_checks(prev)


# ------------------------------------------------------------------------------------------
# members on the device (the conformance suite passes host forms)
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("form", DEVICE_FORMS)
@pytest.mark.parametrize("m,n,rank", [(1, 1, 1), (17, 97, 3), (97, 17, 8), (5, 7, 13)])
@pytest.mark.parametrize("antithetic", [True, False])
def test_lowrank_factors_bit_identical(form, m, n, rank, antithetic, rng):
    members, host = _members(form, M, rng)
    key = _key(members, antithetic=antithetic, rank=rank)
    A, B = eggroll.lowrank_factors((m, n), like=_like(), **key)
    A_cpu, B_cpu = eggroll.lowrank_factors((m, n), **dict(key, members=host))
    np.testing.assert_array_equal(cp.asnumpy(A).view(np.uint32), A_cpu.view(np.uint32))
    np.testing.assert_array_equal(cp.asnumpy(B).view(np.uint32), B_cpu.view(np.uint32))


@pytest.mark.parametrize("form", DEVICE_FORMS)
@pytest.mark.parametrize("m", (1, 97, 1000))
@pytest.mark.parametrize("noise_reuse", [0, 3])
def test_perturb_vector_bit_identical(form, m, noise_reuse, rng):
    v = rng.standard_normal(m).astype(np.float32)
    members, host = _members(form, M, rng)
    key = _key(members, noise_reuse=noise_reuse)
    out = eggroll.perturb_vector(cp.asarray(v), **key)
    assert isinstance(out, cp.ndarray) and out.shape == (M, m)
    np.testing.assert_array_equal(cp.asnumpy(out), ref.perturb_vector(v, **dict(key, members=host)))


# ------------------------------------------------------------------------------------------
# forwards vs the reference (the framework's GEMM + eggroll's correction)
# ------------------------------------------------------------------------------------------

def _forward_grid():
    cases, i = [], 0
    for m, n in ((1, 17), (17, 97), (64, 128)):   # n % 4 == 0 takes the rank-1 fast path
        for b in (None, 17):
            for rank in (1, 2, 12):                # 12 > 8: ranks in slices
                i += 1
                form = DEVICE_FORMS[i % 2]
                cases.append(pytest.param(m, n, b, rank, bool(i % 3), form,
                                          id=f"m{m}-n{n}-b{b}-r{rank}-{i % 3 > 0}-{form}"))
    return cases


@pytest.mark.parametrize("m,n,b,rank,antithetic,form", _forward_grid())
def test_perturbed_matmul_matches_reference(m, n, b, rank, antithetic, form, rng):
    x, W = forward_inputs(rng, M, m, n, b)
    members, host = _members(form, M, rng)
    key = _key(members, antithetic=antithetic, rank=rank)
    y = eggroll.perturbed_matmul(cp.asarray(x), cp.asarray(W), **key)
    assert isinstance(y, cp.ndarray) and y.shape == x.shape[:-1] + (m,) and y.dtype == cp.float32
    hkey = dict(key, members=host)
    A, B = ref.lowrank_factors((m, n), **hkey, dtype=np.float64)
    assert_close_derived(cp.asnumpy(y), ref.perturbed_matmul(x, W, **hkey, dtype=np.float64),
                         ref.perturbed_matmul(x, W, **hkey), lowrank_forward_magnitude(x, W, A, B),
                         "perturbed_matmul")


@pytest.mark.parametrize("m,n,b", [(17, 97, None), (97, 17, 3)])
@pytest.mark.parametrize("antithetic", [True, False])
@pytest.mark.parametrize("form", DEVICE_FORMS)
def test_perturbed_matmul_full_matches_reference(m, n, b, antithetic, form, rng):
    x, W = forward_inputs(rng, M, m, n, b)
    members, host = _members(form, M, rng)
    key = _key(members, sigma=0.3, antithetic=antithetic)
    y = eggroll.perturbed_matmul_full(cp.asarray(x), cp.asarray(W), **key)
    hkey = dict(key, members=host)
    Z, _ = stream_rows(m * n, host, seed=SEED, param_id=PARAM_ID, epoch=EPOCH, antithetic=antithetic)
    E = 0.3 * Z.reshape(M, m, n)
    assert_close_derived(cp.asnumpy(y), ref.perturbed_matmul_full(x, W, **hkey, dtype=np.float64),
                         ref.perturbed_matmul_full(x, W, **hkey), fullrank_forward_magnitude(x, W, E),
                         "perturbed_matmul_full")


def test_half_precision_inputs(rng):
    """x, W float16, float32 accumulation: the reference on the rounded inputs, up to the
    output's rounding (the GEMM's result rounded before the correction is added: two)."""
    x, W = forward_inputs(rng, M, 48, 128, 2)
    xd, Wd = cp.asarray(x).astype(cp.float16), cp.asarray(W).astype(cp.float16)
    x_r, W_r = cp.asnumpy(xd.astype(cp.float32)), cp.asnumpy(Wd.astype(cp.float32))
    key = _key(range(M), rank=2)
    y = eggroll.perturbed_matmul(xd, Wd, **key)
    assert y.dtype == cp.float16
    r64 = ref.perturbed_matmul(x_r, W_r, **key, dtype=np.float64)
    A, B = ref.lowrank_factors((48, 128), **key, dtype=np.float64)
    mag = lowrank_forward_magnitude(x_r, W_r, A, B)
    eps = 2.0 ** -11
    tol = 2 * eps * np.abs(r64) + 2 * eps * mag + 64 * 2.0 ** -24 * mag
    diff = np.abs(cp.asnumpy(y.astype(cp.float32)).astype(np.float64) - r64)
    assert (diff <= tol).all(), float((diff - tol).max())


# ------------------------------------------------------------------------------------------
# es_gradient and fitness shaping
# ------------------------------------------------------------------------------------------

def _grad_magnitude(f, A, B, N, sigma):
    return np.einsum("i,imr,inr->mn", np.abs(f.astype(np.float64)), np.abs(A), np.abs(B)) / (N * sigma)


@pytest.mark.parametrize("shape,rank", [((17, 97), 1), ((97, 17), 3), ((5, 7), 12)])
@pytest.mark.parametrize("form", ["default", "device_int64"])
@pytest.mark.parametrize("antithetic", [True, False])
def test_es_gradient_lowrank(shape, rank, form, antithetic, rng):
    N = 8
    f = rng.standard_normal(N).astype(np.float32)
    if form == "default":
        members, host = None, range(N)
    elif form == "permuted_int64":
        members = host = rng.permutation(N)
    else:
        host = rng.permutation(N)
        members = cp.asarray(host)
    key = _key(members, antithetic=antithetic, rank=rank)
    g = eggroll.es_gradient(cp.asarray(f), shape, **key)
    assert isinstance(g, cp.ndarray) and g.shape == shape and g.dtype == cp.float32
    hkey = dict(key, members=host)
    A, B = ref.lowrank_factors(shape, **hkey, dtype=np.float64)
    assert_close_derived(cp.asnumpy(g), ref.es_gradient(f, shape, **hkey, dtype=np.float64),
                         ref.es_gradient(f, shape, **hkey), _grad_magnitude(f, A, B, N, 0.5),
                         "es_gradient")


@needs_gpu   # ~200 MB of factor rows in three chunks: too slow under emulation
def test_es_gradient_over_several_chunks(rng):
    """(m + n) r = 2^22: the chunk plan's step is 4 members, so N = 10 takes 3 chunks."""
    N, shape, rank = 10, (3000, 1194), 1000
    f = rng.standard_normal(N).astype(np.float32)
    assert len(_core.es_gradient_chunks(range(N), N, *shape, rank, True)) == 3
    key = _key(None, rank=rank)
    g = cp.asnumpy(eggroll.es_gradient(cp.asarray(f), shape, **key))
    want = eggroll.es_gradient(f, shape, **key)       # the CPU core, the same chunk plan
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(g, want, rtol=0, atol=1e-4 * scale)


@pytest.mark.parametrize("members", ["range", "host", "device"])
def test_es_gradient_factors_bit_identical_to_cpu(members, rng):
    N, m, n, r = 10, 13, 21, 3
    f = rng.standard_normal(N).astype(np.float32)
    idx = np.array([0, 1, 4, 5, 3, 2, 9, 7, 6, 8], np.int64)   # pairs together and apart
    host = range(N) if members == "range" else idx
    key = (SEED, 3, 2, 1, True, 0.2, r, 4, 0)
    Af, Bf = _core.es_gradient_factors(f, (m, n), host, N, *key)
    dev = cp.asarray(idx) if members == "device" else host
    Afd, Bfd = _cuda.es_gradient_factors(cp.asarray(f), (m, n), dev, N, *key, _stream())
    C = Af.shape[0]
    if members == "device":           # the bound M r rows; those past the runs are zeros
        assert Afd.shape == (N * r, m)
        assert not cp.asnumpy(Afd[C:]).any() and not cp.asnumpy(Bfd[C:]).any()
    np.testing.assert_array_equal(cp.asnumpy(Afd[:C]), Af)
    np.testing.assert_array_equal(cp.asnumpy(Bfd[:C]), Bf)


# ------------------------------------------------------------------------------------------
# device-resident keys and the device-value checks (no host synchronisation)
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["int64", "int32"])
def test_device_epoch_and_seed_give_the_host_key_bits(dtype, rng):
    """seed / epoch as device arrays are read by the kernels: the same bits as the host ints,
    and a new value written in place is seen by the next launch (what a replayed graph does)."""
    v = rng.standard_normal(50).astype(np.float32)
    epoch = cp.asarray(np.array([EPOCH], dtype))
    seed = cp.asarray(np.array([SEED & 0xFFFFFFFF, SEED >> 32], np.uint32))
    key = dict(members=range(M), seed=seed, sigma=0.5)
    got = eggroll.perturb_vector(cp.asarray(v), epoch=epoch, **key)
    np.testing.assert_array_equal(cp.asnumpy(got),
                                  eggroll.perturb_vector(v, epoch=EPOCH, **dict(key, seed=SEED)))
    epoch[...] = 9
    got = eggroll.perturb_vector(cp.asarray(v), epoch=epoch, **key)
    np.testing.assert_array_equal(cp.asnumpy(got),
                                  eggroll.perturb_vector(v, epoch=9, **dict(key, seed=SEED)))
    x, W = forward_inputs(rng, M, 17, 24, None)
    y = eggroll.perturbed_matmul(cp.asarray(x), cp.asarray(W), epoch=epoch, rank=2, **key)
    hkey = dict(key, seed=SEED, epoch=9, rank=2)
    A, B = ref.lowrank_factors((17, 24), **hkey, dtype=np.float64)
    assert_close_derived(cp.asnumpy(y), ref.perturbed_matmul(x, W, **hkey, dtype=np.float64),
                         ref.perturbed_matmul(x, W, **hkey), lowrank_forward_magnitude(x, W, A, B),
                         "device epoch")


def test_bad_device_values_raise_on_the_next_call(rng):
    """No synchronisation: the kernels flag the value, the next launcher on that device raises
    (named as the CPU's message), and the flag is then clear."""
    v = cp.asarray(rng.standard_normal(8).astype(np.float32))
    good = dict(members=range(2), epoch=0, seed=1, sigma=0.1)
    eggroll.perturb_vector(v, **dict(good, members=cp.asarray([0, -3])))   # returns
    cp.cuda.Device().synchronize()
    with pytest.raises(ValueError, match="^members: indices must be >= 0"):
        eggroll.perturb_vector(v, **good)
    eggroll.perturb_vector(v, **good)                                      # cleared
    eggroll.es_gradient(cp.asarray([1.0, np.nan], dtype=cp.float32), (3, 8), epoch=0, seed=1, sigma=0.1)
    cp.cuda.Device().synchronize()
    with pytest.raises(ValueError, match="^fitness: contains NaN or inf"):
        _cuda.raise_device_errors(0)


def test_sync_checks_raise_in_the_call(sync_checks, rng):
    v = cp.asarray(rng.standard_normal(8).astype(np.float32))
    with pytest.raises(ValueError, match="^members: indices must be >= 0"):
        eggroll.perturb_vector(v, members=cp.asarray([0, -3]), epoch=0, seed=1, sigma=0.1)
    with pytest.raises(ValueError, match=r"^members: .*noise index < 2\^32"):
        eggroll.perturb_vector(v, members=cp.asarray([1 << 33]), epoch=0, seed=1, sigma=0.1)
    with pytest.raises(ValueError, match=r"^epoch: must be in \[0, 2\^32\)"):
        eggroll.perturb_vector(v, members=range(2), epoch=cp.asarray([-1]), seed=1, sigma=0.1)
    with pytest.raises(ValueError, match="^fitness: contains NaN or inf"):
        eggroll.es_gradient(cp.asarray([1.0, np.inf], dtype=cp.float32), (3, 8), epoch=0, seed=1,
                            sigma=0.1)
    with pytest.raises(ValueError, match="^f: contains NaN or inf"):
        eggroll.centered_rank(cp.asarray([1.0, np.nan], dtype=cp.float32))
    with pytest.raises(ValueError, match="^pair_fitness: values must be exactly -1, 0 or 1"):
        eggroll.int8_update(cp.zeros((3, 4), cp.int8), cp.asarray(np.array([1, 5], np.int8)),
                            threshold=1, epoch=0, seed=1)
    eggroll.perturb_vector(v, members=range(2), epoch=0, seed=1, sigma=0.1)  # nothing left


# ------------------------------------------------------------------------------------------
# the injected GEMM: eggroll's own kernels where the framework's cannot run
# ------------------------------------------------------------------------------------------

@pytest.fixture
def cupy_declines_gemm(monkeypatch):
    """CuPy's gemm answers NotImplemented (as while a graph is captured, where CuPy cannot call
    cuBLAS): the ops' products are eggroll's fallback kernels (cuda/gemm.cu)."""
    from eggroll import cupy as ecp
    monkeypatch.setattr(ecp, "_capturing", lambda: True)


@pytest.mark.parametrize("b", [None, 3])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_fallback_gemm_forward(b, dtype, cupy_declines_gemm, rng):
    x, W = forward_inputs(rng, M, 40, 37, b)
    xd, Wd = cp.asarray(x).astype(dtype), cp.asarray(W).astype(dtype)
    x_r, W_r = cp.asnumpy(xd.astype(cp.float32)), cp.asnumpy(Wd.astype(cp.float32))
    key = _key(range(M), rank=2)
    y = cp.asnumpy(eggroll.perturbed_matmul(xd, Wd, **key).astype(cp.float32))
    r64 = ref.perturbed_matmul(x_r, W_r, **key, dtype=np.float64)
    A, B = ref.lowrank_factors((40, 37), **key, dtype=np.float64)
    mag = lowrank_forward_magnitude(x_r, W_r, A, B)
    if dtype == "float32":
        assert_close_derived(y, r64, ref.perturbed_matmul(x_r, W_r, **key), mag, "fallback nt")
    else:
        eps = 2.0 ** -11
        assert (np.abs(y - r64) <= 2 * eps * (np.abs(r64) + mag) + 64 * 2.0 ** -24 * mag).all()


@pytest.mark.parametrize("R,n,m", [(1, 1, 1), (17, 33, 5), (40, 64, 48), (3, 0, 4), (70, 16, 16)])
def test_fallback_gemm_nt_kernel(R, n, m, rng):
    """eggroll's own GEMM out = x W^T (float32 accumulation), K = 0 included."""
    x = rng.standard_normal((R, n)).astype(np.float32)
    W = rng.standard_normal((m, n)).astype(np.float32)
    out = cp.full((R, m), np.nan, cp.float32)
    xd, Wd = cp.asarray(x), cp.asarray(W)          # alive until the kernel has run
    _cuda.gemm_nt(xd, Wd, out, stream=_stream())
    x64, W64 = x.astype(np.float64), W.astype(np.float64)
    assert_close_derived(cp.asnumpy(out), x64 @ W64.T, x @ W.T, np.abs(x64) @ np.abs(W64).T, "gemm_nt")


@pytest.mark.parametrize("C,m,n", [(1, 1, 1), (18, 33, 5), (64, 40, 48), (0, 3, 4)])
@pytest.mark.parametrize("accumulate", [False, True])
def test_fallback_gemm_tn_kernel(C, m, n, accumulate, rng):
    """out (+)= A^T B, the update's product (C = 0 included)."""
    A = rng.standard_normal((C, m)).astype(np.float32)
    B = rng.standard_normal((C, n)).astype(np.float32)
    g0 = rng.standard_normal((m, n)).astype(np.float32)
    out = cp.asarray(g0)
    Ad, Bd = cp.asarray(A), cp.asarray(B)
    _cuda.gemm_tn(Ad, Bd, out, accumulate, stream=_stream())
    A64, B64 = A.astype(np.float64), B.astype(np.float64)
    base64 = g0.astype(np.float64) if accumulate else 0.0
    base32 = g0 if accumulate else np.float32(0)
    assert_close_derived(cp.asnumpy(out), base64 + A64.T @ B64, base32 + A.T @ B,
                         np.abs(base64) + np.abs(A64).T @ np.abs(B64), "gemm_tn")


@pytest.mark.parametrize("shape,rank", [((17, 9), 1), ((40, 24), 3)])
def test_fallback_gemm_update(shape, rank, cupy_declines_gemm, rng):
    N = 8
    f = rng.standard_normal(N).astype(np.float32)
    key = _key(None, rank=rank)
    g = eggroll.es_gradient(cp.asarray(f), shape, **key)
    hkey = dict(key, members=range(N))
    A, B = ref.lowrank_factors(shape, **hkey, dtype=np.float64)
    assert_close_derived(cp.asnumpy(g), ref.es_gradient(f, shape, **hkey, dtype=np.float64),
                         ref.es_gradient(f, shape, **hkey), _grad_magnitude(f, A, B, N, 0.5),
                         "fallback tn")


# ------------------------------------------------------------------------------------------
# streams and CUDA graphs (need a GPU)
# ------------------------------------------------------------------------------------------

@needs_gpu
def test_non_default_stream_while_another_is_busy(rng):
    """Inputs made at the end of a long queue on the current stream: eggroll must enqueue there
    (and its second stream must wait for that stream), else x would be read before it is ready."""
    x, W = forward_inputs(rng, 64, 96, 128, None)
    key = _key(range(64), rank=2)
    busy, s = cp.cuda.Stream(non_blocking=True), cp.cuda.Stream(non_blocking=True)
    with busy:
        h = cp.ones((4096, 4096), cp.float32)
        for _ in range(8):
            h = h @ h * np.float32(1 / 4096)
    x0, W0 = cp.asarray(x), cp.asarray(W)
    cp.cuda.Device().synchronize()
    with s:
        a = cp.ones((4096, 4096), cp.float32)
        for _ in range(8):
            a = a @ a * np.float32(1 / 4096)                  # stays all ones, takes a while
        xs = x0 + (a[:64, :128] - np.float32(1))              # == x, ready only at the end
        y = eggroll.perturbed_matmul(xs, W0, **key)
        g = eggroll.es_gradient(y[:, 0].copy(), (96, 128), **key)
    s.synchronize()
    A, B = ref.lowrank_factors((96, 128), **key, dtype=np.float64)
    assert_close_derived(cp.asnumpy(y), ref.perturbed_matmul(x, W, **key, dtype=np.float64),
                         ref.perturbed_matmul(x, W, **key), lowrank_forward_magnitude(x, W, A, B),
                         "on a busy stream")
    f = cp.asnumpy(y[:, 0])
    assert_close_derived(cp.asnumpy(g), ref.es_gradient(f, (96, 128), **key, dtype=np.float64),
                         ref.es_gradient(f, (96, 128), **key), _grad_magnitude(f, A, B, 64, 0.5),
                         "es_gradient on a busy stream")
    busy.synchronize()


@needs_gpu
def test_cupy_graph_capture_and_replay(rng):
    """One captured step (forward, shaping, update; members a range, the epoch a device
    array): replays follow new inputs and epochs written in place, with no host involvement."""
    x, W = forward_inputs(rng, 16, 40, 64, 3)
    N, sigma = 16, 0.1
    epoch = cp.asarray(np.array([3], np.int64))
    key = dict(members=range(N), epoch=epoch, seed=SEED, sigma=sigma, rank=2)
    s = cp.cuda.Stream(non_blocking=True)
    xd, Wd = cp.asarray(x), cp.asarray(W)
    out = cp.empty((N, 3, 40), cp.float32)
    with s:
        def step():
            eggroll.perturbed_matmul(xd, Wd, out=out, **key)
            f = eggroll.centered_rank(-cp.square(out).sum(axis=(1, 2)))
            return eggroll.es_gradient(f, (40, 64), **dict(key, members=None))
        step()                                               # warm-up (cuBLAS, modules)
        s.synchronize()
        s.begin_capture()
        g = step()
        with pytest.raises(ValueError, match="^members: while a CUDA graph is captured"):
            eggroll.perturb_vector(cp.zeros(3, cp.float32), members=[0, 1], epoch=0, seed=SEED,
                                   sigma=0.1)
        graph = s.end_capture()
    for e, xv in ((3, x), (5, (x * 2 - 1).astype(np.float32))):
        with s:
            xd[...] = cp.asarray(xv)
            epoch[...] = e
            out.fill(np.nan)
            g.fill(np.nan)
            graph.launch()
        s.synchronize()
        hkey = dict(key, epoch=e)
        A, B = ref.lowrank_factors((40, 64), **hkey, dtype=np.float64)
        assert_close_derived(cp.asnumpy(out), ref.perturbed_matmul(xv, W, **hkey, dtype=np.float64),
                             ref.perturbed_matmul(xv, W, **hkey),
                             lowrank_forward_magnitude(xv, W, A, B), "graph replay")
        f = eggroll.centered_rank(-np.square(cp.asnumpy(out)).sum(axis=(1, 2)))
        assert_close_derived(cp.asnumpy(g), ref.es_gradient(f, (40, 64), **hkey, dtype=np.float64),
                             ref.es_gradient(f, (40, 64), **hkey), _grad_magnitude(f, A, B, N, sigma),
                             "es_gradient graph replay")


@needs_gpu
def test_torch_cuda_graph_capture_and_replay(rng):
    """The same for torch: torch.cuda.graph around a forward and an update on CUDA tensors
    (cuBLAS through torch.matmul, eggroll's second stream joined into the capture)."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    x, W = forward_inputs(rng, 16, 40, 64, 3)
    dev = torch.device("cuda")
    xd, Wd = torch.from_numpy(x).to(dev), torch.from_numpy(W).to(dev)
    epoch = torch.tensor([3], dtype=torch.int64, device=dev)
    key = dict(members=range(16), epoch=epoch, seed=SEED, sigma=0.1, rank=2)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):                                    # warm-up outside the capture
            y = eggroll.perturbed_matmul(xd, Wd, **key)
            g = eggroll.es_gradient(y[:, 0, 0].contiguous(), (40, 64), **dict(key, members=None))
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = eggroll.perturbed_matmul(xd, Wd, **key)
        g = eggroll.es_gradient(y[:, 0, 0].contiguous(), (40, 64), **dict(key, members=None))
    for e in (3, 8):
        epoch.fill_(e)
        graph.replay()
        torch.cuda.synchronize()
        hkey = dict(key, epoch=e)
        A, B = ref.lowrank_factors((40, 64), **hkey, dtype=np.float64)
        assert_close_derived(y.cpu().numpy(), ref.perturbed_matmul(x, W, **hkey, dtype=np.float64),
                             ref.perturbed_matmul(x, W, **hkey), lowrank_forward_magnitude(x, W, A, B),
                             "torch graph replay")
        f = y[:, 0, 0].cpu().numpy()
        assert_close_derived(g.cpu().numpy(), ref.es_gradient(f, (40, 64), **hkey, dtype=np.float64),
                             ref.es_gradient(f, (40, 64), **hkey), _grad_magnitude(f, A, B, 16, 0.1),
                             "torch es_gradient replay")


@needs_gpu
def test_torch_int8_on_cuda_tensors(rng):
    """torch int8 on CUDA tensors: the same _cuda entries, the CPU's bits."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    x = rng.integers(-128, 128, (M, 2, 97), dtype=np.int8)
    W = rng.integers(-128, 128, (33, 97), dtype=np.int8)
    key = dict(members=range(M), epoch=5, seed=SEED, rank=2, sigma_shift=3)
    y = eggroll.perturbed_matmul_int8(torch.from_numpy(x).cuda(), torch.from_numpy(W).cuda(), **key)
    assert y.is_cuda and y.dtype == torch.int8
    np.testing.assert_array_equal(y.cpu().numpy(), eggroll.perturbed_matmul_int8(x, W, **key))
    f = torch.tensor([1, -1, 0, 1], dtype=torch.int8, device="cuda")
    out = eggroll.int8_update(torch.from_numpy(W).cuda(), f, threshold=2, epoch=5, seed=SEED)
    np.testing.assert_array_equal(out.cpu().numpy(),
                                  eggroll.int8_update(W, f.cpu().numpy(), threshold=2, epoch=5, seed=SEED))


def test_mixed_frameworks_and_devices(rng):
    x, W = forward_inputs(rng, 4, 5, 6, None)
    with pytest.raises(TypeError, match="^W: is on the CPU but x is on cuda:0"):
        eggroll.perturbed_matmul(cp.asarray(x), W, **_key(range(4)))
    if EMULATED or cp.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("arrays on different GPUs need two GPUs")
    with cp.cuda.Device(1):
        W1 = cp.asarray(W)
    with pytest.raises(TypeError, match="^W: is on cuda:1 but x is on cuda:0"):
        eggroll.perturbed_matmul(cp.asarray(x), W1, **_key(range(4)))


def test_bad_inputs_raise_named_errors(rng):
    x = cp.asarray(rng.standard_normal((4, 6)).astype(np.float32))
    W = cp.asarray(rng.standard_normal((5, 6)).astype(np.float32))
    with pytest.raises(ValueError, match="^W: expected 6 columns"):
        eggroll.perturbed_matmul(x, W[:, :5].copy(), **_key(range(4)))
    with pytest.raises(ValueError, match="^members: has 3 entries"):
        eggroll.perturbed_matmul(x, W, **_key(range(3)))
    with pytest.raises(ValueError, match="^members: indices must be >= 0"):
        eggroll.perturbed_matmul(x, W, **_key(np.array([0, 1, -2, 3])))   # host: checked now
    with pytest.raises(ValueError, match="^x: must be C-contiguous"):
        eggroll.perturbed_matmul(cp.asfortranarray(x), W, **_key(range(4)))
    with pytest.raises(TypeError, match="^x: expected float32"):
        eggroll.perturbed_matmul(x.astype(cp.int32), W, **_key(range(4)))
    with pytest.raises(ValueError, match="^out: overlaps"):
        eggroll.perturbed_matmul(x, W, out=x.reshape(-1)[:20].reshape(4, 5), **_key(range(4)))
    with pytest.raises(ValueError, match=r"^rank: must be in \[1, 1024\]"):
        eggroll.perturbed_matmul(x, W, **_key(range(4), rank=5000))
    with pytest.raises(ValueError, match="^fitness: antithetic sampling needs an even"):
        eggroll.es_gradient(cp.ones(3, cp.float32), (5, 6), **_key(None))
    with pytest.raises(TypeError, match="^epoch: expected an int"):
        eggroll.perturb_vector(x[0], **dict(_key(range(2)), epoch=cp.asarray([0.5])))


# ------------------------------------------------------------------------------------------
# the trainer on the GPU
# ------------------------------------------------------------------------------------------

def test_es_with_cupy_params_matches_numpy(rng):
    params = {"W": (rng.standard_normal((12, 20)) / 4).astype(np.float32),
              "b": np.zeros(12, np.float32)}
    # SGD: Adam's first step is ~sign(g), which would amplify rounding differences
    kw = dict(sigma=0.1, lr=0.05, population=16, rank=2, seed=5, optimizer="sgd")
    es_np = eggroll.ES(params, **kw)
    es_cp = eggroll.ES({k: cp.asarray(v) for k, v in params.items()}, **kw)
    x = rng.standard_normal((16, 3, 20)).astype(np.float32)
    for _ in range(3):
        y_np = es_np.ask().linear("W", x, bias="b")
        y_cp = es_cp.ask().linear("W", cp.asarray(x), bias="b")
        assert isinstance(y_cp, cp.ndarray)
        np.testing.assert_allclose(cp.asnumpy(y_cp), y_np, rtol=1e-4, atol=1e-5)
        fit = -np.square(y_np).sum(axis=(1, 2))       # the same fitness for both
        es_np.tell(fit)
        es_cp.tell(cp.asarray(fit))
    for k in params:
        got = es_cp.params[k]
        assert isinstance(got, cp.ndarray)
        np.testing.assert_allclose(cp.asnumpy(got), es_np.params[k], rtol=1e-4, atol=1e-5)


def test_es_checkpoint_with_cupy_params(rng, tmp_path):
    params = {"W": (rng.standard_normal((6, 10)) / 3).astype(np.float32)}
    es = eggroll.ES({k: cp.asarray(v) for k, v in params.items()}, sigma=0.1, lr=0.05,
                    population=8, optimizer="adam", seed=2)
    x = cp.asarray(rng.standard_normal((8, 10)).astype(np.float32))
    es.tell(-cp.square(es.ask().linear("W", x)).sum(axis=1))
    resumed = eggroll.ES.from_state_dict(es.state_dict())          # stays on the GPU
    assert isinstance(resumed.params["W"], cp.ndarray)
    path = tmp_path / "es.npz"
    es.save(path)                                                  # files hold NumPy copies
    loaded = eggroll.ES.load(path)
    np.testing.assert_array_equal(loaded.params["W"], cp.asnumpy(es.params["W"]))
    fit = -cp.square(resumed.ask().linear("W", x)).sum(axis=1)
    fit0 = -cp.square(es.ask().linear("W", x)).sum(axis=1)
    np.testing.assert_array_equal(cp.asnumpy(fit), cp.asnumpy(fit0))  # same device, same bits
    resumed.tell(fit)
    es.tell(fit0)
    np.testing.assert_array_equal(cp.asnumpy(resumed.params["W"]), cp.asnumpy(es.params["W"]))


@needs_gpu
def test_demo_runs_on_cuda():
    pytest.importorskip("sklearn", reason="the demo needs scikit-learn")
    pytest.importorskip("tqdm", reason="the demo needs tqdm")
    from eggroll.demo import main
    assert main(["--quick", "--device", "cuda"]) == 0


# ------------------------------------------------------------------------------------------
# the integer path at its limits
# ------------------------------------------------------------------------------------------

def test_perturbed_matmul_int8_extremes():
    n = 1 << 16                                       # the largest n: int32 sums at their limit
    for v in (127, -128):
        x = np.full((2, n), v, np.int8)
        W = np.full((3, n), -128, np.int8)
        key = dict(members=range(2), epoch=0, seed=1, rank=4, sigma_shift=0, fixed_point=7)
        y = eggroll.perturbed_matmul_int8(cp.asarray(x), cp.asarray(W), **key)
        np.testing.assert_array_equal(cp.asnumpy(y), ref.perturbed_matmul_int8(x, W, **key))
