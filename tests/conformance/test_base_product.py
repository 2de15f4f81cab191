"""The base-product option of the float forwards (docs/ops.md "The base product"): `base=
'framework'` takes x W^T from the framework's own matmul (BLAS / MKL / XLA) and adds eggroll's
correction - equal to the reference within the derived tolerance on every backend; the default
('deterministic') is unchanged; the global setting (eggroll.set_base_product) is the default of
every call; bad values are named errors."""
from __future__ import annotations

import numpy as np
import pytest

import eggroll
from eggroll import reference as ref

from conftest import (assert_close_derived, forward_inputs, fullrank_forward_magnitude,
                      lowrank_forward_magnitude, on, stream_rows)

KEY = dict(epoch=3, seed=77, param_id=2, sigma=0.3)
M = 6


@pytest.fixture
def restore_base():
    yield
    eggroll.set_base_product("deterministic")


@pytest.mark.parametrize("b", [None, 5])
@pytest.mark.parametrize("rank", [1, 3])
@pytest.mark.parametrize("members", ["range", "index", "none"])
def test_framework_base_matches_reference(b, rank, members, rng, backend):
    x, W = forward_inputs(rng, M, 19, 33, b)
    mem = {"range": range(M), "index": np.array([5, 0, 2, 2, 9, 1]), "none": None}[members]
    key = dict(KEY, members=mem, rank=rank)
    y = on(backend, eggroll.perturbed_matmul, x, W, base="framework", **key)
    assert y.shape == x.shape[:-1] + (19,) and y.dtype == np.float32
    if mem is None:
        r64 = np.asarray(x, np.float64) @ np.asarray(W, np.float64).T
        assert_close_derived(y, r64, x @ W.T, np.abs(x) @ np.abs(W).T, "x @ W.T")
        return
    r64 = ref.perturbed_matmul(x, W, **key, dtype=np.float64)
    A, B = ref.lowrank_factors((19, 33), **key, dtype=np.float64)
    assert_close_derived(y, r64, ref.perturbed_matmul(x, W, **key),
                         lowrank_forward_magnitude(x, W, A, B), "framework base")


def test_framework_base_is_the_frameworks_product(rng, cpu_backend):
    """members=None: exactly the framework's own x @ W.T (n > 256: the core's GEMM sums in
    slices, so its bits usually differ), the deterministic mode exactly the core's."""
    x, W = forward_inputs(rng, M, 23, 700, 4)
    key = dict(KEY, members=None)
    xb, Wb = cpu_backend.array(x), cpu_backend.array(W)
    np.testing.assert_array_equal(on(cpu_backend, eggroll.perturbed_matmul, x, W,
                                     base="framework", **key), cpu_backend.numpy(xb @ Wb.T))
    np.testing.assert_array_equal(on(cpu_backend, eggroll.perturbed_matmul, x, W, **key),
                                  ref.matmul_nt(x.reshape(-1, 700), W).reshape(M, 4, 23))


def test_framework_base_full_rank_and_shared(rng, backend):
    x, W = forward_inputs(rng, M, 7, 11, 3)
    key = dict(KEY, members=range(M))
    y = on(backend, eggroll.perturbed_matmul_full, x, W, base="framework", **key)
    Z, _ = stream_rows(7 * 11, range(M), seed=77, param_id=2, epoch=3, noise_reuse=1, antithetic=True)
    assert_close_derived(y, ref.perturbed_matmul_full(x, W, **key, dtype=np.float64),
                         ref.perturbed_matmul_full(x, W, **key),
                         fullrank_forward_magnitude(x, W, 0.3 * Z.reshape(M, 7, 11)), "full")
    # a shared input [b, n]: the framework's product once, broadcast to every member
    xs = x[0]
    ys = on(backend, eggroll.perturbed_matmul, xs, W, base="framework", shared=True,
            **dict(key, rank=2))
    xm = np.broadcast_to(xs, (M,) + xs.shape)
    k2 = dict(key, rank=2)
    A, B = ref.lowrank_factors((7, 11), **k2, dtype=np.float64)
    assert_close_derived(ys, ref.perturbed_matmul(xm, W, **k2, dtype=np.float64),
                         ref.perturbed_matmul(xm, W, **k2), lowrank_forward_magnitude(xm, W, A, B),
                         "shared framework base")


