"""Member blocks in the three trainers: ask(members=range(lo, hi)) evaluates only that block,
bit for bit the rows the whole population gives, and tell()/gradient() of the whole
population's fitness is unchanged (what eggroll.distributed builds on)."""
from __future__ import annotations

import numpy as np
import pytest

import eggroll

N = 14                                     # 7 antithetic pairs: blocks of odd sizes exist
BLOCKS = [(0, N), (0, 1), (3, 8), (5, 6), (13, 14), (2, 13)]   # odd starts split a pair


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {"W1": rng.standard_normal((5, 7)).astype(np.float32),
            "b1": rng.standard_normal(5).astype(np.float32),
            "W2": rng.standard_normal((3, 5)).astype(np.float32),
            "b2": rng.standard_normal(3).astype(np.float32)}


def _x(M, seed=1):
    rng = np.random.default_rng(seed)
    return np.broadcast_to(rng.standard_normal((4, 7)).astype(np.float32), (M, 4, 7)).copy()


# ------------------------------------------------------------------------------------------
# NumPy: eggroll.ES
# ------------------------------------------------------------------------------------------

def _np_forward(pop, x):
    h = np.tanh(pop.linear("W1", x, bias="b1"))
    return pop.linear("W2", h, bias="b2")


@pytest.mark.parametrize("full_rank", [False, True])
@pytest.mark.parametrize("lo,hi", BLOCKS)
def test_numpy_block_rows_equal_the_whole_population(lo, hi, full_rank):
    es = eggroll.ES(_params(), sigma=0.1, lr=0.1, population=N, rank=2, seed=77,
                    full_rank=full_rank, frozen=["b2"])
    whole = _np_forward(es.ask(), _x(N))
    pop = es.ask(members=range(lo, hi))
    assert pop.members == range(lo, hi) and len(pop) == hi - lo
    np.testing.assert_array_equal(_np_forward(pop, _x(hi - lo)), whole[lo:hi])
    np.testing.assert_array_equal(pop.vector("b1"), es.ask().vector("b1")[lo:hi])
    assert pop.vector("b2").shape == (hi - lo, 3)              # frozen: broadcast to the block


def test_numpy_blocks_then_one_tell_equal_the_undivided_run():
    """Three 'ranks' evaluate blocks, concatenate the fitness, and tell(): after 4 steps the
    parameters equal those of the undivided run bit for bit (independently computed)."""
    whole = eggroll.ES(_params(), sigma=0.1, lr=0.05, population=N, optimizer="adam", seed=3)
    split = eggroll.ES(_params(), sigma=0.1, lr=0.05, population=N, optimizer="adam", seed=3)
    for _ in range(4):
        f_whole = -np.square(_np_forward(whole.ask(), _x(N)) - 0.5).mean(axis=(1, 2))
        whole.tell(f_whole)
        parts = [-np.square(_np_forward(split.ask(members=range(lo, hi)), _x(hi - lo)) - 0.5)
                 .mean(axis=(1, 2)) for lo, hi in ((0, 6), (6, 8), (8, N))]
        split.tell(np.concatenate(parts))
    for name, p in whole.params.items():
        np.testing.assert_array_equal(split.params[name], p)


@pytest.mark.parametrize("members,exc,match", [
    ([0, 1], TypeError, "^members: expected a range"),
    (np.arange(3), TypeError, "^members: expected a range"),
    (range(0, 4, 2), ValueError, "^members: expected a non-empty range"),
    (range(3, 3), ValueError, "^members: expected a non-empty range"),
    (range(-1, 2), ValueError, r"^members: must lie inside range\(0, 14\)"),
    (range(10, 15), ValueError, r"^members: must lie inside range\(0, 14\)"),
])
def test_numpy_bad_blocks_name_members(members, exc, match):
    es = eggroll.ES(_params(), sigma=0.1, lr=0.1, population=N)
    with pytest.raises(exc, match=match):
        es.ask(members=members)


def test_numpy_block_input_rows_must_match_the_block():
    es = eggroll.ES(_params(), sigma=0.1, lr=0.1, population=N)
    with pytest.raises(ValueError, match=r"^x: .*len\(members\) = 3"):
        es.ask(members=range(2, 5)).linear("W1", _x(N))


# ------------------------------------------------------------------------------------------
# PyTorch: eggroll.torch.ES
# ------------------------------------------------------------------------------------------

