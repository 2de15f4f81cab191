"""The integer path (perturbed_matmul_int8, int8_update) vs the int64 NumPy reference:
bit-exact on every int8 GEMM path and thread count, overflow edges, and argument errors."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import eggroll
from eggroll import _core
from eggroll import reference as ref

from conftest import MEMBER_FORMS, make_members, on

INT8_ISAS = ("scalar", "avx2", "avx_vnni", "avx512_vnni", "amx")
SEED = 0x0123456789ABCDEF
PARAM_ID = 11
EPOCH = 7


@pytest.fixture
def restore_int8():
    isa, threads = eggroll.get_isa(), eggroll.get_num_threads()
    yield
    eggroll.set_isa(isa)
    eggroll.set_num_threads(threads)


@pytest.fixture(params=INT8_ISAS)
def isa(request, restore_int8):
    """Every int8 GEMM path, forced; paths this CPU (or OS) lacks are skipped."""
    if request.param not in eggroll.isas():
        pytest.skip(f"this CPU lacks the int8 path {request.param} (has {eggroll.isas()})")
    eggroll.set_isa(request.param)
    assert eggroll.get_isa() == request.param
    return request.param


def _inputs(rng, M, b, m, n, x_range=16):
    """x int8 in [-x_range, x_range] and W int8 in [-127, 127]: with the default
    2^fp * isqrt(n) scale most outputs land inside (-127, 127), not on the clamps."""
    shape = (M, n) if b is None else (M, b, n)
    x = rng.integers(-x_range, x_range + 1, shape).astype(np.int8)
    W = rng.integers(-127, 128, (m, n)).astype(np.int8)
    return x, W


def _assert_int8_equal(got, want):
    assert got.dtype == np.int8 and want.dtype == np.int8
    assert got.shape == want.shape, (got.shape, want.shape)
    if not np.array_equal(got, want):
        bad = np.argwhere(got != want)
        i = tuple(bad[0])
        raise AssertionError(f"{len(bad)} of {got.size} differ; first at {i}: got {got[i]}, "
                             f"want {want[i]}")


# ------------------------------------------------------------------------------------------
# forward: a grid of shapes (odd sizes), layouts, ranks, shifts, fixed points
# ------------------------------------------------------------------------------------------

SHAPES = ((1, 1), (17, 33), (97, 130), (40, 257))     # (m, n): odd and padded sizes
LAYOUTS = (None, 3)                                   # x [M, n] or [M, b, n]


def _forward_grid():
    cases = []
    for idx, ((m, n), b, rank) in enumerate(itertools.product(SHAPES, LAYOUTS, (1, 2, 5))):
        cases.append(dict(m=m, n=n, b=b, rank=rank,
                          sigma_shift=(0, 3, 9)[idx % 3], fixed_point=(4, 0, 7, 2)[idx % 4],
                          noise_reuse=(1, 0, 3)[idx % 3], antithetic=bool(idx % 2 == 0),
                          form=MEMBER_FORMS[idx % len(MEMBER_FORMS)]))
    return cases


FORWARD_CASES = _forward_grid()


@pytest.mark.parametrize("case", FORWARD_CASES,
                         ids=[f"m{c['m']}n{c['n']}b{c['b']}r{c['rank']}s{c['sigma_shift']}"
                              f"fp{c['fixed_point']}" for c in FORWARD_CASES])
def test_forward_matches_reference(case, isa):
    rng = np.random.default_rng(case["m"] * 1000 + case["n"] + case["rank"])
    M = 6 if case["antithetic"] else 5
    x_range = min(127, 1 << case["fixed_point"])  # outputs of order 40 for any fixed point
    x, W = _inputs(rng, M, case["b"], case["m"], case["n"], x_range)
    members = make_members(case["form"], M, rng)
    kw = dict(members=members, epoch=EPOCH, seed=SEED, param_id=PARAM_ID, rank=case["rank"],
              sigma_shift=case["sigma_shift"], fixed_point=case["fixed_point"],
              noise_reuse=case["noise_reuse"], antithetic=case["antithetic"])
    want = ref.perturbed_matmul_int8(x, W, **kw)
    _assert_int8_equal(eggroll.perturbed_matmul_int8(x, W, **kw), want)
    if case["m"] * case["n"] > 1:  # the data exercise the arithmetic, not just the clamps
        assert np.mean(np.abs(want.astype(int)) == 127) < 0.5
    # the correction is really there: the unperturbed product differs somewhere
    base = ref.perturbed_matmul_int8(x, W, **{**kw, "members": None})
    if case["n"] >= 33 and case["sigma_shift"] == 0:
        assert not np.array_equal(base, want)


@pytest.mark.parametrize("case", FORWARD_CASES[::2],
                         ids=[f"m{c['m']}n{c['n']}b{c['b']}r{c['rank']}" for c in FORWARD_CASES[::2]])
def test_forward_on_every_backend(case, backend):
    """The same bits as the reference on every backend (exact integer arithmetic)."""
    rng = np.random.default_rng(case["m"] * 1000 + case["n"] + case["rank"])
    M = 6 if case["antithetic"] else 5
    x, W = _inputs(rng, M, case["b"], case["m"], case["n"], min(127, 1 << case["fixed_point"]))
    kw = dict(members=make_members(case["form"], M, rng), epoch=EPOCH, seed=SEED,
              param_id=PARAM_ID, rank=case["rank"], sigma_shift=case["sigma_shift"],
              fixed_point=case["fixed_point"], noise_reuse=case["noise_reuse"],
              antithetic=case["antithetic"])
    _assert_int8_equal(on(backend, eggroll.perturbed_matmul_int8, x, W, **kw),
                       ref.perturbed_matmul_int8(x, W, **kw))


@pytest.mark.parametrize("b", [None, 1, 5])
@pytest.mark.parametrize("members", [range(2, 9), None], ids=["range", "none"])
def test_shared_input_equals_the_materialised_input(b, members, backend):
    """shared=True (x [n] | [b, n]) gives the bits of the input repeated for every member,
    on every backend (one GEMM over the shared rows on the CPU)."""
    rng = np.random.default_rng(7)
    xs, W = _inputs(rng, 1, b, 13, 70)
    xs = xs[0]
    kw = dict(members=members, epoch=2, seed=9, rank=2, sigma_shift=1)
    got = on(backend, eggroll.perturbed_matmul_int8, xs, W, shared=True, **kw)
    M = len(members) if members is not None else 1
    full = np.ascontiguousarray(np.broadcast_to(xs, (M,) + xs.shape))
    want = ref.perturbed_matmul_int8(full, W, **kw)
    _assert_int8_equal(got, want if members is not None else want[0])
    if backend.name == "numpy":    # a stride-0 member axis takes the same path
        _assert_int8_equal(eggroll.perturbed_matmul_int8(np.broadcast_to(xs, full.shape), W, **kw),
                           want)


@pytest.mark.parametrize("b", LAYOUTS)
def test_unperturbed_matches_reference(b, isa):
    rng = np.random.default_rng(3)
    x, W = _inputs(rng, 7, b, 45, 200)
    want = ref.perturbed_matmul_int8(x, W, members=None, epoch=0, seed=1, sigma_shift=0)
    got = eggroll.perturbed_matmul_int8(x, W, members=None, epoch=0, seed=1, sigma_shift=0)
    _assert_int8_equal(got, want)
    # the reference's unperturbed path is the plain formula, computed here independently
    acc = np.einsum("...k,jk->...j", x.astype(np.int64), W.astype(np.int64))
    _assert_int8_equal(want, np.clip(acc // (16 * math.isqrt(200)), -127, 127).astype(np.int8))


def test_headline_shape_all_paths_agree(restore_int8):
    """A GEMM large enough for several row tiles and column chunks (tails on both)."""
    rng = np.random.default_rng(5)
    x, W = _inputs(rng, 200, None, 300, 1000)
    kw = dict(members=range(200), epoch=1, seed=9, sigma_shift=2)
    want = ref.perturbed_matmul_int8(x, W, **kw)
    for name in eggroll.isas():
        eggroll.set_isa(name)
        _assert_int8_equal(eggroll.perturbed_matmul_int8(x, W, **kw), want)


@pytest.mark.parametrize("M, b, n", [(32, None, 128), (8, 2, 64), (16, None, 192)])
def test_unpadded_layout(M, b, n, isa):
    """n a multiple of 64 and M*b of 16: the kernels read x in place (no packed copy)."""
    rng = np.random.default_rng(n)
    x, W = _inputs(rng, M, b, 50, n)
    kw = dict(members=range(M), epoch=3, seed=1, rank=2, sigma_shift=1)
    _assert_int8_equal(eggroll.perturbed_matmul_int8(x, W, **kw),
                       ref.perturbed_matmul_int8(x, W, **kw))


@pytest.mark.parametrize("threads", [1, 2])
def test_thread_count_and_member_split_do_not_matter(threads, isa):
    eggroll.set_num_threads(threads)
    rng = np.random.default_rng(8)
    x, W = _inputs(rng, 9, 2, 70, 150)
    kw = dict(epoch=2, seed=4, rank=3, sigma_shift=1)
    whole = eggroll.perturbed_matmul_int8(x, W, members=range(9), **kw)
    parts = [eggroll.perturbed_matmul_int8(x[s], W, members=range(9)[s], **kw)
             for s in (slice(0, 3), slice(3, 4), slice(4, 9))]
    _assert_int8_equal(np.concatenate(parts), whole)
    _assert_int8_equal(whole, ref.perturbed_matmul_int8(x, W, members=range(9), **kw))


# ------------------------------------------------------------------------------------------
# overflow edges: every input at an extreme, the largest n
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [127, -127, -128])
def test_extreme_inputs(value, isa):
    n = 4099
    x = np.full((4, n), value, dtype=np.int8)
    W = np.full((19, n), value, dtype=np.int8)
    W[::2] = 127  # mixed signs of the product too
    for fp, shift in ((0, 0), (4, 0), (7, 32)):
        kw = dict(members=range(4), epoch=0, seed=2, rank=3, sigma_shift=shift, fixed_point=fp)
        _assert_int8_equal(eggroll.perturbed_matmul_int8(x, W, **kw),
                           ref.perturbed_matmul_int8(x, W, **kw))


def test_largest_n(isa):
    """n = 2^16: |x . W| reaches 2^30 (all -128) and the correction term of rank 4 is far
    beyond int32 before its shift; every path must still be exact."""
    n = 1 << 16  # cpp/eggroll/int8.h kInt8MaxN
    rng = np.random.default_rng(1)
    for x, W in ((np.full((2, n), -128, np.int8), np.full((3, n), -128, np.int8)),
                 (np.full((2, n), 127, np.int8), np.full((3, n), -127, np.int8)),
                 _inputs(rng, 2, None, 3, n, x_range=127)):
        for shift, fp in ((0, 0), (5, 4)):
            kw = dict(members=[0, 1], epoch=0, seed=3, rank=4, sigma_shift=shift, fixed_point=fp)
            _assert_int8_equal(eggroll.perturbed_matmul_int8(x, W, **kw),
                               ref.perturbed_matmul_int8(x, W, **kw))


def test_reference_correction_is_exact_beyond_int32():
    """The reference keeps (x B)(s A)^T exactly even where int32 would wrap (here the
    unshifted correction exceeds 2^31), then floors the shift."""
    n, r = 8192, 8
    A, B = ref.int8_noise(2, n, k=0, seed=5, rank=r, fixed_point=7)
    x = np.where(B[:, :1].T >= 0, 127, -127).astype(np.int8)  # x . B[:, 0] = 127 sum |B|
    W = np.zeros((2, n), np.int8)
    corr = (x[0].astype(np.int64) @ B) @ A.T
    assert np.abs(corr).max() > 2 ** 31
    y = ref.perturbed_matmul_int8(x, W, members=[0], epoch=0, seed=5, rank=r, sigma_shift=20,
                                  fixed_point=7)
    want = np.clip((corr >> 27) // (128 * math.isqrt(n)), -127, 127)
    np.testing.assert_array_equal(y[0], want.astype(np.int8))


def test_negative_values_floor():
    """Shifts and the final division floor (round toward -inf), also for negative values."""
    n = 16
    x = np.zeros((1, n), np.int8)
    x[0, 0] = -1
    W = np.zeros((1, n), np.int8)
    W[0, 0] = 1  # acc = -1 -> floor(-1 / 64) = -1 (truncation would give 0)
    y = eggroll.perturbed_matmul_int8(x, W, members=None, epoch=0, seed=0, sigma_shift=0)
    assert y[0, 0] == -1


# ------------------------------------------------------------------------------------------
# integer noise
# ------------------------------------------------------------------------------------------

def test_int8_noise_is_the_quantised_normal_stream():
    A, B = ref.int8_noise(5, 7, k=3, seed=SEED, param_id=2, e=4, rank=2, fixed_point=4)
    z = ref.normal(24, seed=SEED, param_id=2, epoch_index=4, noise_index=3)
    q = [max(-127, min(127, int(v * 16))) for v in z.tolist()]  # int() truncates
    assert B.ravel().tolist() == q[:14] and A.ravel().tolist() == q[14:]


# ------------------------------------------------------------------------------------------
# update
# ------------------------------------------------------------------------------------------

UPDATE_CASES = [  # (m, n, pairs, rank, threshold, fixed_point)
    (1, 1, 3, 1, 1, 4), (17, 33, 10, 1, 200, 4), (40, 97, 7, 3, 100, 2),
    (33, 18, 64, 2, 3000, 4), (5, 9, 5000, 1, 20000, 4),   # 5000 columns: two K chunks
    (3, 4, 300, 20, 50000, 7),
]


@pytest.mark.parametrize("case", UPDATE_CASES, ids=[str(c) for c in UPDATE_CASES])
def test_update_matches_reference(case, isa):
    m, n, P, r, T, fp = case
    rng = np.random.default_rng(m + n + P)
    W = rng.integers(-128, 128, (m, n)).astype(np.int8)
    W[0, 0] = 127  # a clamp at the top is possible
    f = rng.integers(-1, 2, P).astype(np.int8)
    kw = dict(threshold=T, epoch=EPOCH, seed=SEED, param_id=PARAM_ID, rank=r, fixed_point=fp,
              noise_reuse=2)
    want = ref.int8_update(W, f, **kw)
    _assert_int8_equal(eggroll.int8_update(W, f, **kw), want)
    if m * n > 1:  # some entries move, not all
        moved = np.mean(want != np.clip(W, -127, 127))
        assert 0 < moved < 1


@pytest.mark.parametrize("case", UPDATE_CASES[:4], ids=[str(c) for c in UPDATE_CASES[:4]])
def test_update_on_every_backend(case, backend):
    m, n, P, r, T, fp = case
    rng = np.random.default_rng(m + n + P)
    W = rng.integers(-128, 128, (m, n)).astype(np.int8)
    f = rng.integers(-1, 2, P).astype(np.int8)
    kw = dict(threshold=T, epoch=EPOCH, seed=SEED, param_id=PARAM_ID, rank=r, fixed_point=fp,
              noise_reuse=2)
    _assert_int8_equal(on(backend, eggroll.int8_update, W, f, **kw), ref.int8_update(W, f, **kw))


def test_update_fitness_forms_and_in_place(restore_int8):
    rng = np.random.default_rng(2)
    W = rng.integers(-127, 128, (20, 30)).astype(np.int8)
    raw = rng.standard_normal(40)
    f = eggroll.antithetic_sign(raw)                      # float32 in {-1, 0, 1}
    kw = dict(threshold=100, epoch=0, seed=1, rank=2)
    want = ref.int8_update(W, f, **kw)
    for form in (f, f.astype(np.int64), f.astype(np.int8).tolist()):
        _assert_int8_equal(eggroll.int8_update(W, form, **kw), want)
    W2 = W.copy()
    assert eggroll.int8_update(W2, f, out=W2, **kw) is W2
    _assert_int8_equal(W2, want)


def test_update_sign_convention():
    """A pair whose + member won (f = 1) moves W along its perturbation A B^T."""
    m, n = 6, 8
    A, B = ref.int8_noise(m, n, k=0, seed=3, rank=1)
    W = np.zeros((m, n), np.int8)
    got = eggroll.int8_update(W, [1], threshold=1, epoch=0, seed=3)
    np.testing.assert_array_equal(got, np.sign(A @ B.T).astype(np.int8))
    got = eggroll.int8_update(W, np.array([-1]), threshold=1, epoch=0, seed=3)
    np.testing.assert_array_equal(got, -np.sign(A @ B.T).astype(np.int8))


def test_update_no_votes_only_clamps():
    W = np.array([[-128, 5], [127, 0]], np.int8)
    got = eggroll.int8_update(W, np.zeros(4, np.int8), threshold=1, epoch=0, seed=0)
    np.testing.assert_array_equal(got, [[-127, 5], [127, 0]])


# ------------------------------------------------------------------------------------------
# errors: ValueError / TypeError naming the argument
# ------------------------------------------------------------------------------------------

def _fwd(**over):
    kw = dict(x=np.zeros((2, 8), np.int8), W=np.zeros((3, 8), np.int8), members=range(2),
              epoch=0, seed=0, sigma_shift=0)
    kw.update(over)
    x, W = kw.pop("x"), kw.pop("W")
    return eggroll.perturbed_matmul_int8(x, W, **kw)


@pytest.mark.parametrize("over, exc, name", [
    (dict(x=np.zeros((2, 8), np.float32)), TypeError, "x"),
    (dict(W=np.zeros((3, 8), np.int16)), TypeError, "W"),
    (dict(x=np.zeros(8, np.int8)), ValueError, "x"),
    (dict(W=np.zeros((3, 7), np.int8)), ValueError, "W"),
    (dict(x=np.zeros((2, 16), np.int8)[:, ::2]), ValueError, "x"),
    (dict(x=np.zeros((1, 2 ** 16 + 1), np.int8), W=np.zeros((1, 2 ** 16 + 1), np.int8),
          members=[0]), ValueError, "x"),
    (dict(members=range(3)), ValueError, "members"),
    (dict(members=[-1, 0]), ValueError, "members"),
    (dict(rank=0), ValueError, "rank"),
    (dict(sigma_shift=-1), ValueError, "sigma_shift"),
    (dict(fixed_point=8), ValueError, "fixed_point"),
    (dict(sigma_shift=1.5), TypeError, "sigma_shift"),
    (dict(epoch=-1), ValueError, "epoch"),
    (dict(out=np.zeros((2, 3), np.float32)), TypeError, "out"),
    (dict(out=np.zeros((2, 4), np.int8)), ValueError, "out"),
])
def test_forward_errors(over, exc, name):
    with pytest.raises(exc, match=f"^{name}:"):
        _fwd(**over)


def test_forward_out_overlap_and_reuse():
    x = np.zeros((2, 8), np.int8)
    with pytest.raises(ValueError, match="^out:"):
        eggroll.perturbed_matmul_int8(x, np.zeros((2, 8), np.int8), members=None, epoch=0,
                                      seed=0, sigma_shift=0, out=x[:, :2])
    out = np.empty((2, 3), np.int8)
    y = eggroll.perturbed_matmul_int8(x, np.ones((3, 8), np.int8), members=None, epoch=0,
                                      seed=0, sigma_shift=0, out=out)
    assert y is out and (out == 0).all()


@pytest.mark.parametrize("over, exc, name", [
    (dict(W=np.zeros((3, 4), np.float32)), TypeError, "W"),
    (dict(W=np.zeros(4, np.int8)), ValueError, "W"),
    (dict(pair_fitness=[0, 2]), ValueError, "pair_fitness"),
    (dict(pair_fitness=[0.5]), ValueError, "pair_fitness"),
    (dict(pair_fitness=np.zeros((2, 2))), ValueError, "pair_fitness"),
    (dict(pair_fitness=["a"]), TypeError, "pair_fitness"),
    (dict(threshold=0), ValueError, "threshold"),
    (dict(threshold=1.0), TypeError, "threshold"),
    (dict(rank=2000), ValueError, "rank"),
    (dict(out=np.zeros((4, 3), np.int8)), ValueError, "out"),
])
def test_update_errors(over, exc, name):
    kw = dict(W=np.zeros((3, 4), np.int8), pair_fitness=[1, -1], threshold=1, epoch=0, seed=0)
    kw.update(over)
    W, f = kw.pop("W"), kw.pop("pair_fitness")
    with pytest.raises(exc, match=f"^{name}:"):
        eggroll.int8_update(W, f, **kw)


def test_isa_errors(restore_int8):
    with pytest.raises(ValueError, match="^name:"):
        eggroll.set_isa("avx9000")
    assert eggroll.best_isa() in eggroll.isas()
    assert "scalar" in eggroll.isas()
