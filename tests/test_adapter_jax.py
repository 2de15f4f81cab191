"""What only JAX has (the ops themselves are checked on every backend by tests/conformance):
jit with traced keys (one compilation), eager calls without re-tracing, vmap (folding into one
call; an unbatched x as a shared input), scan, trace-time errors and runtime errors on traced
values, subnormals on XLA's threads, and eggroll.jax.ES with optax; the int8 ops likewise."""
from __future__ import annotations

import os

import numpy as np
import pytest

if os.environ.get("EGGROLL_REQUIRE_JAX") == "1":
    # CI installs the jax extra and builds the handlers: a skip there would hide a broken build.
    import jax
    import jax.numpy as jnp
    import optax

    import eggroll._xla_ffi  # noqa: F401
else:
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    optax = pytest.importorskip("optax")
    pytest.importorskip("eggroll._xla_ffi", reason="eggroll was built without the JAX handlers")

import eggroll  # noqa: E402
import eggroll.jax as ej  # noqa: E402
from eggroll import reference as ref  # noqa: E402

from conftest import ffi_call_count, forward_inputs  # noqa: E402

SEED = 0x0123456789ABCDEF            # uses both 32-bit words of the seed operand
PARAM_ID = 11
EPOCH = 7
M = 5


# These test the CPU handlers (bit for bit against NumPy), also on a machine with a CUDA
# jaxlib, where tests/test_jax_cuda.py covers the CUDA handlers.
pytestmark = pytest.mark.usefixtures("jax_on_cpu")


_inputs = forward_inputs


def _key(members, **kw):
    base = dict(members=members, epoch=EPOCH, seed=SEED, param_id=PARAM_ID, sigma=0.3)
    base.update(kw)
    return base


def test_integer_fitness_is_accepted():
    f = jnp.array([3, 1, 2, 2], jnp.int32)
    np.testing.assert_array_equal(np.asarray(eggroll.centered_rank(f)),
                                  np.array([0.5, -0.5, 0.0, 0.0], np.float32))


# ------------------------------------------------------------------------------------------
# jit, traced keys, recompilation, vmap, scan
# ------------------------------------------------------------------------------------------

def test_jit_with_traced_seed_epoch_members_compiles_once(rng):
    x, W = _inputs(rng, 6, 9, 13, None)
    seed_words = np.uint32(12345)

    @jax.jit
    def step(x, W, members, seed, epoch):
        return eggroll.perturbed_matmul(x, W, members=members, epoch=epoch, seed=seed,
                                        sigma=0.1, rank=2, param_id=3)

    for epoch in range(4):
        members = np.arange(6, dtype=np.int32) + 2 * epoch
        y = step(jnp.asarray(x), jnp.asarray(W), jnp.asarray(members), jnp.uint32(seed_words),
                 jnp.int32(epoch))
        np.testing.assert_array_equal(np.asarray(y), eggroll.perturbed_matmul(
            x, W, members=members, epoch=epoch, seed=int(seed_words), sigma=0.1, rank=2,
            param_id=3))
    assert step._cache_size() == 1


def test_jit_es_gradient_traced_epoch(rng):
    f = rng.standard_normal(10).astype(np.float32)
    grad = jax.jit(lambda f, e: eggroll.es_gradient(f, (4, 6), epoch=e, seed=SEED, sigma=0.2))
    for epoch in (0, 5, 2**31 - 1):
        np.testing.assert_array_equal(
            np.asarray(grad(jnp.asarray(f), jnp.int32(epoch))),
            eggroll.es_gradient(f, (4, 6), epoch=epoch, seed=SEED, sigma=0.2))
    assert grad._cache_size() == 1