def _torch_model():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3),
                               torch.nn.LayerNorm(3))          # LayerNorm: the vmap path


@pytest.mark.parametrize("lo,hi", BLOCKS)
def test_torch_block_rows_equal_the_whole_population(lo, hi):
    import torch
    import eggroll.torch as et
    model = _torch_model()
    es = et.ES(model, sigma=0.1, population=N, rank=2, seed=5)
    with es.ask() as pop:
        assert len(pop) == N
        whole = model(torch.from_numpy(_x(N)))
    with es.ask(members=range(lo, hi)) as pop:
        assert len(pop) == hi - lo and pop.block == range(lo, hi)
        part = model(torch.from_numpy(_x(hi - lo)))
    np.testing.assert_array_equal(part.numpy(), whole[lo:hi].numpy())


def test_torch_blocks_then_one_tell_equal_the_undivided_run():
    import torch
    import eggroll.torch as et
    runs = []
    for blocks in (((0, N),), ((0, 4), (4, 9), (9, N))):
        model = _torch_model()
        es = et.ES(model, sigma=0.1, population=N, seed=9)
        opt = torch.optim.Adam(model.parameters(), lr=0.05)
        for _ in range(4):
            parts = []
            for lo, hi in blocks:
                with es.ask(members=range(lo, hi)):
                    parts.append(-(model(torch.from_numpy(_x(hi - lo))) - 0.5)
                                 .square().mean(dim=(1, 2)))
            es.tell(torch.cat(parts))
            opt.step()
        runs.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_torch_bad_block_and_rows():
    import torch
    import eggroll.torch as et
    model = _torch_model()
    es = et.ES(model, sigma=0.1, population=N)
    with pytest.raises(ValueError, match=r"^members: must lie inside"):
        es.ask(members=range(0, N + 2))
    with pytest.raises(TypeError, match="^members: expected a range"):
        es.ask(members=[0, 1])
    with pytest.raises(ValueError, match=r"^x: module '0' expects \[population=3"):
        with es.ask(members=range(0, 3)):
            model(torch.from_numpy(_x(N)))


# ------------------------------------------------------------------------------------------
# JAX: eggroll.jax.ES (a range, or an index array that may be traced)
# ------------------------------------------------------------------------------------------

@pytest.fixture
def jax_es(jax_on_cpu):
    jax = pytest.importorskip("jax")
    pytest.importorskip("eggroll._xla_ffi", reason="eggroll was built without the JAX handlers")
    import eggroll.jax as ej
    return jax, ej.ES(_params(), sigma=0.1, population=N, rank=2, seed=11)


def _jax_forward(pop, x):
    import jax.numpy as jnp
    h = jnp.tanh(pop.linear("W1", x, bias="b1"))
    return pop.linear("W2", h, bias="b2")


@pytest.mark.parametrize("lo,hi", BLOCKS)
def test_jax_block_rows_equal_the_whole_population(jax_es, lo, hi):
    jax, es = jax_es
    import jax.numpy as jnp
    params = {k: jnp.asarray(v) for k, v in _params().items()}
    whole = np.asarray(_jax_forward(es.ask(params, 2), _x(N)))
    part = _jax_forward(es.ask(params, 2, members=range(lo, hi)), _x(hi - lo))
    np.testing.assert_array_equal(np.asarray(part), whole[lo:hi])

    M = hi - lo

    @jax.jit
    def traced(params, start):                 # the block start traced (as under shard_map)
        pop = es.ask(params, 2, members=start + jnp.arange(M))
        return _jax_forward(pop, _x(M))
    np.testing.assert_array_equal(np.asarray(traced(params, lo)), whole[lo:hi])


def test_jax_bad_members(jax_es):
    _, es = jax_es
    params = _params()
    with pytest.raises(ValueError, match="^members: must lie inside"):
        es.ask(params, 0, members=range(0, N + 1))
    with pytest.raises(ValueError, match="^members: expected None, a range"):
        es.ask(params, 0, members=np.zeros((2, 2), np.int32))
    with pytest.raises(ValueError, match="^members: expected None, a range"):
        es.ask(params, 0, members=np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match=r"^x: expected \[3, n\]"):
        es.ask(params, 0, members=range(3)).linear("W1", _x(N))
