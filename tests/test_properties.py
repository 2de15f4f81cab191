"""Hypothesis properties: every op vs the reference over random shapes and full-range noise keys."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import eggroll
from eggroll import reference as ref

from conftest import (assert_close_derived, fullrank_forward_magnitude,
                      lowrank_forward_magnitude, stream_rows)

U32_MAX = (1 << 32) - 1
U64_MAX = (1 << 64) - 1

PROPERTY = settings(max_examples=50, deadline=None)

dims = st.integers(1, 40)
ranks = st.integers(1, 8)
layouts = st.one_of(st.none(), st.integers(1, 5))       # None: x [M, n]; b: x [M, b, n]
sigmas = st.floats(1e-3, 10.0, allow_nan=False, allow_infinity=False)
data_seeds = st.integers(0, U32_MAX)                     # seeds numpy's generator for x, W, f


@st.composite
def noise_keys(draw, population=None):
    """A full-range noise key plus the members it is evaluated for.

    seed < 2^64, param_id < 2^32, epoch < 2^32, noise_reuse small or up to 2^32 - 1;
    members: small indices or indices up to the largest whose noise index fits 32 bits
    (2^33 - 1 with antithetic sampling, 2^32 - 1 without), in any order, repeats allowed.
    `population` fixes the number of members (and makes it even with antithetic)."""
    antithetic = draw(st.booleans())
    top = (1 << 33) - 1 if antithetic else U32_MAX
    index = st.one_of(st.integers(0, 20), st.integers(0, top))
    if population is None:
        members = draw(st.lists(index, min_size=1, max_size=8))
    else:
        N = draw(population)
        if antithetic and N % 2:
            N += 1
        members = draw(st.lists(index, min_size=N, max_size=N))
    as_range = draw(st.booleans()) and population is None
    if as_range:
        start = draw(st.integers(0, top - len(members) + 1))
        members = range(start, start + len(members))
    else:
        members = np.array(members, dtype=draw(st.sampled_from([np.int64, np.int32]))
                           if max(members) <= 2**31 - 1 else np.int64)
    return dict(members=members, seed=draw(st.integers(0, U64_MAX)),
                param_id=draw(st.integers(0, U32_MAX)), epoch=draw(st.integers(0, U32_MAX)),
                noise_reuse=draw(st.one_of(st.integers(0, 4), st.integers(0, U32_MAX))),
                antithetic=antithetic)


def _inputs(data_seed, M, m, n, b):
    rng = np.random.default_rng(data_seed)
    x = rng.standard_normal((M, n) if b is None else (M, b, n)).astype(np.float32)
    W = (rng.standard_normal((m, n)) / np.sqrt(n)).astype(np.float32)
    return x, W


def _stream_key(key):
    return {k: key[k] for k in ("seed", "param_id", "epoch", "noise_reuse", "antithetic")}


@PROPERTY
@given(m=dims, n=dims, rank=ranks, sigma=sigmas, key=noise_keys())
def test_lowrank_factors_bit_identical(m, n, rank, sigma, key):
    A, B = eggroll.lowrank_factors((m, n), sigma=sigma, rank=rank, **key)
    A_ref, B_ref = ref.lowrank_factors((m, n), sigma=sigma, rank=rank, **key)
    np.testing.assert_array_equal(A, A_ref)
    np.testing.assert_array_equal(B, B_ref)


@PROPERTY
@given(m=dims, n=dims, b=layouts, rank=ranks, sigma=sigmas, key=noise_keys(), data_seed=data_seeds)
def test_perturbed_matmul(m, n, b, rank, sigma, key, data_seed):
    M = len(key["members"])
    x, W = _inputs(data_seed, M, m, n, b)
    y = eggroll.perturbed_matmul(x, W, sigma=sigma, rank=rank, **key)
    A, B = ref.lowrank_factors((m, n), sigma=sigma, rank=rank, dtype=np.float64, **key)
    assert_close_derived(y, ref.perturbed_matmul(x, W, sigma=sigma, rank=rank, dtype=np.float64, **key),
                         ref.perturbed_matmul(x, W, sigma=sigma, rank=rank, **key),
                         lowrank_forward_magnitude(x, W, A, B), "perturbed_matmul")


@PROPERTY
@given(m=dims, n=dims, b=layouts, sigma=sigmas, key=noise_keys(), data_seed=data_seeds)
def test_perturbed_matmul_full(m, n, b, sigma, key, data_seed):
    M = len(key["members"])
    x, W = _inputs(data_seed, M, m, n, b)
    y = eggroll.perturbed_matmul_full(x, W, sigma=sigma, **key)
    Z, _ = stream_rows(m * n, key["members"], **_stream_key(key))
    E = sigma * Z.reshape(M, m, n)
    assert_close_derived(y, ref.perturbed_matmul_full(x, W, sigma=sigma, dtype=np.float64, **key),
                         ref.perturbed_matmul_full(x, W, sigma=sigma, **key),
                         fullrank_forward_magnitude(x, W, E), "perturbed_matmul_full")


@PROPERTY
@given(m=st.integers(1, 200), sigma=sigmas, key=noise_keys(), data_seed=data_seeds)
def test_perturb_vector_bit_identical(m, sigma, key, data_seed):
    v = np.random.default_rng(data_seed).standard_normal(m).astype(np.float32)
    np.testing.assert_array_equal(eggroll.perturb_vector(v, sigma=sigma, **key),
                                  ref.perturb_vector(v, sigma=sigma, **key))


@PROPERTY
@given(shape=st.one_of(st.tuples(dims, dims), st.tuples(st.integers(1, 300))), rank=ranks,
       full_rank=st.booleans(), sigma=sigmas, key=noise_keys(population=st.integers(1, 16)),
       data_seed=data_seeds)
def test_es_gradient(shape, rank, full_rank, sigma, key, data_seed):
    N = len(key["members"])
    f = np.random.default_rng(data_seed).standard_normal(N).astype(np.float32)
    kw = dict(sigma=sigma, rank=rank, full_rank=full_rank, **key)
    g = eggroll.es_gradient(f, shape, **kw)
    fa = np.abs(f.astype(np.float64))
    if full_rank or len(shape) == 1:
        Z, _ = stream_rows(int(np.prod(shape)), key["members"], **_stream_key(key))
        mag = ((fa / N) @ np.abs(Z.astype(np.float64))).reshape(shape)
    else:
        A, B = ref.lowrank_factors(shape, sigma=sigma, rank=rank, dtype=np.float64, **key)
        mag = np.einsum("i,imr,inr->mn", fa / (N * sigma), np.abs(A), np.abs(B))
    assert_close_derived(g, ref.es_gradient(f, shape, dtype=np.float64, **kw),
                         ref.es_gradient(f, shape, **kw), mag, "es_gradient")


@PROPERTY
@given(window=st.integers(0, 1000), noise_reuse=st.integers(1, 1 << 20),
       offsets=st.tuples(st.integers(0, (1 << 20) - 1), st.integers(0, (1 << 20) - 1)),
       seed=st.integers(0, U64_MAX))
def test_epochs_in_one_reuse_window_share_noise(window, noise_reuse, offsets, seed):
    """e = epoch // noise_reuse: every epoch of one window sees the same perturbation."""
    e1, e2 = (window * noise_reuse + o % noise_reuse for o in offsets)
    kw = dict(members=range(3), seed=seed, sigma=1.0, rank=2, noise_reuse=noise_reuse)
    A1, B1 = eggroll.lowrank_factors((5, 3), epoch=e1, **kw)
    A2, B2 = eggroll.lowrank_factors((5, 3), epoch=e2, **kw)
    np.testing.assert_array_equal(A1, A2)
    np.testing.assert_array_equal(B1, B2)
    np.testing.assert_array_equal(A1, ref.lowrank_factors((5, 3), epoch=window * noise_reuse, **kw)[0])