def test_vmap_over_members_is_one_call_with_shared_W(rng):
    """A per-member function vmapped over the population folds into ONE ffi call over all
    members (W stays [m, n]), and equals the batched call bit for bit."""
    x, W = _inputs(rng, 8, 7, 11, 3)
    Wj = jnp.asarray(W)

    def member(xi, i):   # xi [b, n], i scalar -> [b, m]
        return eggroll.perturbed_matmul(xi[None], Wj, members=i[None], epoch=4, seed=9,
                                        sigma=0.2, rank=2)[0]

    f = jax.jit(jax.vmap(member))
    y = f(jnp.asarray(x), jnp.arange(8))
    np.testing.assert_array_equal(np.asarray(y), eggroll.perturbed_matmul(
        x, W, members=range(8), epoch=4, seed=9, sigma=0.2, rank=2))
    assert ffi_call_count(jax.vmap(member), jnp.asarray(x), jnp.arange(8)) == 1
    hlo = f.lower(jnp.asarray(x), jnp.arange(8)).as_text()
    assert "tensor<7x11xf32>" in hlo and "tensor<8x7x11xf32>" not in hlo  # W never copied per member


def test_vmap_nested_and_over_shared_x(rng):
    """Shared x with batched members; and a vmap of a vmap (population x environments)."""
    x, W = _inputs(rng, 1, 5, 6, None)
    Wj = jnp.asarray(W)
    one = lambda i: eggroll.perturbed_matmul(jnp.asarray(x), Wj, members=i[None], epoch=1,  # noqa: E731
                                             seed=2, sigma=0.3)[0]
    y = jax.vmap(one)(jnp.arange(4))
    np.testing.assert_array_equal(np.asarray(y), eggroll.perturbed_matmul(
        np.repeat(x, 4, axis=0), W, members=range(4), epoch=1, seed=2, sigma=0.3))
    xs = rng.standard_normal((4, 3, 6)).astype(np.float32)     # [members, envs, n]
    two = jax.vmap(jax.vmap(lambda xi, i: eggroll.perturbed_matmul(
        xi[None], Wj, members=i[None], epoch=1, seed=2, sigma=0.3)[0], in_axes=(0, None)))
    y2 = two(jnp.asarray(xs), jnp.arange(4))
    np.testing.assert_array_equal(np.asarray(y2), eggroll.perturbed_matmul(
        xs, W, members=range(4), epoch=1, seed=2, sigma=0.3))


def test_vmap_with_batched_W_or_epoch_falls_back_correctly(rng):
    x, W = _inputs(rng, 2, 3, 4, None)
    Ws = np.stack([W, 2 * W])
    f = lambda Wi: eggroll.perturbed_matmul(jnp.asarray(x), Wi, members=jnp.arange(2),  # noqa: E731
                                            epoch=0, seed=1, sigma=0.1)
    y = jax.vmap(f)(jnp.asarray(Ws))
    for k in range(2):
        np.testing.assert_array_equal(np.asarray(y[k]), eggroll.perturbed_matmul(
            x, Ws[k], members=range(2), epoch=0, seed=1, sigma=0.1))
    g = lambda e: eggroll.perturb_vector(jnp.ones(3), members=jnp.arange(2), epoch=e,  # noqa: E731
                                         seed=1, sigma=0.1)
    out = jax.vmap(g)(jnp.arange(3, dtype=jnp.int32))
    for e in range(3):
        np.testing.assert_array_equal(np.asarray(out[e]), eggroll.perturb_vector(
            np.ones(3, np.float32), members=range(2), epoch=e, seed=1, sigma=0.1))


def test_vmap_perturb_vector_and_es_gradient(rng):
    v = rng.standard_normal(5).astype(np.float32)
    out = jax.vmap(lambda i: eggroll.perturb_vector(jnp.asarray(v), members=i[None], epoch=2,
                                                    seed=3, sigma=0.4)[0])(jnp.arange(6))
    np.testing.assert_array_equal(np.asarray(out), eggroll.perturb_vector(
        v, members=range(6), epoch=2, seed=3, sigma=0.4))
    fs = rng.standard_normal((3, 8)).astype(np.float32)
    gs = jax.vmap(lambda f: eggroll.es_gradient(f, (4, 5), epoch=1, seed=3, sigma=0.4))(
        jnp.asarray(fs))
    for k in range(3):
        np.testing.assert_array_equal(np.asarray(gs[k]), eggroll.es_gradient(
            fs[k], (4, 5), epoch=1, seed=3, sigma=0.4))