def test_deterministic_is_the_default_and_unchanged(rng, cpu_backend, restore_base):
    """'deterministic' (the default, per call or global) gives the core's bits: a population
    split in two gives the same bits as the whole (docs/ops.md "The base product")."""
    x, W = forward_inputs(rng, M, 37, 300, None)
    key = dict(KEY, rank=2)
    whole = on(cpu_backend, eggroll.perturbed_matmul, x, W, members=range(M), **key)
    assert eggroll.get_base_product() == "deterministic"
    np.testing.assert_array_equal(
        whole, on(cpu_backend, eggroll.perturbed_matmul, x, W, members=range(M),
                  base="deterministic", **key))
    halves = [on(cpu_backend, eggroll.perturbed_matmul, x[s], W, members=range(M)[s], **key)
              for s in (slice(0, 3), slice(3, M))]
    np.testing.assert_array_equal(whole, np.concatenate(halves))
    eggroll.set_base_product("framework")
    np.testing.assert_array_equal(
        whole, on(cpu_backend, eggroll.perturbed_matmul, x, W, members=range(M),
                  base="deterministic", **key))


def test_global_setting_is_every_calls_default(rng, cpu_backend, restore_base):
    x, W = forward_inputs(rng, M, 9, 40, 2)
    key = dict(KEY, members=range(M))
    want = on(cpu_backend, eggroll.perturbed_matmul, x, W, base="framework", **key)
    eggroll.set_base_product("framework")
    assert eggroll.get_base_product() == "framework"
    np.testing.assert_array_equal(on(cpu_backend, eggroll.perturbed_matmul, x, W, **key), want)
    # out= gets the result in place
    out = np.full(want.shape, np.nan, np.float32)
    assert eggroll.perturbed_matmul(x, W, out=out, **key) is out
    np.testing.assert_array_equal(out, eggroll.perturbed_matmul(x, W, base="framework", **key))


@pytest.mark.parametrize("bad,exc", [("blas", ValueError), ("", ValueError), (1, TypeError),
                                     (True, TypeError)])
def test_bad_base_is_a_named_error(bad, exc, rng, cpu_backend, restore_base):
    x, W = forward_inputs(rng, M, 3, 4, None)
    for fn in (eggroll.perturbed_matmul, eggroll.perturbed_matmul_full):
        with pytest.raises(exc, match="^base: expected 'deterministic' or 'framework'"):
            on(cpu_backend, fn, x, W, members=range(M), base=bad, **KEY)
    with pytest.raises(exc, match="^mode: expected 'deterministic' or 'framework'"):
        eggroll.set_base_product(bad)
    assert eggroll.get_base_product() == "deterministic"
    with pytest.raises(TypeError, match="base"):
        eggroll.perturbed_matmul_int8(np.zeros((M, 4), np.int8), np.zeros((3, 4), np.int8),
                                      members=range(M), epoch=0, seed=1, sigma_shift=4,
                                      base="framework")


def test_torch_autograd_in_framework_mode(rng):
    """The correction's backward without the base terms, plus torch's own for x @ W.T: the
    same gradients as the deterministic mode (within float32 rounding)."""
    torch = pytest.importorskip("torch")
    x, W = forward_inputs(rng, M, 8, 12, 3)
    grads = []
    for base in ("deterministic", "framework"):
        xt = torch.from_numpy(x.copy()).requires_grad_()
        Wt = torch.from_numpy(W.copy()).requires_grad_()
        y = eggroll.perturbed_matmul(xt, Wt, members=range(M), rank=2, base=base, **KEY)
        (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
        grads.append((xt.grad.numpy(), Wt.grad.numpy()))
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
