"""What only the CUDA backend has, through CuPy (the ops themselves run on the cupy backend of
tests/conformance): half-precision inputs, streams, CUDA graph capture with the fallback
GEMMs, device checks, ES and the demo on the GPU, the int8 path's extremes."""
from __future__ import annotations

import os

import numpy as np
import pytest

import eggroll
from eggroll import reference as ref

from conftest import assert_close_derived, forward_inputs, lowrank_forward_magnitude

cp = pytest.importorskip("cupy", reason="the CUDA tests run through CuPy (pip install cupy-cuda12x)")
if not (eggroll.cuda_available() or os.environ.get("EGGROLL_CUDA_EMU")):
    pytest.skip("no CUDA: eggroll was built without CUDA or no GPU/driver is visible "
                "(eggroll.cuda_available() is False)", allow_module_level=True)
from eggroll import cupy as ecp  # noqa: E402  (needs cupy and eggroll._cuda)

pytestmark = pytest.mark.cuda

SEED = 0x0123456789ABCDEF
PARAM_ID = 11
EPOCH = 7
SIZES = (1, 17, 97)
LAYOUTS = (None, 1, 17)
M = 6


_inputs = forward_inputs


def _key(members, sigma=0.5, noise_reuse=1, antithetic=True, **extra):
    return dict(members=members, epoch=EPOCH, seed=SEED, param_id=PARAM_ID, sigma=sigma,
                noise_reuse=noise_reuse, antithetic=antithetic, **extra)


# ------------------------------------------------------------------------------------------
# half precision (the CUDA kernels take it natively)
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("n", [128, 97])
def test_half_precision_inputs(dtype, n, rng):
    """x, W in half precision, float32 accumulation: the result equals the reference on the
    rounded inputs up to the rounding of the output to that dtype (plus float32 error)."""
    x, W = _inputs(rng, M, 48, n, 2)
    try:
        dt = cp.dtype(dtype)
        xd, Wd = cp.asarray(x).astype(dt), cp.asarray(W).astype(dt)
    except (TypeError, ValueError, NotImplementedError) as e:
        pytest.skip(f"this CuPy has no usable {dtype} dtype ({e})")
    x_r, W_r = xd.astype(cp.float32).get(), Wd.astype(cp.float32).get()
    key = _key(range(M), rank=2)
    y = eggroll.perturbed_matmul(xd, Wd, **key)
    assert y.dtype == dt
    r64 = ref.perturbed_matmul(x_r, W_r, **key, dtype=np.float64)
    A, B = ref.lowrank_factors((48, n), **key, dtype=np.float64)
    mag = lowrank_forward_magnitude(x_r, W_r, A, B)
    eps = 2.0 ** -8 if dtype == "bfloat16" else 2.0 ** -11   # unit roundoff of the output
    # the output rounding (and the half-precision GEMM result rounded before the
    # correction is added: two roundings) plus float32 sums
    tol = 2 * eps * np.abs(r64) + 2 * eps * mag + 64 * 2.0 ** -24 * mag
    diff = np.abs(y.astype(cp.float32).get().astype(np.float64) - r64)
    assert (diff <= tol).all(), float((diff - tol).max())


# ------------------------------------------------------------------------------------------
# streams, graph capture, devices, errors
# ------------------------------------------------------------------------------------------

def test_non_default_stream_while_another_is_busy(rng):
    """Inputs made at the end of a long queue on the current stream: eggroll must enqueue on
    that stream (launching elsewhere would read x before it is ready)."""
    x, W = _inputs(rng, 64, 96, 128, None)
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
        yf = eggroll.perturbed_matmul_full(xs, W0, **_key(range(64)))
        g = eggroll.es_gradient(y[:, 0].copy(), (96, 128), **key)
    s.synchronize()
    r64 = ref.perturbed_matmul(x, W, **key, dtype=np.float64)
    A, B = ref.lowrank_factors((96, 128), **key, dtype=np.float64)
    assert_close_derived(y.get(), r64, ref.perturbed_matmul(x, W, **key),
                         lowrank_forward_magnitude(x, W, A, B), "on a busy stream")
    f = y[:, 0].get()
    assert_close_derived(g.get(), ref.es_gradient(f, (96, 128), **key, dtype=np.float64),
                         ref.es_gradient(f, (96, 128), **key),
                         np.einsum("i,imr,inr->mn", np.abs(f.astype(np.float64)), np.abs(A),
                                   np.abs(B)) / (64 * 0.5), "es_gradient on a busy stream")
    assert np.isfinite(yf.get()).all()
    busy.synchronize()


