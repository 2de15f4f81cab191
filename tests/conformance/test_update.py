"""es_gradient on every backend vs the reference and explicit sums (the CPU backends bit for
bit with NumPy); on NumPy the core's splits, threads and SIMD paths; O(1/r) in rank."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import eggroll
from eggroll import reference as ref

from conftest import MEMBER_FORMS, assert_close_derived, make_members, on, stream_rows

SHAPES = [(1,), (17,), (97,), (1, 1), (1, 17), (17, 1), (17, 97), (97, 17), (97, 97)]
RANKS = tuple(range(1, 9))
NOISE_REUSE = (0, 1, 3)
EPOCH = 7                      # e = 0, 7, 2 for noise_reuse 0, 1, 3
SEED = 0xFEDCBA9876543210
PARAM_ID = 3
POPULATIONS = (2, 18, 64)      # even: antithetic sampling needs pairs


def _shape_id(shape):
    return "x".join(map(str, shape))


def _fitness(rng, N):
    return rng.standard_normal(N).astype(np.float32)


def _gradient_magnitude(f, shape, members, *, sigma, rank, full_rank, **key):
    """The estimate's formula on absolute values: the size of the terms it sums (float64)."""
    f = np.abs(np.asarray(f, np.float64))
    N = f.shape[0]
    if full_rank or len(shape) == 1:
        Z, _ = stream_rows(int(np.prod(shape)), members, **key)
        return ((f / N) @ np.abs(Z.astype(np.float64))).reshape(shape)
    A, B = ref.lowrank_factors(shape, members=members, sigma=sigma, rank=rank, dtype=np.float64,
                               **key)
    return np.einsum("i,imr,inr->mn", f / (N * sigma), np.abs(A), np.abs(B))