def test_inside_scan_over_epochs(rng):
    """Forward, shaping and estimate in a lax.scan over epochs: every step's ops equal the
    NumPy path's on the same W (the W update itself is XLA's arithmetic, which may fuse
    the multiply-add, so it is not what is compared)."""
    x, W = _inputs(rng, 4, 3, 5, None)

    def body(W, epoch):   # x is a jax array: eggroll.<op> dispatches on its first array
        y = eggroll.perturbed_matmul(jnp.asarray(x), W, members=jnp.arange(4), epoch=epoch,
                                     seed=5, sigma=0.1)
        g = eggroll.es_gradient(eggroll.centered_rank(-jnp.sum(y * y, axis=1)), (3, 5),
                                epoch=epoch, seed=5, sigma=0.1)
        return W + 0.1 * g, (W, y, g)

    _, (Ws, ys, gs) = jax.jit(lambda W: jax.lax.scan(body, W, jnp.arange(3, dtype=jnp.int32)))(
        jnp.asarray(W))
    np.testing.assert_array_equal(np.asarray(Ws[0]), W)
    for epoch in range(3):
        We = np.asarray(Ws[epoch])
        y = eggroll.perturbed_matmul(x, We, members=range(4), epoch=epoch, seed=5, sigma=0.1)
        np.testing.assert_array_equal(np.asarray(ys[epoch]), y)
        g = eggroll.es_gradient(eggroll.centered_rank(-np.sum(y * y, axis=1)), (3, 5),
                                epoch=epoch, seed=5, sigma=0.1)
        np.testing.assert_array_equal(np.asarray(gs[epoch]), g)
    assert not np.array_equal(np.asarray(Ws[2]), W)   # the scan carried real updates


# ------------------------------------------------------------------------------------------
# trace-time errors (at the call site, inside jit too), and runtime errors on traced values
# ------------------------------------------------------------------------------------------

X = np.ones((4, 3), np.float32)
W3 = np.ones((2, 3), np.float32)
FWD = dict(members=range(4), epoch=0, seed=1, sigma=0.1)


