"""eggroll.ES (the ask/tell trainer): every option against an independent computation from
the public ops, param_id stability, bit-exact checkpoints, the NaN policy, argument errors,
and the demo's entry points."""
from __future__ import annotations

import hashlib
import os
import re
import sys

import numpy as np
import pytest

import eggroll
from eggroll import ES
from eggroll.es import param_id

N = 16           # population used by most tests (even: antithetic pairs)
SEED = 1234


def _pid(name):
    """The documented derivation, restated here."""
    return int.from_bytes(hashlib.blake2b(name.encode("utf-8"), digest_size=4).digest(),
                          "little")


def _params(rng, m=5, n=7, k=3):
    return {"W1": rng.standard_normal((m, n)).astype(np.float32),
            "b1": rng.standard_normal(m).astype(np.float32),
            "W2": rng.standard_normal((k, m)).astype(np.float32),
            "b2": rng.standard_normal(k).astype(np.float32)}


def _es(params=None, **kw):
    kw.setdefault("sigma", 0.1)
    kw.setdefault("lr", 0.05)
    kw.setdefault("population", N)
    kw.setdefault("seed", SEED)
    return ES(_params(np.random.default_rng(0)) if params is None else params, **kw)


def _key(es, name, epoch, sigma):
    return dict(epoch=epoch, seed=es.seed, param_id=_pid(name), sigma=sigma,
                noise_reuse=es.noise_reuse, antithetic=es.antithetic)


def _forward(pop, x):
    """A deterministic population forward: MLP, x [N, b, n] -> fitness [N]."""
    h = np.tanh(pop.linear("W1", x, bias="b1"))
    y = pop.linear("W2", h, bias="b2")
    return -np.square(y - 0.5).mean(axis=(1, 2))


def _x(es, b=4, n=7, seed=5):
    rng = np.random.default_rng(seed)
    return np.ascontiguousarray(
        np.broadcast_to(rng.standard_normal((b, n)).astype(np.float32), (es.population, b, n)))


def _state_arrays(es):
    st = es.state_dict()
    return {f"{g}/{k}": v for g in ("params", "adam_m", "adam_v") for k, v in st[g].items()}


# ------------------------------------------------------------------------------------------
# param_id
# ------------------------------------------------------------------------------------------

def test_param_id_is_pinned():
    # Hard-coded: changing the derivation would silently change every saved run's noise.
    assert param_id("W") == 355767067
    assert param_id("weight") == 539432606
    assert param_id("layers.0.weight") == 3843510026
    assert param_id("b") == 1363123709
    assert param_id("W") == _pid("W")


def test_param_ids_independent_of_dict_order():
    p = _params(np.random.default_rng(0))
    a = _es(p)
    b = _es(dict(reversed(list(p.items()))))
    assert a.param_ids == b.param_ids == {k: _pid(k) for k in p}
    f = np.random.default_rng(1).standard_normal(N)
    pa, pb = a.ask(), b.ask()
    x = _x(a)
    assert np.array_equal(pa.linear("W1", x, bias="b1"), pb.linear("W1", x, bias="b1"))
    a.tell(f)
    b.tell(f)
    for k in p:
        assert np.array_equal(a.params[k], b.params[k]), k


def test_param_id_collision_raises():
    assert _pid("p56886") == _pid("p91703")  # a known 32-bit collision
    with pytest.raises(ValueError, match="params:.*p56886.*p91703"):
        ES({"p56886": np.zeros(3), "p91703": np.zeros(3)}, sigma=0.1, lr=0.1, population=4)


# ------------------------------------------------------------------------------------------
# the population view
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rank,full_rank,three_d", [(1, False, True), (3, False, False),
                                                    (2, True, True), (1, True, False)])
