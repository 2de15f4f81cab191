"""The int8 ops on jax.Arrays (XLA FFI): bit for bit against the int64 reference and the NumPy
path, jit with a traced key (one compilation), vmap over the population, argument errors."""
from __future__ import annotations

import os

import numpy as np
import pytest

if os.environ.get("EGGROLL_REQUIRE_JAX") == "1":
    # CI installs the jax extra and builds the handlers: a skip there would hide a broken build.
    import jax
    import jax.numpy as jnp

    import eggroll._xla_ffi  # noqa: F401
else:
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    pytest.importorskip("eggroll._xla_ffi", reason="eggroll was built without the JAX handlers")

import eggroll  # noqa: E402
import eggroll.jax as ej  # noqa: E402
from eggroll import reference as ref  # noqa: E402

from conftest import ffi_call_count  # noqa: E402

KEY = dict(epoch=3, seed=(1 << 63) + 12345, param_id=7)   # both 32-bit seed words in use


# These test the CPU handlers (bit for bit against NumPy), also on a machine with a CUDA
# jaxlib, where tests/test_jax_cuda.py covers the CUDA handlers.
pytestmark = pytest.mark.usefixtures("jax_on_cpu")


def _rand_int8(rng, shape):
    return rng.integers(-127, 128, size=shape, dtype=np.int8)


@pytest.mark.parametrize("shape_x,m,rank,antithetic,sigma_shift,fixed_point", [
    ((6, 17), 5, 1, True, 3, 4), ((4, 3, 33), 9, 2, True, 0, 4),
    ((5, 64), 97, 1, False, 5, 2), ((3, 2, 40), 6, 2, False, 1, 7)])
def test_forward_matches_reference_and_numpy(shape_x, m, rank, antithetic, sigma_shift,
                                             fixed_point):
    rng = np.random.default_rng(1)
    x, W = _rand_int8(rng, shape_x), _rand_int8(rng, (m, shape_x[-1]))
    members = np.arange(2, 2 + shape_x[0])
    kw = dict(KEY, rank=rank, sigma_shift=sigma_shift, fixed_point=fixed_point,
              antithetic=antithetic)
    want = ref.perturbed_matmul_int8(x, W, members=members, **kw)
    got = eggroll.perturbed_matmul_int8(jnp.asarray(x), jnp.asarray(W),
                                        members=jnp.asarray(members), **kw)
    assert isinstance(got, jax.Array) and got.dtype == jnp.int8 and got.shape == want.shape
    np.testing.assert_array_equal(np.asarray(got), want)
    np.testing.assert_array_equal(np.asarray(got), eggroll.perturbed_matmul_int8(
        x, W, members=members, **kw))
    # members as a Python range (checked and converted at trace time)
    np.testing.assert_array_equal(np.asarray(ej.perturbed_matmul_int8(
        jnp.asarray(x), jnp.asarray(W), members=range(2, 2 + shape_x[0]), **kw)), want)
    unperturbed = ej.perturbed_matmul_int8(jnp.asarray(x), jnp.asarray(W), members=None, **kw)
    np.testing.assert_array_equal(np.asarray(unperturbed),
                                  ref.perturbed_matmul_int8(x, W, members=None, **kw))


def test_forward_perturbation_changes_the_result():
    """Guards against a handler that ignores members (the equality tests would still pass
    if the reference and the handler both dropped the correction on some path)."""
    rng = np.random.default_rng(4)
    x, W = _rand_int8(rng, (8, 32)), _rand_int8(rng, (16, 32))
    kw = dict(KEY, rank=2, sigma_shift=0, fixed_point=4)
    y = np.asarray(ej.perturbed_matmul_int8(jnp.asarray(x), jnp.asarray(W), members=range(8),
                                            **kw))
    y0 = np.asarray(ej.perturbed_matmul_int8(jnp.asarray(x), jnp.asarray(W), members=None, **kw))
    assert (y != y0).any()
    np.testing.assert_array_equal(y, ref.perturbed_matmul_int8(x, W, members=range(8), **kw))