@pytest.mark.parametrize("call,exc,prefix", [
    (lambda x, W: eggroll.perturbed_matmul(x[0], W, **FWD), ValueError, "x:"),
    (lambda x, W: eggroll.perturbed_matmul(x, W.T, **FWD), ValueError, "W:"),
    (lambda x, W: eggroll.perturbed_matmul(x.astype(jnp.int32), W, **FWD), TypeError, "x:"),
    (lambda x, W: eggroll.perturbed_matmul(x, W, **dict(FWD, members=range(3))), ValueError, "members:"),
    (lambda x, W: eggroll.perturbed_matmul(x, W, **dict(FWD, members=[0, -1, 2, 3])), ValueError, "members:"),
    (lambda x, W: eggroll.perturbed_matmul(x, W, **dict(FWD, members=jnp.zeros(4))), TypeError, "members:"),
    (lambda x, W: eggroll.perturbed_matmul(x, W, **dict(FWD, sigma=3.5e38)), ValueError, "sigma:"),
    (lambda x, W: eggroll.perturbed_matmul(x, W, **dict(FWD, rank=0)), ValueError, "rank:"),
    (lambda x, W: eggroll.perturbed_matmul(x, W, **dict(FWD, sigma=float("nan"))), ValueError, "sigma:"),
    (lambda x, W: eggroll.perturbed_matmul(x, W, **dict(FWD, sigma=x[0, 0])), TypeError, "sigma:"),
    (lambda x, W: eggroll.perturbed_matmul(x, W, **dict(FWD, epoch=-1)), ValueError, "epoch:"),
    (lambda x, W: eggroll.perturbed_matmul(x, W, **dict(FWD, epoch=x[0, 0])), TypeError, "epoch:"),
    (lambda x, W: eggroll.perturbed_matmul(x, W, **dict(FWD, seed=-1)), ValueError, "seed:"),
    (lambda x, W: eggroll.perturbed_matmul(x, W, **dict(FWD, seed=jnp.ones(3, jnp.int32))), ValueError, "seed:"),
    (lambda x, W: eggroll.perturbed_matmul(x, W, **FWD, out=x), TypeError, "out:"),
    (lambda x, W: eggroll.perturb_vector(x, **FWD), ValueError, "v:"),
    (lambda x, W: eggroll.es_gradient(x[0, :3], (2, 3), epoch=0, seed=1, sigma=0.1), ValueError, "fitness:"),
    (lambda x, W: eggroll.es_gradient(x[:, 0], (2, 0), epoch=0, seed=1, sigma=0.1), ValueError, "shape:"),
    (lambda x, W: eggroll.es_gradient(x[:, 0], (2, 3), epoch=0, seed=1, sigma=0.1, full_rank=1), TypeError, "full_rank:"),
    (lambda x, W: eggroll.centered_rank(x), ValueError, "f:"),
    (lambda x, W: eggroll.centered_rank(x[:, 0] > 0), TypeError, "f:"),
    (lambda x, W: eggroll.zscore(x[:, 0], 3), ValueError, "group_size:"),
    (lambda x, W: eggroll.antithetic_sign(x[:3, 0]), ValueError, "f:"),
    (lambda x, W: ej.lowrank_factors((3,), members=range(2), epoch=0, seed=1, sigma=0.1), ValueError, "shape:"),
])
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_trace_time_errors(call, exc, prefix, jit):
    f = jax.jit(call) if jit else call
    with pytest.raises(exc) as info:
        f(jnp.asarray(X), jnp.asarray(W3))
    assert str(info.value).startswith(prefix), str(info.value)


def test_bad_traced_values_raise_runtime_errors_not_crashes():
    """Values only known at run time (a negative traced epoch or member) come back from the
    handler as an FFI error, which JAX raises as an exception naming the argument."""
    f = jax.jit(lambda e, mem: eggroll.perturbed_matmul(
        jnp.asarray(X), jnp.asarray(W3), members=mem, epoch=e, seed=1, sigma=0.1))
    with pytest.raises(Exception, match="epoch: must be in"):
        jax.block_until_ready(f(jnp.int32(-3), jnp.arange(4)))
    with pytest.raises(Exception, match="members: indices must be >= 0"):
        jax.block_until_ready(f(jnp.int32(0), jnp.array([0, 1, -2, 3])))
    ok = f(jnp.int32(1), jnp.arange(4))     # the process is fine afterwards
    assert np.isfinite(np.asarray(ok)).all()


def test_philox_on_jax_arrays_and_its_trace_error():
    c = np.arange(8, dtype=np.uint32).reshape(2, 4)
    got = eggroll.philox4x32(jnp.asarray(c), np.array([1, 2], np.uint32))
    assert isinstance(got, jax.Array)
    np.testing.assert_array_equal(np.asarray(got), eggroll.philox4x32(c, np.array([1, 2], np.uint32)))
    with pytest.raises(TypeError, match="^counter: philox4x32 takes concrete arrays"):
        jax.jit(lambda c: eggroll.philox4x32(c, np.zeros(2, np.uint32)))(jnp.asarray(c))


def test_eager_calls_do_not_retrace(rng):
    """An eager call is one cached jitted dispatch: the same static configuration with other
    values (x, members, seed, epoch) traces once (it re-traced, ~20 ms, on every call)."""
    from eggroll.jax import _ffi
    x, W = _inputs(rng, 6, 9, 13, None)
    key = dict(epoch=1, seed=2, sigma=0.1, rank=2)
    eggroll.perturbed_matmul(jnp.asarray(x), jnp.asarray(W), members=jnp.arange(6), **key)
    before = _ffi.keyed.cache_info().currsize
    for e in range(3):
        y = eggroll.perturbed_matmul(jnp.asarray(x + e), jnp.asarray(W),
                                     members=jnp.arange(6) + e, **dict(key, epoch=e, seed=e))
        np.testing.assert_array_equal(np.asarray(y), eggroll.perturbed_matmul(
            x + e, W, members=np.arange(6) + e, **dict(key, epoch=e, seed=e)))
    assert _ffi.keyed.cache_info().currsize == before