@pytest.mark.parametrize("R,n,m", [(1, 1, 1), (17, 33, 5), (40, 64, 48), (3, 0, 4), (70, 16, 16)])
def test_fallback_gemm_nt(R, n, m, rng):
    """The no-cuBLAS GEMM used under graph capture: out = x W^T, float32 accumulation."""
    x = rng.standard_normal((R, n)).astype(np.float32)
    W = rng.standard_normal((m, n)).astype(np.float32)
    out = cp.full((R, m), np.nan, cp.float32)
    # Keep the device arrays alive: a view holds only a raw pointer, and CuPy's pool hands a
    # freed temporary's block to the next allocation (the first H200 run compared W with W).
    xd, Wd = cp.asarray(x), cp.asarray(W)
    ecp._cuda.gemm_nt(xd, Wd, out, stream=ecp._stream())
    x64, W64 = x.astype(np.float64), W.astype(np.float64)
    assert_close_derived(out.get(), x64 @ W64.T, x @ W.T, np.abs(x64) @ np.abs(W64).T,
                         "gemm_nt")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_fallback_gemm_nt_half(dtype, rng):
    x = rng.standard_normal((19, 37)).astype(np.float32)
    W = rng.standard_normal((21, 37)).astype(np.float32)
    try:
        dt = cp.dtype(dtype)
        xd, Wd = cp.asarray(x).astype(dt), cp.asarray(W).astype(dt)
    except (TypeError, ValueError, NotImplementedError) as e:
        pytest.skip(f"this CuPy has no usable {dtype} dtype ({e})")
    x_r = xd.astype(cp.float32).get().astype(np.float64)
    W_r = Wd.astype(cp.float32).get().astype(np.float64)
    out = cp.empty((19, 21), dt)
    ecp._cuda.gemm_nt(xd, Wd, out, stream=ecp._stream())
    r64, mag = x_r @ W_r.T, np.abs(x_r) @ np.abs(W_r).T
    eps = 2.0 ** -8 if dtype == "bfloat16" else 2.0 ** -11   # unit roundoff of the output
    diff = np.abs(out.astype(cp.float32).get().astype(np.float64) - r64)
    assert (diff <= eps * np.abs(r64) + 64 * 2.0 ** -24 * mag).all()


@pytest.mark.parametrize("C,m,n", [(1, 1, 1), (18, 33, 5), (64, 40, 48), (0, 3, 4)])
@pytest.mark.parametrize("accumulate", [False, True])
def test_fallback_gemm_tn(C, m, n, accumulate, rng):
    """out (+)= A^T B, the es_gradient product under graph capture."""
    A = rng.standard_normal((C, m)).astype(np.float32)
    B = rng.standard_normal((C, n)).astype(np.float32)
    g0 = rng.standard_normal((m, n)).astype(np.float32)
    out = cp.asarray(g0)
    Ad, Bd = cp.asarray(A), cp.asarray(B)          # alive until the kernel has run
    ecp._cuda.gemm_tn(Ad, Bd, out, accumulate, stream=ecp._stream())
    A64, B64 = A.astype(np.float64), B.astype(np.float64)
    base64 = g0.astype(np.float64) if accumulate else 0.0
    base32 = g0 if accumulate else np.float32(0)
    assert_close_derived(out.get(), base64 + A64.T @ B64, base32 + A.T @ B,
                         np.abs(base64) + np.abs(A64).T @ np.abs(B64), "gemm_tn")


def test_graph_capture_and_replay(rng):
    x, W = _inputs(rng, 16, 40, 64, 3)
    members = cp.arange(16, dtype=cp.int64)  # on the device: nothing to upload while capturing
    key = dict(members=members, epoch=3, seed=SEED, sigma=0.1, rank=2)
    host_key = dict(key, members=range(16))
    s = cp.cuda.Stream(non_blocking=True)
    xd, Wd = cp.asarray(x), cp.asarray(W)
    out = cp.empty((16, 3, 40), cp.float32)
    with s:
        eggroll.perturbed_matmul(xd, Wd, out=out, **key)   # warm-up (cuBLAS handle, modules)
        s.synchronize()
        s.begin_capture()
        eggroll.perturbed_matmul(xd, Wd, out=out, **key)
        graph = s.end_capture()
        out.fill(0)
        graph.launch()
    s.synchronize()
    A, B = ref.lowrank_factors((40, 64), **host_key, dtype=np.float64)
    assert_close_derived(out.get(), ref.perturbed_matmul(x, W, **host_key, dtype=np.float64),
                         ref.perturbed_matmul(x, W, **host_key),
                         lowrank_forward_magnitude(x, W, A, B), "graph replay")
    x2 = (x * 2 - 1).astype(np.float32)
    with s:
        xd[...] = cp.asarray(x2)                             # replay on new inputs in place
        graph.launch()
    s.synchronize()
    assert_close_derived(out.get(), ref.perturbed_matmul(x2, W, **host_key, dtype=np.float64),
                         ref.perturbed_matmul(x2, W, **host_key),
                         lowrank_forward_magnitude(x2, W, A, B), "graph replay, new x")