def test_jit_with_traced_key_compiles_once():
    rng = np.random.default_rng(2)
    x, W = _rand_int8(rng, (6, 2, 24)), _rand_int8(rng, (7, 24))

    @jax.jit
    def step(x, W, members, seed, epoch):
        return eggroll.perturbed_matmul_int8(x, W, members=members, epoch=epoch, seed=seed,
                                             rank=2, sigma_shift=2, param_id=3)

    for epoch in (0, 1, 5, 2**31 - 1):
        members = np.arange(6, dtype=np.int32) + 2 * (epoch % 7)
        y = step(jnp.asarray(x), jnp.asarray(W), jnp.asarray(members), jnp.uint32(999),
                 jnp.int32(epoch))
        np.testing.assert_array_equal(np.asarray(y), ref.perturbed_matmul_int8(
            x, W, members=members, epoch=epoch, seed=999, rank=2, sigma_shift=2, param_id=3))
    assert step._cache_size() == 1


def test_vmap_over_members_folds_into_one_call():
    rng = np.random.default_rng(5)
    x, W = _rand_int8(rng, (6, 3, 16)), _rand_int8(rng, (5, 16))
    Wj = jnp.asarray(W)
    kw = dict(KEY, rank=2, sigma_shift=1)

    def member(xi, i):  # xi [b, n], i scalar -> [b, m]
        return eggroll.perturbed_matmul_int8(xi[None], Wj, members=i[None], **kw)[0]

    y = jax.jit(jax.vmap(member))(jnp.asarray(x), jnp.arange(6))
    np.testing.assert_array_equal(np.asarray(y),
                                  ref.perturbed_matmul_int8(x, W, members=range(6), **kw))
    assert ffi_call_count(jax.vmap(member), jnp.asarray(x), jnp.arange(6)) == 1


def test_update_matches_reference_and_numpy():
    rng = np.random.default_rng(3)
    W = _rand_int8(rng, (13, 21))
    f = rng.integers(-1, 2, size=8).astype(np.int8)
    kw = dict(KEY, rank=2, fixed_point=4, threshold=3)
    want = ref.int8_update(W, f, **kw)
    assert (want != W).any()  # the threshold lets some entries move
    got = eggroll.int8_update(jnp.asarray(W), jnp.asarray(f), **kw)
    assert isinstance(got, jax.Array) and got.dtype == jnp.int8
    np.testing.assert_array_equal(np.asarray(got), want)
    np.testing.assert_array_equal(np.asarray(got), eggroll.int8_update(W, f, **kw))
    # float pair_fitness, as antithetic_sign returns it
    got_f = ej.int8_update(jnp.asarray(W), jnp.asarray(f, jnp.float32), **kw)
    np.testing.assert_array_equal(np.asarray(got_f), want)


def test_update_jit_traced_epoch_and_fitness_compiles_once():
    rng = np.random.default_rng(6)
    W = _rand_int8(rng, (9, 12))
    upd = jax.jit(lambda W, f, e: eggroll.int8_update(W, f, threshold=2, epoch=e, seed=41,
                                                      rank=1, noise_reuse=2))
    for epoch in (0, 3, 8):
        f = rng.integers(-1, 2, size=6).astype(np.float32)
        np.testing.assert_array_equal(
            np.asarray(upd(jnp.asarray(W), jnp.asarray(f), jnp.int32(epoch))),
            ref.int8_update(W, f.astype(np.int8), threshold=2, epoch=epoch, seed=41, rank=1,
                            noise_reuse=2))
    assert upd._cache_size() == 1


def test_update_under_vmap_over_epochs():
    """int8_update batched over epochs (vmap_method="sequential"): one update per epoch."""
    rng = np.random.default_rng(7)
    W = _rand_int8(rng, (6, 10))
    f = np.array([1, -1, 1, 0], np.int8)
    epochs = jnp.arange(3, dtype=jnp.int32)
    out = jax.vmap(lambda e: ej.int8_update(jnp.asarray(W), jnp.asarray(f), threshold=1,
                                            epoch=e, seed=3, rank=2))(epochs)
    for e in range(3):
        np.testing.assert_array_equal(np.asarray(out[e]), ref.int8_update(
            W, f, threshold=1, epoch=e, seed=3, rank=2))