def test_vmap_with_unbatched_x_is_a_shared_input(rng):
    """The official code's idiom: a per-member forward vmapped over the members with the
    minibatch unbatched. One call, x never broadcast per member, the bits of the
    materialised input; and shared=True inside a vmap over members likewise."""
    xb, W = _inputs(rng, 1, 7, 11, 4)
    Wj, xj = jnp.asarray(W), jnp.asarray(xb[0])          # xb[0]: [b, n]
    key = dict(epoch=4, seed=9, sigma=0.2, rank=2)

    def member(i):
        return eggroll.perturbed_matmul(xj[None], Wj, members=i[None], **key)[0]

    def member_shared(i):
        return eggroll.perturbed_matmul(xj, Wj, members=i[None], shared=True, **key)[0]

    want = eggroll.perturbed_matmul(np.repeat(xb, 8, axis=0), W, members=range(8), **key)
    for fn in (member, member_shared):
        f = jax.jit(jax.vmap(fn))
        np.testing.assert_array_equal(np.asarray(f(jnp.arange(8))), want)
        assert ffi_call_count(jax.vmap(fn), jnp.arange(8)) == 1
        assert "tensor<8x4x11xf32>" not in f.lower(jnp.arange(8)).as_text()   # no copies of x


def test_subnormal_inputs_give_the_numpy_bits():
    """XLA's threads flush subnormals to zero (FTZ/DAZ); the handlers run the core with IEEE
    arithmetic, so tiny inputs, sigma and products give NumPy's bits (they were 0)."""
    x = np.full((4, 16), 1e-39, np.float32)            # subnormal inputs
    W = np.full((3, 16), 1e-3, np.float32)
    key = dict(members=range(4), epoch=0, seed=1, sigma=1e-40)
    want = eggroll.perturbed_matmul(x, W, **key)
    assert np.any(want != 0)
    np.testing.assert_array_equal(np.asarray(jax.jit(lambda x, W: eggroll.perturbed_matmul(
        x, W, **key))(jnp.asarray(x), jnp.asarray(W))), want)
    v = np.full(5, 1e-39, np.float32)
    np.testing.assert_array_equal(np.asarray(eggroll.perturb_vector(jnp.asarray(v), **key)),
                                  eggroll.perturb_vector(v, **key))


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_huge_shapes_and_sigmas_are_value_errors_not_aborts(jit):
    """es_gradient with a shape beyond int64 or the stream (it aborted the process inside
    jaxlib), and sigma beyond float32 (a JaxRuntimeError): ValueErrors at trace time."""
    f = jnp.ones(4)
    for shape in ((2**62, 4), (2**33, 2**33), (2**40,)):
        call = lambda f: eggroll.es_gradient(f, shape, epoch=0, seed=1, sigma=0.1)  # noqa: E731
        with pytest.raises(ValueError, match="^shape:"):
            (jax.jit(call) if jit else call)(f)
    call = lambda f: eggroll.es_gradient(f, (2, 2), epoch=0, seed=1, sigma=1e39)  # noqa: E731
    with pytest.raises(ValueError, match="^sigma:"):
        (jax.jit(call) if jit else call)(f)


def test_concrete_nan_fitness_is_a_value_error():
    """Concrete NaN fitness is read at the call (ValueError, as on NumPy): it was a
    JaxRuntimeError from the handler. Traced NaN still fails in the handler (documented)."""
    for call in (lambda f: eggroll.centered_rank(f), lambda f: eggroll.zscore(f),
                 lambda f: eggroll.es_gradient(f, (2, 2), epoch=0, seed=1, sigma=0.1)):
        with pytest.raises(ValueError, match="NaN or inf"):
            call(jnp.array([1.0, jnp.nan]))