def test_linear_equals_ops(rank, full_rank, three_d):
    es = _es(rank=rank, full_rank=full_rank, noise_reuse=2)
    es.tell(np.arange(N, dtype=np.float32))         # epoch 1: non-trivial key
    pop = es.ask()
    x = _x(es) if three_d else _x(es)[:, 0, :].copy()
    W, b = es.params["W1"], es.params["b1"]
    k = _key(es, "W1", 1, 0.1)
    if full_rank:
        ref = eggroll.perturbed_matmul_full(x, W, members=range(N), **k)
    else:
        ref = eggroll.perturbed_matmul(x, W, members=range(N), rank=rank, **k)
    bv = eggroll.perturb_vector(b, members=range(N), **_key(es, "b1", 1, 0.1))
    ref = ref + (bv[:, None, :] if three_d else bv)
    got = pop.linear("W1", x, bias="b1")
    assert got.shape == ref.shape and got.dtype == np.float32
    assert np.array_equal(got, ref)
    assert np.array_equal(pop.vector("b1"), bv)
    # members really differ from each other and from the mean model
    assert not np.allclose(got[0], got[1])


@pytest.mark.parametrize("full_rank", [False, True])
@pytest.mark.parametrize("frozen", [(), ("W1",)])
def test_linear_shared_input_equals_the_materialised_one(full_rank, frozen):
    """pop.linear(name, x, shared=True) with x [b, n] or [n]: every member's input, the same
    bits as the input broadcast to [N, ...] (and a block of members likewise)."""
    es = _es(full_rank=full_rank, frozen=frozen, rank=2)
    es.tell(np.arange(N, dtype=np.float32))
    xb = _x(es)[0].copy()                                    # [b, n]
    for members in (None, range(3, 9)):
        pop = es.ask() if members is None else es.ask(members=members)
        M = len(pop)
        got = pop.linear("W1", xb, bias="b1", shared=True)
        ref = pop.linear("W1", np.ascontiguousarray(np.broadcast_to(xb, (M,) + xb.shape)),
                         bias="b1")
        assert got.shape == ref.shape == (M, 4, 5) and np.array_equal(got, ref)
        got = pop.linear("W1", xb[1], shared=True)
        ref = pop.linear("W1", np.ascontiguousarray(np.broadcast_to(xb[1], (M, 7))))
        assert got.shape == (M, 5) and np.array_equal(got, ref)
        got[:] = 0                                           # the result is the caller's
        assert not np.array_equal(pop.linear("W1", xb[1], shared=True), got)
    with pytest.raises(ValueError, match="^x: a shared input"):
        pop.linear("W1", _x(es), shared=True)
    with pytest.raises(ValueError, match="shared=True"):
        pop.linear("W1", xb[0])


def test_population_attributes_and_staleness():
    es = _es()
    pop = es.ask()
    assert pop.members == range(N) and len(pop) == N and pop.epoch == 0 and pop.sigma == 0.1
    es.tell(np.zeros(N))
    with pytest.raises(RuntimeError, match="ask"):
        pop.vector("b1")
    assert es.ask().epoch == 1


def test_frozen_params_unperturbed_and_unchanged():
    p = _params(np.random.default_rng(0))
    es = _es(p, frozen=["W2", "b2"], optimizer="adam", weight_decay=0.1)
    x = _x(es)
    for _ in range(3):
        pop = es.ask()
        h = pop.linear("W1", x, bias="b1")
        y = pop.linear("W2", h, bias="b2")
        ref = eggroll.perturbed_matmul(h, p["W2"], members=None, epoch=0, seed=0, sigma=1.0)
        assert np.array_equal(y, ref + p["b2"])
        v = pop.vector("b2")
        assert v.shape == (N, 3) and np.array_equal(v, np.broadcast_to(p["b2"], (N, 3)))
        es.tell(-np.square(y).mean(axis=(1, 2)))
    assert np.array_equal(es.params["W2"], p["W2"]) and np.array_equal(es.params["b2"], p["b2"])
    assert not np.array_equal(es.params["W1"], p["W1"])
    assert set(es.state_dict()["adam_m"]) == {"W1", "b1"}
    assert es.trainable == ["W1", "b1"]


def test_params_are_float32_copies_and_snapshots():
    raw = {"W": np.ones((3, 4)), "b": [1, 2, 3]}
    es = ES(raw, sigma=0.1, lr=0.1, population=4)
    assert all(v.dtype == np.float32 for v in es.params.values())
    raw["W"][0, 0] = 7.0
    assert es.params["W"][0, 0] == 1.0
    before = es.params["W"]
    with pytest.raises(ValueError):
        before[0, 0] = 3.0                       # read-only
    es.tell(np.arange(4.0))
    assert np.array_equal(before, np.ones((3, 4)))       # what we got is not changed by tell
    assert not np.array_equal(es.params["W"], before)


