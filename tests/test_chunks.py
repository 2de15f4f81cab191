"""Chunked evaluation in the three trainers (NumPy / torch pop.chunks(size), JAX
pop.map_chunks(fn, *xs, size=...)): every chunk size gives each member the rows of the
undivided population bit for bit, shared and per-member inputs alike, so a training run is
the same whatever the split; bad arguments are errors naming them."""
from __future__ import annotations

import numpy as np
import pytest

import eggroll

N = 14                                   # 7 antithetic pairs: odd chunk sizes split pairs
SIZES = [1, 3, 4, 7, N, N + 5]


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {"W1": rng.standard_normal((5, 7)).astype(np.float32),
            "b1": rng.standard_normal(5).astype(np.float32),
            "W2": rng.standard_normal((3, 5)).astype(np.float32),
            "b2": rng.standard_normal(3).astype(np.float32)}


def _data(M=N, seed=1):
    """A shared batch [4, 7] and per-member rows [M, 4, 7] (not copies of one batch)."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((4, 7)).astype(np.float32),
            rng.standard_normal((M, 4, 7)).astype(np.float32))


def _fitness(y):
    return -np.square(y - 0.5).mean(axis=(1, 2))


# ------------------------------------------------------------------------------------------
# chunk_size
# ------------------------------------------------------------------------------------------

def test_chunk_size_fits_the_cache_budget_with_a_floor():
    assert eggroll.chunk_size(256 * 256, cache_bytes=4 << 20) == 16
    assert eggroll.chunk_size(256 * 256, cache_bytes=4 << 20, min_members=32) == 32
    assert eggroll.chunk_size(256 * 4096, cache_bytes=4 << 20) == 8          # the floor
    assert eggroll.chunk_size(1, cache_bytes=4 << 20, min_members=1) == 1 << 20
    assert eggroll.chunk_size(256 * 4096) >= 1


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(floats_per_member=0), ValueError, "^floats_per_member: must be in"),
    (dict(floats_per_member=2.5), TypeError, "^floats_per_member: expected an int"),
    (dict(floats_per_member=8, cache_bytes=0), ValueError, "^cache_bytes: must be in"),
    (dict(floats_per_member=8, min_members=0), ValueError, "^min_members: must be in"),
    (dict(floats_per_member=True), TypeError, "^floats_per_member: expected an int"),
])
def test_chunk_size_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        eggroll.chunk_size(**kwargs)


# ------------------------------------------------------------------------------------------
# NumPy: eggroll.ES
# ------------------------------------------------------------------------------------------

def _np_forward(pop, x, shared):
    h = np.tanh(pop.linear("W1", x, bias="b1", shared=shared))
    return pop.linear("W2", h, bias="b2")


@pytest.mark.parametrize("full_rank", [False, True])
@pytest.mark.parametrize("size", SIZES)
def test_numpy_chunks_equal_the_undivided_population(size, full_rank):
    es = eggroll.ES(_params(), sigma=0.1, lr=0.1, population=N, rank=2, seed=7,
                    full_rank=full_rank, frozen=["b2"])
    xs, xm = _data()
    pop = es.ask()
    whole_s, whole_m = _np_forward(pop, xs, True), _np_forward(pop, xm, False)
    subs = pop.chunks(size)
    assert [len(s) for s in subs] == [min(size, N - lo) for lo in range(0, N, size)]
    for sub in subs:
        assert sub.members == range(sub.rows.start, sub.rows.stop)
        np.testing.assert_array_equal(_np_forward(sub, xs, True), whole_s[sub.rows])
        np.testing.assert_array_equal(_np_forward(sub, xm[sub.rows], False), whole_m[sub.rows])


def test_numpy_chunks_of_a_member_block_keep_its_members():
    es = eggroll.ES(_params(), sigma=0.1, lr=0.1, population=N, seed=7)
    xs, _ = _data()
    block = es.ask(members=range(3, 11))
    whole = _np_forward(es.ask(), xs, True)
    subs = block.chunks(3)
    assert [s.members for s in subs] == [range(3, 6), range(6, 9), range(9, 11)]
    assert [s.rows for s in subs] == [slice(0, 3), slice(3, 6), slice(6, 8)]
    got = np.concatenate([_np_forward(s, xs, True) for s in subs])
    np.testing.assert_array_equal(got, whole[3:11])


@pytest.mark.parametrize("shared", [True, False])
def test_numpy_chunked_training_equals_the_undivided_run(shared):
    """Adam, 4 steps: the parameters after a chunked run equal the undivided run's."""
    runs = []
    for size in (None, 3):
        es = eggroll.ES(_params(), sigma=0.1, lr=0.05, population=N, optimizer="adam", seed=3)
        for step in range(4):
            xs, xm = _data(seed=10 + step)
            x = xs if shared else xm
            pop = es.ask()
            if size is None:
                f = _fitness(_np_forward(pop, x, shared))
            else:
                f = np.empty(N)
                for sub in pop.chunks(size):
                    f[sub.rows] = _fitness(_np_forward(sub, x if shared else x[sub.rows],
                                                       shared))
            es.tell(f)
        runs.append(es.params)
    for name, p in runs[0].items():
        np.testing.assert_array_equal(runs[1][name], p)