# ------------------------------------------------------------------------------------------
# eggroll.jax.ES
# ------------------------------------------------------------------------------------------

def _mlp(rng):
    return {"W1": (rng.standard_normal((8, 5)) * 0.3).astype(np.float32),
            "b1": np.zeros(8, np.float32),
            "W2": (rng.standard_normal((1, 8)) * 0.3).astype(np.float32),
            "b2": np.zeros(1, np.float32)}


def test_es_gradient_pytree_equals_numpy_trainer(rng):
    """Same leaf names -> same param_ids -> the NumPy trainer's SGD step, bit for bit
    (optax gets minus the ascent estimate)."""
    P = _mlp(rng)
    fit = rng.standard_normal(16).astype(np.float32)
    es = ej.ES(jax.tree_util.tree_map(jnp.asarray, P), sigma=0.05, population=16, seed=3)
    grads = es.gradient(jax.tree_util.tree_map(jnp.asarray, P), jnp.asarray(fit), 0)
    np_es = eggroll.ES(P, sigma=0.05, lr=1.0, population=16, seed=3, optimizer="sgd")
    np_es.tell(fit)
    for name in P:
        np.testing.assert_array_equal(P[name] - np.asarray(grads[name]), np_es.params[name])


def test_es_population_matches_ops_and_exclude(rng):
    P = {"enc": [{"W": jnp.asarray(rng.standard_normal((3, 4)).astype(np.float32)),
                  "s": jnp.ones((2, 1, 2))}]}
    es = ej.ES(P, sigma=0.1, population=4, seed=7, exclude=["enc/0/s"])
    assert es.names == ["enc/0/W", "enc/0/s"]
    pop = es.ask(P, 2)
    x = rng.standard_normal((4, 4)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(pop.linear("enc/0/W", x)), eggroll.perturbed_matmul(
        x, np.asarray(P["enc"][0]["W"]), members=range(4), epoch=2, seed=7,
        param_id=ej.param_id("enc/0/W"), sigma=0.1))
    np.testing.assert_array_equal(np.asarray(pop.vector("enc/0/s")), np.ones((4, 2, 1, 2)))
    g = es.gradient(P, jnp.arange(4.0), 2)
    assert np.count_nonzero(np.asarray(g["enc"][0]["s"])) == 0
    assert np.count_nonzero(np.asarray(g["enc"][0]["W"])) > 0
    with pytest.raises(ValueError, match="^exclude:"):
        ej.ES(P, sigma=0.1, population=4, exclude=["nope"])
    with pytest.raises(ValueError, match="^population:"):
        ej.ES(P, sigma=0.1, population=5)
    with pytest.raises(ValueError, match="^name:"):
        pop.linear("enc/0/s", x)
    with pytest.raises(ValueError, match="^x:"):
        pop.linear("enc/0/W", x[:3])


@pytest.mark.parametrize("exclude", [(), ("W1",)])
def test_es_linear_shared_input_equals_the_broadcast_one(rng, exclude):
    """pop.linear(name, xb, shared=True), xb [b, n] or [n]: the same bits as
    jnp.broadcast_to(xb, (M,) + xb.shape), eager, jitted (traced epoch) and for a block."""
    P = jax.tree_util.tree_map(jnp.asarray, _mlp(rng))
    es = ej.ES(P, sigma=0.1, population=8, rank=2, seed=4, exclude=exclude)
    xb = jnp.asarray(rng.standard_normal((3, 5)).astype(np.float32))

    def both(params, epoch, xb, members=None):
        pop = es.ask(params, epoch, members=members)
        M = len(pop)
        return (pop.linear("W1", xb, bias="b1", shared=True),
                pop.linear("W1", jnp.broadcast_to(xb, (M,) + xb.shape), bias="b1"),
                pop.linear("W1", xb[0], shared=True),
                pop.linear("W1", jnp.broadcast_to(xb[0], (M, 5))))

    for a, b, c, d in (both(P, 3, xb), jax.jit(both)(P, 3, xb), both(P, 2, xb, range(2, 6))):
        assert a.shape[1:] == (3, 8) and c.shape[1:] == (8,)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        np.testing.assert_array_equal(np.asarray(c), np.asarray(d))
    with pytest.raises(ValueError, match="^x: a shared input"):
        es.ask(P, 0).linear("W1", jnp.zeros((8, 3, 5)), shared=True)