# ------------------------------------------------------------------------------------------
# tell: shaping, estimate, step
# ------------------------------------------------------------------------------------------

def _expected_sgd(es, p, shaped, epoch, sigma, lr, wd=0.0):
    out = {}
    for name, v in p.items():
        g = eggroll.es_gradient(shaped, v.shape, rank=es.rank, full_rank=es.full_rank,
                                **_key(es, name, epoch, sigma))
        q = v - np.float32(lr * wd) * v if wd else v.copy()
        q += np.float32(lr) * g
        out[name] = q
    return out


@pytest.mark.parametrize("rank,full_rank,noise_reuse", [(1, False, 1), (4, False, 3),
                                                        (1, True, 0), (2, False, 0)])
def test_sgd_step_is_lr_times_es_gradient(rank, full_rank, noise_reuse):
    es = _es(rank=rank, full_rank=full_rank, noise_reuse=noise_reuse)
    rng = np.random.default_rng(3)
    for epoch in range(4):
        p = {k: np.array(v) for k, v in es.params.items()}
        f = rng.standard_normal(N)
        stats = es.tell(f)
        exp = _expected_sgd(es, p, eggroll.centered_rank(f), epoch, 0.1, 0.05)
        for k in p:
            assert np.array_equal(es.params[k], exp[k]), (epoch, k)
        assert stats["epoch"] == epoch and es.epoch == epoch + 1
        assert stats["fitness_max"] == pytest.approx(f.max())
        g = eggroll.es_gradient(eggroll.centered_rank(f), p["W1"].shape, rank=rank,
                                full_rank=full_rank, **_key(es, "W1", epoch, 0.1))
        assert stats["grad_norms"]["W1"] == pytest.approx(np.linalg.norm(g), rel=1e-6)


def test_noise_reuse_keys_noise_by_epoch_block():
    es = _es(lr=0.0, noise_reuse=2)
    seen = []
    for _ in range(4):
        seen.append(es.ask().vector("b1"))
        es.tell(np.arange(N, dtype=np.float64))
    assert np.array_equal(seen[0], seen[1]) and np.array_equal(seen[2], seen[3])
    assert not np.array_equal(seen[1], seen[2])


@pytest.mark.parametrize("shaping,group_size", [("zscore", 0), ("zscore", 4),
                                                ("centered_rank", 0), (None, 0)])
def test_each_shaping_feeds_the_estimate(shaping, group_size):
    es = _es(shaping=shaping, group_size=group_size)
    p = {k: np.array(v) for k, v in es.params.items()}
    f = np.random.default_rng(4).standard_normal(N) * 3 + 1
    es.tell(f)
    shaped = {"zscore": lambda: eggroll.zscore(f, group_size),
              "centered_rank": lambda: eggroll.centered_rank(f),
              None: lambda: f.astype(np.float32)}[shaping]()
    exp = _expected_sgd(es, p, shaped, 0, 0.1, 0.05)
    for k in p:
        assert np.array_equal(es.params[k], exp[k]), k


@pytest.mark.parametrize("antithetic", [False, True])
def test_zscore_group_size_is_used(antithetic):
    # Per-group means differ from the global mean here. Without antithetic sampling the group
    # means change the step; with it every group holds whole pairs, a per-group constant
    # cancels in the pair's fold f_2k - f_2k+1, and the step is the same (docs/trainer.md).
    f = np.concatenate([np.full(8, 10.0), np.full(8, -10.0)]) + np.arange(N) * 0.1
    kw = dict(shaping="zscore", antithetic=antithetic)
    a, b = _es(**kw), _es(group_size=8, **kw)
    p = {k: np.array(v) for k, v in b.params.items()}
    a.tell(f)
    b.tell(f)
    exp = _expected_sgd(b, p, eggroll.zscore(f, 8), 0, 0.1, 0.05)
    for k in p:
        assert np.array_equal(b.params[k], exp[k]), k
    assert np.allclose(a.params["W1"], b.params["W1"], rtol=1e-5, atol=1e-6) == antithetic