def _grid():
    cases = []
    for idx, shape in enumerate(SHAPES):
        full_options = (False,) if len(shape) == 1 else (False, True)
        for full_rank, rank in itertools.product(full_options, RANKS):
            if full_rank and rank > 3:
                continue  # rank does not enter the full-rank estimate; three are enough
            j = idx + rank
            N = POPULATIONS[(idx + rank // 2) % 3]
            form = MEMBER_FORMS[(idx + 2 * rank + full_rank) % 3]
            cases.append(pytest.param(
                shape, rank, full_rank, bool(j % 2), NOISE_REUSE[j % 3], N, form,
                id=f"{_shape_id(shape)}-r{rank}-{'full' if full_rank else 'low'}-"
                   f"{'anti' if j % 2 else 'plain'}-reuse{NOISE_REUSE[j % 3]}-N{N}-{form}"))
    return cases


def _members_for(form, N, rng):
    """A population of N members in the given form, or None (the default range(N))."""
    if form == "range":
        return None if N % 4 else range(N)   # exercise the default as well
    return make_members(form, N, rng)


@pytest.mark.parametrize("shape,rank,full_rank,antithetic,noise_reuse,N,form", _grid())
def test_es_gradient_matches_reference(shape, rank, full_rank, antithetic, noise_reuse, N, form,
                                       rng, backend):
    f = _fitness(rng, N)
    members = _members_for(form, N, rng)
    kw = dict(members=members, epoch=EPOCH, seed=SEED, param_id=PARAM_ID, sigma=0.05,
              rank=rank, noise_reuse=noise_reuse, antithetic=antithetic, full_rank=full_rank)
    g = on(backend, eggroll.es_gradient, f, shape, **kw)
    if backend.cpu:
        np.testing.assert_array_equal(g, eggroll.es_gradient(f, shape, **kw))
    assert g.shape == shape and g.dtype == np.float32
    r64 = ref.es_gradient(f, shape, **kw, dtype=np.float64)
    r32 = ref.es_gradient(f, shape, **kw)
    mem = range(N) if members is None else members
    mag = _gradient_magnitude(f, shape, mem, sigma=0.05, rank=rank, full_rank=full_rank,
                              seed=SEED, param_id=PARAM_ID, epoch=EPOCH,
                              noise_reuse=noise_reuse, antithetic=antithetic)
    assert_close_derived(g, r64, r32, mag, "es_gradient")


# ------------------------------------------------------------------------------------------
# Explicit constructions from the public noise (independent of reference.es_gradient)
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("m,n", [(1, 1), (17, 97), (97, 17), (300, 40)])  # 300: tall GEMM path
@pytest.mark.parametrize("rank", [1, 4, 8])
@pytest.mark.parametrize("antithetic", [True, False])
def test_es_gradient_equals_explicit_lowrank_sum(m, n, rank, antithetic, rng):
    """g = (1/(N sigma)) sum_i f_i E_i with E_i = A[i] @ B[i].T from eggroll.lowrank_factors
    (A already carries s_i sigma / sqrt(r), so sigma cancels: the estimate is
    (1/N) sum_i f_i s_i A_k B_k.T / sqrt(r) as ops.md says)."""
    N, sigma = 24, 0.02
    f = _fitness(rng, N)
    members = rng.permutation(40)[:N] if not antithetic else range(N)
    key = dict(members=members, epoch=11, seed=123, param_id=4, sigma=sigma, rank=rank,
               noise_reuse=2, antithetic=antithetic)
    g = eggroll.es_gradient(f, (m, n), **key)
    A, B = eggroll.lowrank_factors((m, n), **key)

    def explicit(dtype):
        E = A.astype(dtype) @ B.astype(dtype).transpose(0, 2, 1)       # [N, m, n]
        return np.tensordot(f.astype(dtype), E, axes=1) / dtype(N * sigma)

    mag = np.tensordot(np.abs(f).astype(np.float64),
                       np.abs(A.astype(np.float64)) @ np.abs(B.astype(np.float64)).transpose(0, 2, 1),
                       axes=1) / (N * sigma)
    assert_close_derived(g, explicit(np.float64), explicit(np.float32), mag, "low rank")


@pytest.mark.parametrize("shape", [(1, 1), (17, 97), (97, 97), (1,), (97,)])
@pytest.mark.parametrize("antithetic", [True, False])
def test_es_gradient_full_rank_equals_explicit_sum(shape, antithetic, rng):
    """Full rank: E_i = s_i sigma Z_k, so g = (1/N) sum_i f_i s_i Z_k with Z_k the first
    m*n values of eggroll.normal(seed, param_id, e, k)."""
    N, sigma, seed, param_id, epoch, noise_reuse = 18, 0.3, 2**64 - 1, 2**32 - 1, 10, 4
    f = _fitness(rng, N)
    members = rng.permutation(N) if antithetic else np.arange(100, 100 + N)
    g = eggroll.es_gradient(f, shape, members=members, epoch=epoch, seed=seed,
                            param_id=param_id, sigma=sigma, noise_reuse=noise_reuse,
                            antithetic=antithetic, full_rank=True)
    size = int(np.prod(shape))
    Z = np.empty((N, size), np.float32)
    s = np.empty(N)
    for row, i in enumerate(members):
        k, s[row] = (i // 2, -1.0 if i % 2 else 1.0) if antithetic else (i, 1.0)
        Z[row] = eggroll.normal(size, seed=seed, param_id=param_id,
                                epoch_index=epoch // noise_reuse, noise_index=int(k))

    def explicit(dtype):
        return ((f.astype(dtype) * s.astype(dtype)) @ Z.astype(dtype) / dtype(N)).reshape(shape)

    mag = ((np.abs(f.astype(np.float64)) / N) @ np.abs(Z.astype(np.float64))).reshape(shape)
    assert_close_derived(g, explicit(np.float64), explicit(np.float32), mag, "full rank")


def test_es_gradient_over_several_factor_chunks(rng):
    """A population whose factors exceed one chunk of the factor budget (about 64 MiB; here
    4 (m + n) r bytes = 20 KiB per member, so 3400 members take two chunks) still gives the
    one estimate, checked against the explicit sum."""
    m, n, rank, N, sigma = 2, 3, 1024, 3400, 0.5
    f = _fitness(rng, N)
    key = dict(members=range(N), epoch=1, seed=4, sigma=sigma, rank=rank)
    g = eggroll.es_gradient(f, (m, n), **key)
    A, B = eggroll.lowrank_factors((m, n), **key)

    def explicit(dtype):
        return np.einsum("i,imr,inr->mn", f.astype(dtype) / dtype(N * sigma), A.astype(dtype),
                         B.astype(dtype))

    mag = np.einsum("i,imr,inr->mn", np.abs(f.astype(np.float64)) / (N * sigma),
                    np.abs(A.astype(np.float64)), np.abs(B.astype(np.float64)))
    assert_close_derived(g, explicit(np.float64), explicit(np.float32), mag, "chunked")


def test_vector_shape_is_full_rank(rng):
    """A 1-D shape is always estimated full rank (the rank and full_rank flags do not matter)."""
    f = _fitness(rng, 10)
    key = dict(epoch=1, seed=8, sigma=0.1)
    g = eggroll.es_gradient(f, (33,), rank=5, **key)
    np.testing.assert_array_equal(g, eggroll.es_gradient(f, (33,), full_rank=True, **key))
    assert_close_derived(g, ref.es_gradient(f, (33,), **key, dtype=np.float64),
                         ref.es_gradient(f, (33,), **key),
                         _gradient_magnitude(f, (33,), range(10), sigma=0.1, rank=1,
                                             full_rank=True, seed=8, param_id=0, epoch=1,
                                             noise_reuse=1, antithetic=True))


# ------------------------------------------------------------------------------------------
# Split populations
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(97, 97), (17, 5), (97,)])
@pytest.mark.parametrize("antithetic", [True, False])
def test_full_rank_split_population_is_additive(shape, antithetic, rng):
    """What is exact and what is not, for the full-rank estimate over a split population.

    Exact: a sub-population's estimate, with its fitness scaled by its share k/N of the
    population (here 1/2: a power of two, so scaling is exact), equals bit for bit the
    whole population's estimate with the other members' fitness set to zero. The core
    forms each member's coefficient (f_i s_i / N) once and adds coefficient * Z_k member by
    member in member order; zero fitness adds only zeros.
    Not exact: the whole estimate vs the SUM of the two halves. That sum re-associates a
    float32 sum (g_a + g_b instead of one running sum), so it matches only within the
    rounding a float32 evaluation makes -- the derived tolerance against the reference."""
    N, k = 32, 16
    f = _fitness(rng, N)
    key = dict(epoch=5, seed=99, param_id=1, sigma=0.1, noise_reuse=1, antithetic=antithetic,
               full_rank=True)
    zero_b = np.concatenate([f[:k], np.zeros(N - k, np.float32)])
    zero_a = np.concatenate([np.zeros(k, np.float32), f[k:]])
    half_a = eggroll.es_gradient(f[:k] * np.float32(k / N), shape, members=range(k), **key)
    half_b = eggroll.es_gradient(f[k:] * np.float32((N - k) / N), shape, members=range(k, N), **key)
    np.testing.assert_array_equal(half_a, eggroll.es_gradient(zero_b, shape, **key))
    np.testing.assert_array_equal(half_b, eggroll.es_gradient(zero_a, shape, **key))

    whole = eggroll.es_gradient(f, shape, **key)
    r64 = ref.es_gradient(f, shape, **key, dtype=np.float64)
    r32 = ref.es_gradient(f, shape, **key)
    mag = _gradient_magnitude(f, shape, range(N), sigma=0.1, rank=1, seed=99, param_id=1,
                              epoch=5, noise_reuse=1, antithetic=antithetic, full_rank=True)
    assert_close_derived(whole, r64, r32, mag, "whole")
    assert_close_derived(half_a + half_b, r64, r32, mag, "sum of halves")


@pytest.mark.parametrize("full_rank", [False, True])
def test_member_order_does_not_matter_beyond_rounding(full_rank, rng):
    """A permuted population (fitness permuted alongside) is the same estimate up to float32
    rounding: the terms are the same, only the order of the sum changes."""
    N, shape = 20, (17, 97)
    f = _fitness(rng, N)
    perm = rng.permutation(N)
    key = dict(epoch=2, seed=6, sigma=0.1, rank=3, full_rank=full_rank)
    g = eggroll.es_gradient(f[perm], shape, members=perm.astype(np.int32), **key)
    mag = _gradient_magnitude(f, shape, range(N), sigma=0.1, rank=3, full_rank=full_rank,
                              seed=6, param_id=0, epoch=2, noise_reuse=1, antithetic=True)
    assert_close_derived(g, ref.es_gradient(f, shape, **key, dtype=np.float64),
                         ref.es_gradient(f, shape, **key), mag)


# ------------------------------------------------------------------------------------------
# Thread count and SIMD path: bit identity
# ------------------------------------------------------------------------------------------

def _gradients(f):
    key = dict(members=np.arange(6, 6 + f.shape[0]), epoch=3, seed=31, param_id=7, sigma=0.2)
    return {
        "low rank 97x97 r4": eggroll.es_gradient(f, (97, 97), rank=4, **key),
        "low rank 17x97 r8": eggroll.es_gradient(f, (17, 97), rank=8, **key),
        "full rank 97x97": eggroll.es_gradient(f, (97, 97), full_rank=True, **key),
        "vector 97": eggroll.es_gradient(f, (97,), **key),
    }


@pytest.mark.parametrize("threads", [2, 7])
def test_thread_count_bit_identical(threads, rng, restore_threads):
    f = _fitness(rng, 64)
    eggroll.set_num_threads(1)
    one = _gradients(f)
    eggroll.set_num_threads(threads)
    assert eggroll.get_num_threads() == threads
    many = _gradients(f)
    for name in one:
        np.testing.assert_array_equal(one[name], many[name], err_msg=name)


def test_simd_paths_bit_identical(isa_name, rng):
    f = _fitness(rng, 64)
    eggroll.set_isa("scalar")
    baseline = _gradients(f)
    eggroll.set_isa(isa_name)
    out = _gradients(f)
    for name in baseline:
        np.testing.assert_array_equal(out[name], baseline[name], err_msg=f"{isa_name}: {name}")


# ------------------------------------------------------------------------------------------
# Low rank -> full rank as the rank grows: O(1/r) (EGGROLL, Theorem 4)
# ------------------------------------------------------------------------------------------

def test_lowrank_estimate_approaches_gaussian_at_rate_one_over_r():
    """The low-rank ES gradient converges to the Gaussian (full-rank) one like 1/r.

    Objective, fixed and bounded: with Z = E / sigma the normalised perturbation,
    F(Z) = tanh(alpha <C, Z>) + gamma tanh(<D, Z>)^2, |F| <= 1 + gamma, where
    C = u v^T is a fixed rank-1 direction with |C|_F = 1 and D = d v^T another fixed
    direction. The fitness comes from a real forward pass: x = v for every member and
    W = 0, so y_i = perturbed_matmul(...)_i = E_i v, <C, Z_i> = u . y_i / sigma and
    <D, Z_i> = d . y_i / sigma.

    Target: the ES gradient of E[F] under each perturbation law, G = E[F(Z) Z] (what
    es_gradient estimates: (1/(N sigma)) sum f_i E_i = (1/N) sum f_i Z_i). The even term
    cancels exactly in antithetic pairs (and has zero mean against Z under both laws, which
    are symmetric), so only the odd term counts. Gaussian law (full rank): by Stein's lemma
    G_inf = alpha E[sech^2(alpha xi)] C = lam_inf C, a 1-D integral (Gauss-Hermite). Low
    rank: the law of Z_r = A B^T / sqrt(r) is invariant under Z -> U Z V^T (U, V
    orthogonal), so for rank-1 C, G_r = lam_r C with lam_r = E[tanh(alpha u_r) u_r],
    u_r = <C, Z_r> = r^-1/2 sum_l a_l b_l.

    Why 1/r and not 1/sqrt(r): u_r is a sum of r i.i.d. symmetric terms a_l b_l, so its odd
    cumulants vanish -- the third cumulant, which gives the CLT's Berry-Esseen 1/sqrt(r)
    term, is zero. The first departure from the Gaussian is the fourth cumulant,
    kappa_4 = 6/r (E[(ab)^4] = 9, minus 3), so lam_r - lam_inf = (kappa_4/24) E[h''''] +
    O(1/r^2) with h(u) = u tanh(alpha u): the bias, and |G_r - G_inf|_F = |lam_r - lam_inf|,
    is O(1/r). (Equivalently: given B, u_r is Gaussian with variance chi^2_r / r, whose
    spread is O(1/sqrt(r)), entering to second order.) For alpha = 1/2 the exact values
    are -6.3e-2, -3.7e-2, -2.1e-2, -1.1e-2, -5.6e-3, -2.9e-3 for r = 1..32: slope -0.89.

    Monte-Carlo: N = 2^18 members. A control variate removes most of the sampling noise:
    es_gradient is linear in the fitness and E[<C, Z> Z] = C exactly for every law (unit
    covariance), so es_gradient(f - lam_inf <C, Z>) + lam_inf C is an unbiased estimate of
    G with far smaller variance. The full-rank estimate with the same N checks that the
    remaining noise is well below the smallest bias measured.
    """
    m, n, N, sigma, alpha, gamma, seed = 3, 4, 1 << 18, 0.1, 0.5, 0.5, 2024
    ranks = np.array([1, 2, 4, 8, 16, 32])
    setup = np.random.default_rng(7)
    u = setup.standard_normal(m)
    u /= np.linalg.norm(u)
    v = setup.standard_normal(n)
    v /= np.linalg.norm(v)
    d = setup.standard_normal(m)
    d /= np.linalg.norm(d)
    C = np.outer(u, v)
    nodes, weights = np.polynomial.hermite_e.hermegauss(101)
    lam_inf = float(np.sum(weights * nodes * np.tanh(alpha * nodes)) / np.sum(weights))
    G_inf = lam_inf * C

    x = np.tile(v.astype(np.float32), (N, 1))     # [N, n]: every member sees the input v
    W = np.zeros((m, n), np.float32)
    key = dict(epoch=0, seed=seed, sigma=sigma)

    def estimate(rank):
        if rank is None:
            y = eggroll.perturbed_matmul_full(x, W, members=range(N), **key)
        else:
            y = eggroll.perturbed_matmul(x, W, members=range(N), rank=rank, **key)
        Zv = y.astype(np.float64) / sigma              # Z_i v, [N, m]
        lin = Zv @ u                                   # <C, Z_i>
        F = np.tanh(alpha * lin) + gamma * np.tanh(Zv @ d) ** 2
        g = eggroll.es_gradient((F - lam_inf * lin).astype(np.float32), (m, n),
                                rank=rank or 1, full_rank=rank is None, **key)
        return g.astype(np.float64) + lam_inf * C

    errors = np.array([np.linalg.norm(estimate(int(r)) - G_inf) for r in ranks])
    full_error = np.linalg.norm(estimate(None) - G_inf)
    slope = np.polyfit(np.log(ranks), np.log(errors), 1)[0]
    assert full_error < errors[-1] / 2, (full_error, errors)
    assert np.all(np.diff(errors) < 0), errors
    assert -1.5 < slope < -0.6, (slope, errors)