fitness_values = st.lists(st.one_of(st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
                                    st.sampled_from([0.0, 1.0, -2.5])),   # frequent ties
                          min_size=1, max_size=64)


@PROPERTY
@given(values=fitness_values, dtype=st.sampled_from([np.float32, np.float64]))
def test_centered_rank(values, dtype):
    f = np.array(values, dtype=dtype)
    np.testing.assert_array_equal(eggroll.centered_rank(f),
                                  ref.centered_rank(f, dtype=np.float64).astype(np.float32))


@PROPERTY
@given(values=fitness_values, dtype=st.sampled_from([np.float32, np.float64]),
       groups=st.integers(1, 8))
def test_zscore(values, dtype, groups):
    f = np.array(values, dtype=dtype)
    N = f.shape[0]
    group_size = 0 if N % groups else N // groups   # a divisor of N, or 0 (all members)
    out = eggroll.zscore(f, group_size)
    f64 = f.astype(np.float64)
    G = group_size or N
    gm = np.repeat(np.abs(f64.reshape(-1, G).mean(axis=1)), G)
    mag = (np.abs(f64) + gm) / np.sqrt(f64.var() + 1e-5)
    assert_close_derived(out, ref.zscore(f, group_size, dtype=np.float64),
                         ref.zscore(f, group_size, dtype=np.float32), mag, "zscore")


@PROPERTY
@given(values=fitness_values, dtype=st.sampled_from([np.float32, np.float64]))
def test_antithetic_sign(values, dtype):
    f = np.array(values[:len(values) // 2 * 2] or [1.0, 1.0], dtype=dtype)
    np.testing.assert_array_equal(eggroll.antithetic_sign(f), ref.antithetic_sign(f))