def test_traced_bad_values_fail_in_the_handler():
    """Values only known at run time are checked by the C++ core: an error naming the
    argument, never a crash or a silently wrapped value."""
    W = jnp.zeros((3, 4), jnp.int8)
    upd = jax.jit(lambda f: ej.int8_update(W, f, threshold=1, epoch=0, seed=0))
    with pytest.raises(Exception, match="pair_fitness: values must be"):
        upd(jnp.asarray([0.5, 1.0], jnp.float32)).block_until_ready()
    with pytest.raises(Exception, match="pair_fitness: values must be"):
        upd(jnp.asarray([257, 1], jnp.int32)).block_until_ready()
    fwd = jax.jit(lambda e: ej.perturbed_matmul_int8(jnp.zeros((2, 4), jnp.int8), W,
                                                     members=range(2), epoch=e, sigma_shift=1))
    with pytest.raises(Exception, match="epoch:"):
        fwd(jnp.int32(-1)).block_until_ready()


X8, W8 = np.zeros((2, 4), np.int8), np.zeros((3, 4), np.int8)


@pytest.mark.parametrize("call,exc,msg", [
    (lambda: ej.perturbed_matmul_int8(jnp.zeros((2, 4)), W8, members=range(2), sigma_shift=1),
     TypeError, "^x: expected an int8 array"),
    (lambda: ej.perturbed_matmul_int8(jnp.asarray(X8), W8.astype(np.int32), members=range(2),
                                      sigma_shift=1), TypeError, "^W: expected an int8 array"),
    (lambda: ej.perturbed_matmul_int8(jnp.asarray(X8), np.zeros((3, 5), np.int8),
                                      members=range(2), sigma_shift=1), ValueError, "^W: expected"),
    (lambda: ej.perturbed_matmul_int8(jnp.zeros((2,), jnp.int8), W8, members=range(2),
                                      sigma_shift=1), ValueError, "^x: expected a 2-D or 3-D"),
    (lambda: ej.perturbed_matmul_int8(jnp.asarray(X8), W8, members=range(3), sigma_shift=1),
     ValueError, "^members"),
    (lambda: ej.perturbed_matmul_int8(jnp.asarray(X8), W8, members=range(2), sigma_shift=33),
     ValueError, "^sigma_shift"),
    (lambda: ej.perturbed_matmul_int8(jnp.asarray(X8), W8, members=range(2), sigma_shift=1,
                                      fixed_point=8), ValueError, "^fixed_point"),
    (lambda: ej.perturbed_matmul_int8(jnp.asarray(X8), W8, members=range(2), sigma_shift=1,
                                      rank=0), ValueError, "^rank"),
    (lambda: ej.perturbed_matmul_int8(jnp.asarray(X8), W8, members=range(2), sigma_shift=1,
                                      epoch=-1), ValueError, "^epoch"),
    (lambda: ej.perturbed_matmul_int8(jnp.asarray(X8), W8, members=range(2), sigma_shift=1,
                                      out=X8), TypeError, "^out"),
    (lambda: jax.jit(lambda r: ej.perturbed_matmul_int8(jnp.asarray(X8), W8, members=range(2),
                                                        sigma_shift=1, rank=r))(1),
     TypeError, "^rank: must be a static"),
    (lambda: ej.int8_update(jnp.asarray(W8), np.array([2]), threshold=1), ValueError,
     "^pair_fitness: values"),
    (lambda: ej.int8_update(jnp.asarray(W8), np.array([[1]]), threshold=1), ValueError,
     "^pair_fitness: expected a 1-D"),
    (lambda: ej.int8_update(jnp.asarray(W8), np.array([True]), threshold=1), TypeError,
     "^pair_fitness"),
    (lambda: ej.int8_update(jnp.asarray(W8), np.array([1]), threshold=0), ValueError,
     "^threshold"),
    (lambda: ej.int8_update(jnp.asarray(W8, jnp.float32), np.array([1]), threshold=1),
     TypeError, "^W: expected an int8 array"),
    (lambda: jax.jit(lambda t: ej.int8_update(jnp.asarray(W8), np.array([1]), threshold=t))(1),
     TypeError, "^threshold: must be a static"),
])
def test_errors_name_the_argument(call, exc, msg):
    with pytest.raises(exc, match=msg):
        call()