def test_es_trains_a_toy_regression_with_optax_in_one_compilation(rng):
    P = jax.tree_util.tree_map(jnp.asarray, _mlp(rng))
    N = 64
    es = ej.ES(P, sigma=0.05, population=N, seed=3)
    X = rng.standard_normal((32, 5)).astype(np.float32)
    Y = np.sin(X.sum(1, keepdims=True) / 2).astype(np.float32)
    Xb = jnp.broadcast_to(jnp.asarray(X), (N,) + X.shape)
    opt = optax.adam(0.03)

    def loss_of(y):
        return jnp.mean((y - Y) ** 2, axis=(-2, -1))

    @jax.jit
    def step(params, state, epoch):
        pop = es.ask(params, epoch)
        h = jnp.tanh(pop.linear("W1", Xb, bias="b1"))
        fitness = -loss_of(pop.linear("W2", h, bias="b2"))
        updates, state = opt.update(es.gradient(params, fitness, epoch), state, params)
        return optax.apply_updates(params, updates), state

    def mean_loss(p):
        return float(loss_of(jnp.tanh(X @ p["W1"].T + p["b1"]) @ p["W2"].T + p["b2"]))

    before = mean_loss(P)
    state = opt.init(P)
    for epoch in range(150):
        P, state = step(P, state, jnp.int32(epoch))
    assert step._cache_size() == 1
    assert mean_loss(P) < 0.25 * before, (before, mean_loss(P))


# ------------------------------------------------------------------------------------------
# the int8 ops under jit and vmap
# ------------------------------------------------------------------------------------------

KEY = dict(epoch=3, seed=(1 << 63) + 12345, param_id=7)   # both 32-bit seed words in use


def _rand_int8(rng, shape):
    return rng.integers(-127, 128, size=shape, dtype=np.int8)


def test_int8_jit_with_traced_key_compiles_once():
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


def test_int8_vmap_over_members_folds_into_one_call():
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


def test_int8_traced_bad_values_fail_in_the_handler():
    """Values only known at run time are checked by the C++ core: an error naming the
    argument, never a crash or a silently wrapped value."""
    W = jnp.zeros((3, 4), jnp.int8)
    upd = jax.jit(lambda f: ej.int8_update(W, f, threshold=1, epoch=0, seed=0))
    with pytest.raises(Exception, match="pair_fitness: values must be"):
        upd(jnp.asarray([0.5, 1.0], jnp.float32)).block_until_ready()
    with pytest.raises(Exception, match="pair_fitness: values must be"):
        upd(jnp.asarray([257, 1], jnp.int32)).block_until_ready()
    fwd = jax.jit(lambda e: ej.perturbed_matmul_int8(jnp.zeros((2, 4), jnp.int8), W,
                                                     members=range(2), epoch=e, seed=0,
                                                     sigma_shift=1))
    with pytest.raises(Exception, match="epoch:"):
        fwd(jnp.int32(-1)).block_until_ready()


X8, W8 = np.zeros((2, 4), np.int8), np.zeros((3, 4), np.int8)