def test_graph_capture_es_gradient_and_members(rng):
    """Under capture the low-rank es_gradient's GEMM is the fallback kernel and its members
    (None: range(N)) are computed by the kernels; a host index array is refused (its upload
    would be captured from a temporary buffer); replays follow in-place fitness updates."""
    N, shape, key = 16, (40, 24), dict(epoch=2, seed=SEED, param_id=PARAM_ID, sigma=0.1, rank=2)
    f = rng.standard_normal(N).astype(np.float32)
    fd = cp.asarray(f)
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        eggroll.es_gradient(fd, shape, **key)                # warm-up outside the capture
        s.synchronize()
        s.begin_capture()
        g = eggroll.es_gradient(fd, shape, **key)
        with pytest.raises(ValueError, match="^members: while capturing"):
            eggroll.perturb_vector(cp.zeros(3, cp.float32), members=[0, 1], epoch=0,
                                       seed=SEED, sigma=0.1)
        graph = s.end_capture()
        g.fill(np.nan)
        graph.launch()
    s.synchronize()
    A, B = ref.lowrank_factors(shape, members=range(N), **key, dtype=np.float64)
    for fv in (f, (f * -3 + 1).astype(np.float32)):
        if fv is not f:
            with s:
                fd[...] = cp.asarray(fv)
                graph.launch()
            s.synchronize()
        mag = np.einsum("i,imr,inr->mn", np.abs(fv.astype(np.float64)), np.abs(A), np.abs(B)) / (N * 0.1)
        assert_close_derived(g.get(), ref.es_gradient(fv, shape, **key, dtype=np.float64),
                             ref.es_gradient(fv, shape, **key), mag, "es_gradient graph replay")


def test_mixed_frameworks_and_devices(rng):
    x, W = _inputs(rng, 4, 5, 6, None)
    with pytest.raises(TypeError, match="^W: is on the CPU but x is on cuda:0"):
        eggroll.perturbed_matmul(cp.asarray(x), W, **_key(range(4)))
    if cp.cuda.runtime.getDeviceCount() < 2:
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
        eggroll.perturbed_matmul(x, W, **_key(cp.asarray([0, 1, -2, 3])))
    with pytest.raises(ValueError, match="^x: must be C-contiguous"):
        eggroll.perturbed_matmul(cp.asfortranarray(x), W, **_key(range(4)))
    with pytest.raises(TypeError, match="^x: expected float32, float16 or bfloat16"):
        eggroll.perturbed_matmul(x.astype(cp.int32), W, **_key(range(4)))
    with pytest.raises(ValueError, match="^out: overlaps"):
        eggroll.perturbed_matmul(x, W, out=x.reshape(-1)[:20].reshape(4, 5), **_key(range(4)))
    with pytest.raises(ValueError, match="^rank: must be in \\[1, 1024\\]"):
        eggroll.perturbed_matmul(x, W, **_key(range(4), rank=5000))
    with pytest.raises(ValueError, match="^fitness: contains NaN"):
        eggroll.es_gradient(cp.asarray([1.0, np.nan], dtype=cp.float32), (5, 6), **_key(None))
    with pytest.raises(ValueError, match="^fitness: antithetic sampling needs an even"):
        eggroll.es_gradient(cp.ones(3, cp.float32), (5, 6), **_key(None))


# ------------------------------------------------------------------------------------------
# the trainer and the demo on the GPU
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
        np.testing.assert_allclose(y_cp.get(), y_np, rtol=1e-4, atol=1e-5)
        fit = -np.square(y_np).sum(axis=(1, 2))       # the same fitness for both
        es_np.tell(fit)
        es_cp.tell(cp.asarray(fit))
    for k in params:
        got = es_cp.params[k]
        assert isinstance(got, cp.ndarray)
        np.testing.assert_allclose(got.get(), es_np.params[k], rtol=1e-4, atol=1e-5)


def test_demo_runs_on_cuda():
    pytest.importorskip("sklearn", reason="the demo needs scikit-learn")
    pytest.importorskip("tqdm", reason="the demo needs tqdm")
    from eggroll.demo import main
    assert main(["--quick", "--device", "cuda"]) == 0


# ------------------------------------------------------------------------------------------
# the integer path: exact, so equal to the int64 reference bit for bit
# ------------------------------------------------------------------------------------------

needs_int8_ref = pytest.mark.skipif(not hasattr(ref, "perturbed_matmul_int8"),
                                    reason="the int8 reference is on the int8 branch (not merged here)")


@needs_int8_ref
def test_perturbed_matmul_int8_extremes():
    n = 1 << 16                                       # the largest n: int32 sums at their limit
    for v in (127, -128):
        x = np.full((2, n), v, np.int8)
        W = np.full((3, n), -128, np.int8)
        key = dict(members=range(2), epoch=0, seed=1, rank=4, sigma_shift=0, fixed_point=7)
        y = ecp.perturbed_matmul_int8(cp.asarray(x), cp.asarray(W), **key)
        np.testing.assert_array_equal(y.get(), ref.perturbed_matmul_int8(x, W, **key))


@needs_int8_ref
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
    np.testing.assert_array_equal(loaded.params["W"], es.params["W"].get())
    for other in (resumed,):
        fit = -cp.square(other.ask().linear("W", x)).sum(axis=1)
        fit0 = -cp.square(es.ask().linear("W", x)).sum(axis=1)
        np.testing.assert_array_equal(fit.get(), fit0.get())       # same device, same bits
        other.tell(fit)
        es.tell(fit0)
        np.testing.assert_array_equal(other.params["W"].get(), es.params["W"].get())
