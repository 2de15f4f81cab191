"""Fitness shaping on every backend: centered_rank, zscore, antithetic_sign vs the reference
(ranks and signs bit for bit, zscore within the derived tolerance) and hand-made cases."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import eggroll
from eggroll import reference as ref

from conftest import assert_close_derived, on

DTYPES = (np.float32, np.float64)
SIZES = (1, 2, 17, 64, 97)


def _fitness(rng, N, dtype, ties, backend=None):
    """N fitness values; with ties, drawn from few distinct values so many repeat. float64
    values are made float32-exact for JAX without jax_enable_x64 (it holds them as float32)."""
    if ties:
        f = rng.integers(-3, 4, N).astype(dtype) * dtype(0.25)
    else:
        f = (rng.standard_normal(N) * 10 + 3).astype(dtype)
    if backend is not None and backend.name.startswith("jax"):
        import jax
        if not jax.config.jax_enable_x64:
            f = f.astype(np.float32).astype(dtype)
    return f


# ------------------------------------------------------------------------------------------
# centered_rank
# ------------------------------------------------------------------------------------------

def test_centered_rank_hand_made():
    # ranks 3, 0, 1.5, 1.5 (the two 2.0s share ranks 1 and 2) over N - 1 = 3, minus 0.5
    out = eggroll.centered_rank(np.array([3.0, 1.0, 2.0, 2.0], np.float32))
    np.testing.assert_array_equal(out, np.array([0.5, -0.5, 0.0, 0.0], np.float32))
    np.testing.assert_array_equal(eggroll.centered_rank(np.array([5.0])), np.zeros(1, np.float32))
    np.testing.assert_array_equal(eggroll.centered_rank(np.full(6, 7.0)), np.zeros(6, np.float32))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N", SIZES)
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_centered_rank_matches_reference(dtype, N, ties, rng, backend):
    """rank / (N - 1) - 0.5 in double, rounded once to float32: the ranks are exact
    half-integers and each step is one correctly rounded operation, so the result is
    bit-identical to the float64 reference rounded to float32."""
    f = _fitness(rng, N, dtype, ties, backend)
    out = on(backend, eggroll.centered_rank, f)
    assert out.dtype == np.float32 and out.shape == (N,)
    np.testing.assert_array_equal(out, ref.centered_rank(f, dtype=np.float64).astype(np.float32))
    # an independent oracle for the ranks themselves (ties share the mean rank)
    if N > 1:
        # (float64 ranks: newer SciPy returns float32 ranks for float32 input)
        expected = (stats.rankdata(f, method="average").astype(np.float64) - 1) / (N - 1) - 0.5
        np.testing.assert_array_equal(out, expected.astype(np.float32))
    assert out.min() >= -0.5 and out.max() <= 0.5


def test_centered_rank_float64_ties_are_exact(rng):
    """Values that differ only beyond float32 precision are NOT ties in float64 input."""
    f = np.array([1.0, 1.0 + 2**-40, 1.0, 0.5])
    np.testing.assert_array_equal(eggroll.centered_rank(f),
                                  ref.centered_rank(f, dtype=np.float64).astype(np.float32))
    np.testing.assert_array_equal(eggroll.centered_rank(f),
                                  np.array([0.0, 0.5, 0.0, -0.5], np.float32))  # ranks 1.5, 3, 1.5, 0


# ------------------------------------------------------------------------------------------
# zscore
# ------------------------------------------------------------------------------------------

def test_zscore_hand_made():
    f = np.array([1.0, 3.0, 5.0, 7.0])
    # mean 4, var 5 over all; groups of 2 have means 2 and 6; var stays the global one
    np.testing.assert_allclose(eggroll.zscore(f), (f - 4) / np.sqrt(5 + 1e-5), rtol=1e-6)
    np.testing.assert_allclose(eggroll.zscore(f, group_size=2),
                               np.array([-1, 1, -1, 1]) / np.sqrt(5 + 1e-5), rtol=1e-6)
    # a constant population: var = 0, the 1e-5 keeps it finite, and the result is 0
    np.testing.assert_array_equal(eggroll.zscore(np.full(8, 3.25)), np.zeros(8, np.float32))


def _zscore_magnitude(f, group_size):
    """|f| + |group mean| over sqrt(var + 1e-5): the size of what is subtracted."""
    f = np.asarray(f, np.float64)
    G = group_size or f.shape[0]
    gm = np.repeat(np.abs(f.reshape(-1, G).mean(axis=1)), G)
    return (np.abs(f) + gm) / np.sqrt(f.var() + 1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,group_size", [(1, 0), (2, 0), (17, 0), (97, 0), (64, 0), (2, 1),
                                          (2, 2), (64, 2), (64, 8), (96, 32), (97, 97),
                                          (51, 17)])
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_zscore_matches_reference(dtype, N, group_size, ties, rng, backend):
    f = _fitness(rng, N, dtype, ties, backend)
    out = on(backend, eggroll.zscore, f, group_size)
    assert out.dtype == np.float32 and out.shape == (N,)
    assert_close_derived(out, ref.zscore(f, group_size, dtype=np.float64),
                         ref.zscore(f, group_size, dtype=np.float32),
                         _zscore_magnitude(f, group_size), f"zscore(group_size={group_size})")


def test_zscore_groups_have_zero_mean_global_unit_scale(rng):
    f = rng.standard_normal(48) * 3 + np.repeat(np.arange(6.0) * 10, 8)
    out = eggroll.zscore(f, group_size=8).astype(np.float64)
    np.testing.assert_allclose(out.reshape(6, 8).mean(axis=1), 0, atol=1e-6)
    # divided by the GLOBAL spread, which the group offsets inflate: groups are narrow
    global_std = np.sqrt(f.var() + 1e-5)
    np.testing.assert_allclose(out, (f - np.repeat(f.reshape(6, 8).mean(1), 8)) / global_std,
                               rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------
# antithetic_sign
# ------------------------------------------------------------------------------------------

def test_antithetic_sign_hand_made():
    f = np.array([2.0, 1.0, 1.0, 2.0, 5.0, 5.0, -0.0, 0.0], np.float32)
    out = eggroll.antithetic_sign(f)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.array([1, -1, 0, 0], np.float32))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N", [2, 18, 64, 96])
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_antithetic_sign_matches_reference(dtype, N, ties, rng, backend):
    f = _fitness(rng, N, dtype, ties, backend)
    out = on(backend, eggroll.antithetic_sign, f)
    assert out.dtype == np.float32 and out.shape == (N // 2,)
    np.testing.assert_array_equal(out, ref.antithetic_sign(f))
    assert set(np.unique(out)) <= {-1.0, 0.0, 1.0}


def test_antithetic_sign_float64_resolution():
    """Differences below float32 resolution still count for float64 input."""
    f = np.array([1.0 + 2**-40, 1.0, 1.0, 1.0 + 2**-40])
    np.testing.assert_array_equal(eggroll.antithetic_sign(f), np.array([1, -1], np.float32))
    np.testing.assert_array_equal(ref.antithetic_sign(f), np.array([1, -1], np.float32))


@pytest.mark.parametrize("scale", [1e150, 1e200, 1e308])
def test_zscore_of_huge_finite_fitness(scale, backend):
    """Values near float64's limit are scaled by a power of two first (exact), so the squares
    cannot overflow: +-1e200 gives +-1, not the zero update (inf variance) or NaN it gave."""
    f = np.array([scale, -scale, scale / 2, -scale / 2], np.float64)
    if backend.name.startswith("jax"):
        pytest.skip("JAX holds float32 fitness without jax_enable_x64")
    out = on(backend, eggroll.zscore, f)
    g = f / scale          # the exact z-scores (the 1e-5 of the variance is negligible here)
    np.testing.assert_allclose(out, (g - g.mean()) / g.std(), rtol=1e-6)
    assert np.isfinite(out).all()