@pytest.mark.parametrize("size,exc,match", [
    (0, ValueError, r"^size: must be in \[1, "),
    (-2, ValueError, r"^size: must be in \[1, "),
    (2.0, TypeError, "^size: expected an int"),
    (None, TypeError, "^size: expected an int"),
])
def test_numpy_bad_chunk_size(size, exc, match):
    es = eggroll.ES(_params(), sigma=0.1, lr=0.1, population=N)
    with pytest.raises(exc, match=match):
        es.ask().chunks(size)


def test_numpy_chunks_of_a_stale_population_fail():
    es = eggroll.ES(_params(), sigma=0.1, lr=0.1, population=N)
    pop = es.ask()
    subs = pop.chunks(4)
    es.tell(np.arange(N, dtype=np.float32))
    with pytest.raises(RuntimeError, match="call es.ask"):
        pop.chunks(4)
    with pytest.raises(RuntimeError, match="call es.ask"):
        subs[0].linear("W1", _data()[0], shared=True)


# ------------------------------------------------------------------------------------------
# PyTorch: eggroll.torch.ES
# ------------------------------------------------------------------------------------------

def _torch_model():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3),
                               torch.nn.LayerNorm(3))


@pytest.mark.parametrize("inside", [True, False])
@pytest.mark.parametrize("size", SIZES)
def test_torch_chunks_equal_the_undivided_population(size, inside):
    import torch
    import eggroll.torch as et
    model = _torch_model()
    es = et.ES(model, sigma=0.1, population=N, rank=2, seed=5)
    xs, xm = (torch.from_numpy(a) for a in _data())
    with es.ask() as pop:
        whole_s = model(xs.expand(N, *xs.shape)).clone()
        whole_m = model(xm).clone()
    got_s, got_m = torch.empty_like(whole_s), torch.empty_like(whole_m)

    def run(pop):
        for sub in pop.chunks(size):
            assert sub is pop and len(pop) == sub.rows.stop - sub.rows.start
            assert pop.members == range(sub.rows.start, sub.rows.stop)
            got_s[sub.rows] = model(xs.expand(len(sub), *xs.shape))
            got_m[sub.rows] = model(xm[sub.rows])
        assert len(pop) == N and pop.rows == slice(0, N)         # restored after the loop

    if inside:
        with es.ask() as pop:
            run(pop)
    else:
        run(es.ask())
    assert "forward" not in model[0].__dict__                      # unpatched again
    assert torch.equal(got_s, whole_s) and torch.equal(got_m, whole_m)


def test_torch_chunked_training_equals_the_undivided_run():
    import torch
    import eggroll.torch as et
    runs = []
    for size in (None, 4):
        model = _torch_model()
        es = et.ES(model, sigma=0.1, population=N, seed=9)
        opt = torch.optim.Adam(model.parameters(), lr=0.05)
        for step in range(4):
            xs = torch.from_numpy(_data(seed=20 + step)[0])
            f = torch.empty(N)
            with es.ask() as pop:
                for sub in ([pop] if size is None else pop.chunks(size)):
                    y = model(xs.expand(len(sub), *xs.shape))
                    f[sub.rows] = -(y - 0.5).square().mean(dim=(1, 2))
            es.tell(f)
            opt.step()
        runs.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_torch_chunks_restore_the_population_after_break_and_errors():
    import torch
    import eggroll.torch as et
    model = _torch_model()
    es = et.ES(model, sigma=0.1, population=N)
    xs = torch.from_numpy(_data()[0])
    with es.ask() as pop:
        for sub in pop.chunks(4):
            break
        del sub                      # the loop's generator is closed: pop is whole again
        assert len(pop) == N
        with pytest.raises(ValueError, match=r"^size: must be in \[1, "):
            next(iter(pop.chunks(0)))
        gen = pop.chunks(4)
        next(gen)
        with pytest.raises(RuntimeError, match="already being evaluated in chunks"):
            next(iter(pop.chunks(2)))
        gen.close()
        assert len(pop) == N
        y = model(xs.expand(N, *xs.shape))
        assert y.shape == (N, 4, 3)
    pop = es.ask()
    with pytest.raises(ValueError, match=r"^x: module '0' expects \[population=4"):
        for sub in pop.chunks(4):
            model(xs.expand(N, *xs.shape))          # the whole population's rows: wrong
    assert "forward" not in model[0].__dict__ and not pop._patched