@pytest.mark.parametrize("call,exc,msg", [
    (lambda: ej.perturbed_matmul_int8(jnp.zeros((2, 4)), W8, members=range(2), epoch=0, seed=0, sigma_shift=1),
     TypeError, "^x: expected dtype int8"),
    (lambda: ej.perturbed_matmul_int8(jnp.asarray(X8), W8.astype(np.int32), members=range(2), epoch=0, seed=0,
                                      sigma_shift=1), TypeError, "^W: expected dtype int8"),
    (lambda: ej.perturbed_matmul_int8(jnp.asarray(X8), np.zeros((3, 5), np.int8),
                                      members=range(2), epoch=0, seed=0, sigma_shift=1), ValueError, "^W: expected"),
    (lambda: ej.perturbed_matmul_int8(jnp.zeros((2,), jnp.int8), W8, members=range(2), epoch=0, seed=0,
                                      sigma_shift=1), ValueError, "^x: expected \\[M, n\\] or"),
    (lambda: ej.perturbed_matmul_int8(jnp.asarray(X8), W8, members=range(3), epoch=0, seed=0, sigma_shift=1),
     ValueError, "^members"),
    (lambda: ej.perturbed_matmul_int8(jnp.asarray(X8), W8, members=range(2), epoch=0, seed=0, sigma_shift=33),
     ValueError, "^sigma_shift"),
    (lambda: ej.perturbed_matmul_int8(jnp.asarray(X8), W8, members=range(2), epoch=0, seed=0, sigma_shift=1,
                                      fixed_point=8), ValueError, "^fixed_point"),
    (lambda: ej.perturbed_matmul_int8(jnp.asarray(X8), W8, members=range(2), epoch=0, seed=0, sigma_shift=1,
                                      rank=0), ValueError, "^rank"),
    (lambda: ej.perturbed_matmul_int8(jnp.asarray(X8), W8, members=range(2), seed=0, sigma_shift=1,
                                      epoch=-1), ValueError, "^epoch"),
    (lambda: ej.perturbed_matmul_int8(jnp.asarray(X8), W8, members=range(2), epoch=0, seed=0, sigma_shift=1,
                                      out=X8), TypeError, "^out"),
    (lambda: jax.jit(lambda r: ej.perturbed_matmul_int8(jnp.asarray(X8), W8, members=range(2), epoch=0, seed=0,
                                                        sigma_shift=1, rank=r))(1),
     TypeError, "^rank: must be a static"),
    (lambda: ej.int8_update(jnp.asarray(W8), np.array([2]), threshold=1, epoch=0, seed=0), ValueError,
     "^pair_fitness: values"),
    (lambda: ej.int8_update(jnp.asarray(W8), np.array([[1]]), threshold=1, epoch=0, seed=0), ValueError,
     "^pair_fitness: expected a 1-D"),
    (lambda: ej.int8_update(jnp.asarray(W8), np.array([True]), threshold=1, epoch=0, seed=0), TypeError,
     "^pair_fitness"),
    (lambda: ej.int8_update(jnp.asarray(W8), np.array([1]), threshold=0, epoch=0, seed=0), ValueError,
     "^threshold"),
    (lambda: ej.int8_update(jnp.asarray(W8, jnp.float32), np.array([1]), threshold=1, epoch=0, seed=0),
     TypeError, "^W: expected dtype int8"),
    (lambda: jax.jit(lambda t: ej.int8_update(jnp.asarray(W8), np.array([1]), threshold=t, epoch=0, seed=0))(1),
     TypeError, "^threshold: must be a static"),
])
def test_int8_errors_name_the_argument(call, exc, msg):
    with pytest.raises(exc, match=msg):
        call()


def test_bench_peers_jax_candidates_agree_and_run():
    """bench_peers --backend jax: every timed callable runs, and the idiom's maths on
    eggroll's own factors equals eggroll's forward (so the comparison is like for like)."""
    from eggroll.bench import peers_jax
    fwd, upd, info = peers_jax.make_fns(8, 16, 12, 2)
    for fn in (*fwd.values(), *upd.values()):
        fn()
    # y = x W^T + correction with x ~ N(0, 1), W ~ N(0, 1/n), n = 12: |terms| summed per
    # output <= ~n * 4 * 4/sqrt(n) ~ 55; two float32 evaluations in different orders differ by
    # at most ~2 n eps32 times that: 2 * 12 * 6e-8 * 55 ~ 8e-5.
    assert info["check_max_abs_diff"] <= 2 * 12 * np.finfo(np.float32).eps / 2 * 55