def test_antithetic_sign_is_the_mean_pair_vote():
    es = _es(shaping="antithetic_sign", rank=2)
    p = {k: np.array(v) for k, v in es.params.items()}
    f = np.random.default_rng(6).standard_normal(N)
    f[4] = f[5]                                            # a tie: that pair votes 0
    es.tell(f)
    c = np.sign(f[0::2] - f[1::2])
    for name in ("W1", "b1"):
        shape = p[name].shape
        if len(shape) == 2:
            A, B = eggroll.lowrank_factors(shape, members=range(0, N, 2), rank=2,
                                           **_key(es, name, 0, 0.1))
            E = np.einsum("imr,inr->imn", A.astype(np.float64), B.astype(np.float64))
        else:
            v0 = np.zeros(shape, np.float32)
            E = eggroll.perturb_vector(v0, members=range(0, N, 2),
                                       **_key(es, name, 0, 0.1)).astype(np.float64)
        # g = mean over pairs of vote_k * (E_2k / sigma): the direction the better twin took
        g = np.tensordot(c, E, axes=1) / (N // 2) / 0.1
        np.testing.assert_allclose(es.params[name], p[name] + 0.05 * g, rtol=1e-5, atol=1e-6)


def test_sgd_weight_decay_is_decoupled():
    es = _es(weight_decay=0.5, shaping="zscore")
    p = {k: np.array(v) for k, v in es.params.items()}
    es.tell(np.full(N, 3.0))                               # constant fitness: g = 0
    for k in p:
        np.testing.assert_allclose(es.params[k], p[k] * (1 - 0.05 * 0.5), rtol=1e-6)
    f = np.random.default_rng(2).standard_normal(N)
    p = {k: np.array(v) for k, v in es.params.items()}
    es.tell(f)
    exp = _expected_sgd(es, p, eggroll.zscore(f), 1, 0.1, 0.05, wd=0.5)
    for k in p:
        assert np.array_equal(es.params[k], exp[k]), k


@pytest.mark.parametrize("wd,betas,eps", [(0.0, (0.9, 0.999), 1e-8), (0.1, (0.5, 0.9), 1e-3)])
def test_adam_matches_handwritten_numpy(wd, betas, eps):
    es = _es(optimizer="adam", weight_decay=wd, adam_betas=betas, adam_eps=eps, lr=0.01)
    p = {k: np.array(v, np.float64) for k, v in es.params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v2 = {k: np.zeros_like(v) for k, v in p.items()}
    rng = np.random.default_rng(8)
    for t in range(1, 6):
        f = rng.standard_normal(N)
        es.tell(f)
        for k in p:
            g = eggroll.es_gradient(eggroll.centered_rank(f), p[k].shape,
                                    **_key(es, k, t - 1, 0.1)).astype(np.float64)
            m[k] = betas[0] * m[k] + (1 - betas[0]) * g
            v2[k] = betas[1] * v2[k] + (1 - betas[1]) * g * g
            mhat, vhat = m[k] / (1 - betas[0] ** t), v2[k] / (1 - betas[1] ** t)
            p[k] = p[k] - 0.01 * wd * p[k] + 0.01 * mhat / (np.sqrt(vhat) + eps)
    st = es.state_dict()
    for k in p:
        np.testing.assert_allclose(es.params[k], p[k], rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(st["adam_m"][k], m[k], rtol=2e-5, atol=1e-9)
        np.testing.assert_allclose(st["adam_v"][k], v2[k], rtol=2e-5, atol=1e-12)


def test_adam_first_step_is_lr_times_sign():
    es = _es(optimizer="adam", lr=0.01)
    p = np.array(es.params["W1"])
    f = np.random.default_rng(9).standard_normal(N)
    es.tell(f)
    g = eggroll.es_gradient(eggroll.centered_rank(f), p.shape, **_key(es, "W1", 0, 0.1))
    np.testing.assert_allclose(es.params["W1"] - p, 0.01 * np.sign(g), rtol=1e-3, atol=1e-6)


def test_schedules_are_called_with_the_epoch():
    calls = []

    def sigma(t):
        calls.append(t)
        return 0.1 / (1 + t)

    def lr(t):
        return 0.05 * (t + 1)

    es = _es(sigma=sigma, lr=lr)
    rng = np.random.default_rng(10)
    for epoch in range(3):
        pop = es.ask()
        assert pop.sigma == sigma(epoch)
        assert np.array_equal(pop.vector("b1"), eggroll.perturb_vector(
            es.params["b1"], members=range(N), **_key(es, "b1", epoch, sigma(epoch))))
        p = {k: np.array(v) for k, v in es.params.items()}
        f = rng.standard_normal(N)
        stats = es.tell(f)
        assert stats["lr"] == lr(epoch) and stats["sigma"] == sigma(epoch)
        exp = _expected_sgd(es, p, eggroll.centered_rank(f), epoch, sigma(epoch), lr(epoch))
        for k in p:
            assert np.array_equal(es.params[k], exp[k]), (epoch, k)
    assert set(calls) == {0, 1, 2}


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_bad_schedule_value_names_sigma(bad):
    es = _es(sigma=lambda t: bad)
    with pytest.raises(ValueError, match="^sigma"):
        es.ask()


def test_toy_regression_improves():
    rng = np.random.default_rng(11)
    T = rng.standard_normal((4, 6)).astype(np.float32)
    X = rng.standard_normal((32, 6)).astype(np.float32)
    es = ES({"W": np.zeros((4, 6), np.float32)}, sigma=0.1, lr=0.05, population=64,
            optimizer="adam", seed=3)
    x = np.ascontiguousarray(np.broadcast_to(X, (64, 32, 6)))

    def err(W):
        return float(np.square(X @ W.T - X @ T.T).mean())

    e0 = err(es.params["W"])
    for _ in range(150):
        y = es.ask().linear("W", x)
        es.tell(-np.square(y - X @ T.T).mean(axis=(1, 2)))
    assert err(es.params["W"]) < 0.05 * e0


# ------------------------------------------------------------------------------------------
# non-finite fitness
# ------------------------------------------------------------------------------------------

def test_nonfinite_raise():
    es = _es()
    f = np.zeros(N)
    f[3] = np.nan
    with pytest.raises(ValueError, match="raw_fitness.*members \\[3\\]"):
        es.tell(f)
    assert es.epoch == 0                      # nothing happened


def test_nonfinite_worst_replaces_by_minimum_finite():
    rng = np.random.default_rng(12)
    f = rng.standard_normal(N)
    bad = f.copy()
    bad[[1, 6, 9]] = [np.nan, np.inf, -np.inf]
    fixed = f.copy()
    fixed[[1, 6, 9]] = np.delete(f, [1, 6, 9]).min()
    for shaping in ("zscore", "centered_rank"):
        a, b = _es(nonfinite="worst", shaping=shaping), _es(shaping=shaping)
        stats = a.tell(bad)
        b.tell(fixed)
        assert stats["nonfinite"] == 3
        assert stats["fitness_min"] == fixed.min()
        for k in a.params:
            assert np.array_equal(a.params[k], b.params[k]), (shaping, k)
    with pytest.raises(ValueError, match="raw_fitness.*every value"):
        _es(nonfinite="worst").tell(np.full(N, np.nan))


# ------------------------------------------------------------------------------------------
# checkpoints
# ------------------------------------------------------------------------------------------

CKPT = dict(optimizer="adam", weight_decay=0.01, rank=2, frozen=("b2",), shaping="zscore",
            group_size=4, noise_reuse=3, lr=lambda t: 0.02 / (1 + 0.1 * t),
            sigma=lambda t: 0.1 * 0.97 ** t, nonfinite="worst", adam_betas=(0.8, 0.99))


def _run(es, steps):
    x = _x(es)
    for _ in range(steps):
        es.tell(_forward(es.ask(), x))
    return es


def _assert_same(a, b):
    assert a.epoch == b.epoch
    sa, sb = _state_arrays(a), _state_arrays(b)
    assert sa.keys() == sb.keys() and len(sa) >= 4
    for k in sa:
        assert np.array_equal(sa[k], sb[k]), k


def test_checkpoint_state_dict_resumes_bit_for_bit():
    straight = _run(_es(**CKPT), 20)
    half = _run(_es(**CKPT), 10)
    state = half.state_dict()
    assert state["sigma"] is None and state["lr"] is None and state["epoch"] == 10
    resumed = ES.from_state_dict(state, sigma=CKPT["sigma"], lr=CKPT["lr"])
    _run(half, 10)                     # the original keeps going: the state is a copy
    _run(resumed, 10)
    _assert_same(resumed, straight)
    _assert_same(half, straight)


def test_checkpoint_save_load_resumes_bit_for_bit(tmp_path):
    straight = _run(_es(**CKPT), 20)
    path = tmp_path / "ckpt.npz"
    _run(_es(**CKPT), 10).save(path)
    assert os.listdir(tmp_path) == ["ckpt.npz"]           # no temporary file left behind
    with np.load(path, allow_pickle=False) as z:          # plain arrays only
        assert int(z["epoch"]) == 10 and "params/W1" in z.files
    resumed = ES.load(path, sigma=CKPT["sigma"], lr=CKPT["lr"])
    assert resumed.frozen == ("b2",) and resumed.group_size == 4 and resumed.rank == 2
    _run(resumed, 10)
    _assert_same(resumed, straight)


def test_checkpoint_plain_floats_restored_schedules_required(tmp_path):
    es = _run(_es(optimizer="sgd", shaping=None, sigma=0.2, lr=0.03), 2)
    path = tmp_path / "plain"
    es.save(path)                                          # path used as given
    back = ES.load(path)
    assert back.sigma == 0.2 and back.lr == 0.03 and back.shaping is None
    assert back.optimizer == "sgd" and back.epoch == 2
    _assert_same(_run(back, 3), _run(es, 3))
    with pytest.raises(ValueError, match="^sigma"):
        ES.from_state_dict(_es(sigma=lambda t: 0.1).state_dict())
    with pytest.raises(ValueError, match="^lr"):
        ES.from_state_dict(_es(lr=lambda t: 0.1).state_dict())


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    es = _es()
    es.save(path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        _run(es, 1).save(path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["ckpt.npz"]


def test_from_state_dict_rejects_foreign_state():
    with pytest.raises(ValueError, match="^state"):
        ES.from_state_dict({"params": {}})
    with pytest.raises(TypeError, match="^state"):
        ES.from_state_dict([1, 2])
    st = _es(optimizer="adam").state_dict()
    del st["adam_m"]["W1"]
    with pytest.raises(ValueError, match="adam_m"):
        ES.from_state_dict(st)


# ------------------------------------------------------------------------------------------
# argument errors
# ------------------------------------------------------------------------------------------

BAD_ARGS = [
    (dict(population=0), ValueError, "population"),
    (dict(population=15), ValueError, "population"),
    (dict(population=2.0), TypeError, "population"),
    (dict(optimizer="rmsprop"), ValueError, "optimizer"),
    (dict(shaping="softmax"), ValueError, "shaping"),
    (dict(shaping="antithetic_sign", antithetic=False), ValueError, "shaping"),
    (dict(frozen=["nope"]), ValueError, "frozen"),
    (dict(frozen=[1]), TypeError, "frozen"),
    (dict(sigma=0.0), ValueError, "sigma"),
    (dict(sigma="big"), TypeError, "sigma"),
    (dict(lr=-1.0), ValueError, "lr"),
    (dict(lr=float("inf")), ValueError, "lr"),
    (dict(rank=0), ValueError, "rank"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(noise_reuse=-1), ValueError, "noise_reuse"),
    (dict(shaping="zscore", group_size=3), ValueError, "group_size"),
    (dict(group_size=4), ValueError, "group_size"),
    (dict(weight_decay=-0.1), ValueError, "weight_decay"),
    (dict(nonfinite="ignore"), ValueError, "nonfinite"),
    (dict(adam_betas=(0.9, 1.0)), ValueError, "adam_betas"),
    (dict(adam_betas=0.9), TypeError, "adam_betas"),
    (dict(adam_eps=0.0), ValueError, "adam_eps"),
    (dict(antithetic="yes"), TypeError, "antithetic"),
    (dict(full_rank=1), TypeError, "full_rank"),
]


@pytest.mark.parametrize("kw,exc,name", BAD_ARGS, ids=[str(b[0]) for b in BAD_ARGS])
def test_bad_constructor_arguments(kw, exc, name):
    with pytest.raises(exc, match=f"^{name}"):
        _es(**kw)


@pytest.mark.parametrize("params,exc", [
    ({"W": np.zeros((2, 3, 4))}, ValueError), ({"W": np.float32(1.0)}, ValueError),
    ({"W": np.zeros((0, 3))}, ValueError), ({"W": np.zeros(3, complex)}, TypeError),
    ({"W": np.array([1.0, np.nan])}, ValueError), ({}, ValueError), ([np.zeros(3)], TypeError),
    ({3: np.zeros(3)}, TypeError)])
def test_bad_params(params, exc):
    with pytest.raises(exc, match="^params"):
        ES(params, sigma=0.1, lr=0.1, population=4)


def test_odd_population_without_antithetic_is_fine():
    es = _es(population=5, antithetic=False)
    x = _x(es)
    es.tell(_forward(es.ask(), x))
    assert es.epoch == 1


def test_bad_tell_and_population_calls():
    es = _es()
    with pytest.raises(ValueError, match="^raw_fitness.*16"):
        es.tell(np.zeros(N - 2))
    with pytest.raises(ValueError, match="^raw_fitness"):
        es.tell(np.zeros((N, 1)))
    with pytest.raises(TypeError, match="^raw_fitness"):
        es.tell(np.array(["a"] * N))
    pop = es.ask()
    x = _x(es)
    with pytest.raises(ValueError, match="^name.*'nope'"):
        pop.linear("nope", x)
    with pytest.raises(ValueError, match="^name"):
        pop.linear("b1", x)                                # a vector is not a matrix
    with pytest.raises(ValueError, match="^name"):
        pop.vector("W1")
    with pytest.raises(ValueError, match="^bias"):
        pop.linear("W1", x, bias="b2")                     # wrong length
    with pytest.raises(ValueError, match="^x"):
        pop.linear("W1", x[:3])
    with pytest.raises(ValueError, match="^x"):
        pop.linear("W1", np.zeros(7, np.float32))
    assert es.epoch == 0


# ------------------------------------------------------------------------------------------
# the demo and the command line
# ------------------------------------------------------------------------------------------

def test_demo_names_the_extra_when_missing(monkeypatch, capsys):
    from eggroll import demo
    # import sklearn (and any submodule another test already imported) -> ImportError
    for name in ["sklearn"] + [m for m in sys.modules if m.startswith("sklearn.")]:
        monkeypatch.setitem(sys.modules, name, None)
    assert demo.main(["--quick"]) == 2
    assert "eggroll-hyperscale[demo]" in capsys.readouterr().err


def test_demo_smoke(capsys):
    pytest.importorskip("sklearn")
    pytest.importorskip("tqdm")
    from eggroll import demo
    assert demo.main(["--steps", "3", "--population", "16", "--baseline-steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "speed-up" in out and "total wall time" in out
    # The printed speed-up is the ratio of the two medians printed beside it.
    low = float(re.search(r"EGGROLL \(rank 1\) +([\d.]+) ms/step", out).group(1))
    full = float(re.search(r"full rank \(OpenES\) +([\d.]+) ms/step", out).group(1))
    m = re.search(r"speed-up +([\d.]+)x +\(= ([\d.]+) / ([\d.]+)\)", out)
    assert (float(m.group(2)), float(m.group(3))) == (full, low)
    assert float(m.group(1)) == pytest.approx(full / low, abs=0.006)


def test_main_dispatch(capsys):
    from eggroll.__main__ import main
    assert main([]) == 2 and "demo" in capsys.readouterr().out
    assert main(["nope"]) == 2 and "unknown command" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["demo", "--help"])
    assert e.value.code == 0 and "--quick" in capsys.readouterr().out