# ------------------------------------------------------------------------------------------
# JAX: eggroll.jax.ES
# ------------------------------------------------------------------------------------------

@pytest.fixture
def jax_es(jax_on_cpu):
    jax = pytest.importorskip("jax")
    pytest.importorskip("eggroll._xla_ffi", reason="eggroll was built without the JAX handlers")
    import eggroll.jax as ej
    return jax, ej.ES(_params(), sigma=0.1, population=N, rank=2, seed=11)


def _jax_forward(pop, x, shared):
    import jax.numpy as jnp
    h = jnp.tanh(pop.linear("W1", x, bias="b1", shared=shared))
    return pop.linear("W2", h, bias="b2")


@pytest.mark.parametrize("size", SIZES)
def test_jax_map_chunks_equal_the_undivided_population(jax_es, size):
    jax, es = jax_es
    import jax.numpy as jnp
    params = {k: jnp.asarray(v) for k, v in _params().items()}
    xs, xm = _data()
    pop = es.ask(params, 2)
    whole_s, whole_m = np.asarray(_jax_forward(pop, xs, True)), np.asarray(_jax_forward(pop, xm, False))

    @jax.jit
    def chunked(params, epoch, xs, xm):
        pop = es.ask(params, epoch)
        ys = pop.map_chunks(lambda sub: _jax_forward(sub, xs, True), size=size)
        both = pop.map_chunks(lambda sub, x, k: {"y": _jax_forward(sub, x, False), "k": k},
                              xm, jnp.arange(N), size=size)
        return ys, both
    ys, both = chunked(params, 2, xs, xm)
    np.testing.assert_array_equal(np.asarray(ys), whole_s)
    np.testing.assert_array_equal(np.asarray(both["y"]), whole_m)
    np.testing.assert_array_equal(np.asarray(both["k"]), np.arange(N))   # rows in order


def test_jax_map_chunks_of_a_member_block(jax_es):
    _, es = jax_es
    import jax.numpy as jnp
    params = {k: jnp.asarray(v) for k, v in _params().items()}
    xs, _ = _data()
    whole = np.asarray(_jax_forward(es.ask(params, 1), xs, True))
    block = es.ask(params, 1, members=range(3, 11))
    got = block.map_chunks(lambda sub: _jax_forward(sub, xs, True), size=3)
    np.testing.assert_array_equal(np.asarray(got), whole[3:11])


def test_jax_chunked_gradient_equals_the_undivided_one(jax_es):
    jax, es = jax_es
    import jax.numpy as jnp
    params = {k: jnp.asarray(v) for k, v in _params().items()}
    _, xm = _data()

    def loss(y):
        return -jnp.square(y - 0.5).mean(axis=(1, 2))

    def grads(params, size):
        pop = es.ask(params, 0)
        if size is None:
            f = loss(_jax_forward(pop, xm, False))
        else:
            f = pop.map_chunks(lambda sub, x: loss(_jax_forward(sub, x, False)), xm, size=size)
        return es.gradient(params, f, 0)
    g0 = jax.jit(lambda p: grads(p, None))(params)
    g1 = jax.jit(lambda p: grads(p, 4))(params)
    for k in g0:
        np.testing.assert_array_equal(np.asarray(g1[k]), np.asarray(g0[k]))


def test_jax_map_chunks_bad_arguments(jax_es):
    _, es = jax_es
    import jax.numpy as jnp
    params = {k: jnp.asarray(v) for k, v in _params().items()}
    xs, xm = _data()
    pop = es.ask(params, 0)
    with pytest.raises(ValueError, match=r"^size: must be in \[1, "):
        pop.map_chunks(lambda sub: _jax_forward(sub, xs, True), size=0)
    with pytest.raises(TypeError, match="^size: expected an int"):
        pop.map_chunks(lambda sub: _jax_forward(sub, xs, True), size=2.0)
    with pytest.raises(TypeError, match="^fn: expected a callable"):
        pop.map_chunks("forward", size=2)
    with pytest.raises(ValueError, match=r"^xs\[0\]: expected a per-member array \[14, \.\.\.\]"):
        pop.map_chunks(lambda sub, x: _jax_forward(sub, x, False), xs, size=2)
    with pytest.raises(ValueError, match=r"^fn: must return arrays with one leading row per "
                                         r"member \[2, \.\.\.\]"):
        pop.map_chunks(lambda sub: jnp.zeros(3), size=2)
