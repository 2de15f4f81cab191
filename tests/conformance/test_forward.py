"""Perturbed forwards on every backend: lowrank_factors, perturbed_matmul(_full),
perturb_vector vs the reference (noise bit for bit, floats within the derived tolerance, the
CPU backends bit for bit with NumPy), shared inputs equal to materialised ones bit for bit; and
the core's own contracts (GEMM rounding, SIMD paths, threads, population splits) on NumPy."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import eggroll
from eggroll import reference as ref

from conftest import (MEMBER_FORMS, assert_close_derived, forward_inputs,
                      fullrank_forward_magnitude, lowrank_forward_magnitude, make_members, on,
                      stream_rows)

SIZES = (1, 17, 97)                  # m, n: odd on purpose
LAYOUTS = (None, 1, 17, 97)          # None: x [M, n]; b: x [M, b, n]
RANKS = tuple(range(1, 9))
NOISE_REUSE = (0, 1, 3)
EPOCH = 7                            # e = 0, 7, 2 for noise_reuse 0, 1, 3: all different
SEED = 0x0123456789ABCDEF
PARAM_ID = 11
M = 5                                # members per call (odd: a range cuts through a pair)
SIGMAS = (0.01, 0.5, 2.0)


def _layout_id(b):
    return "2d" if b is None else f"b{b}"


_inputs = forward_inputs


def _grid():
    """Every (m, n, layout) with every rank 1..8; the remaining options rotate with the
    case index so that each shape sees both antithetic settings, every noise_reuse and
    every member form across its 8 ranks."""
    cases = []
    for idx, (m, n, b) in enumerate(itertools.product(SIZES, SIZES, LAYOUTS)):
        for rank in RANKS:
            j = idx + rank
            cases.append(pytest.param(
                m, n, b, rank, bool(j % 2), NOISE_REUSE[j % 3], MEMBER_FORMS[(idx + 2 * rank) % 3],
                SIGMAS[(idx + rank // 3) % 3],
                id=f"m{m}-n{n}-{_layout_id(b)}-r{rank}-{'anti' if j % 2 else 'plain'}-"
                   f"reuse{NOISE_REUSE[j % 3]}-{MEMBER_FORMS[(idx + 2 * rank) % 3]}"))
    return cases


def _key(members, sigma, noise_reuse, antithetic, **extra):
    return dict(members=members, epoch=EPOCH, seed=SEED, param_id=PARAM_ID, sigma=sigma,
                noise_reuse=noise_reuse, antithetic=antithetic, **extra)


# ------------------------------------------------------------------------------------------
# The oracle's own mapping (ops.md, "Which noise a member sees")
# ------------------------------------------------------------------------------------------

def test_reference_member_noise_and_epoch_index():
    assert [ref.member_noise(i, True) for i in range(5)] == [(0, 1), (0, -1), (1, 1), (1, -1), (2, 1)]
    assert [ref.member_noise(i, False) for i in range(3)] == [(0, 1), (1, 1), (2, 1)]
    assert [ref.epoch_index(EPOCH, r) for r in NOISE_REUSE] == [0, 7, 2]
    assert ref.epoch_index(2**32 - 1, 2**32 - 1) == 1


# ------------------------------------------------------------------------------------------
# lowrank_factors: pure noise times one float32 scale -> bit-identical to the reference
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("m,n", list(itertools.product(SIZES, SIZES)))
@pytest.mark.parametrize("rank", RANKS)
def test_lowrank_factors_bit_identical(m, n, rank, rng, backend):
    j = m + n + rank
    key = _key(make_members(MEMBER_FORMS[j % 3], M, rng), SIGMAS[rank % 3],
               NOISE_REUSE[j % 3], bool(j % 2), rank=rank)
    A, B = on(backend, eggroll.lowrank_factors, (m, n), like=True, **key)
    A_ref, B_ref = ref.lowrank_factors((m, n), **key)
    assert A.dtype == B.dtype == np.float32
    assert A.shape == (M, m, rank) and B.shape == (M, n, rank)
    np.testing.assert_array_equal(A, A_ref)
    np.testing.assert_array_equal(B, B_ref)


def test_lowrank_factors_layout_and_scale():
    """B = the first n*r stream values row-major, A = the next m*r times s_i sigma/sqrt(r)
    rounded once to float32 -- built here from eggroll.normal, independently of reference."""
    m, n, r, sigma = 3, 4, 2, 0.3
    A, B = eggroll.lowrank_factors((m, n), members=[0, 1, 6], epoch=5, seed=9, sigma=sigma,
                                   rank=r, noise_reuse=2)
    for row, (member, k, s) in enumerate([(0, 0, 1), (1, 0, -1), (6, 3, 1)]):
        z = eggroll.normal((m + n) * r, seed=9, epoch_index=2, noise_index=k)
        np.testing.assert_array_equal(B[row], z[:n * r].reshape(n, r))
        c = np.float32(s * sigma / np.sqrt(r))
        np.testing.assert_array_equal(A[row], c * z[n * r:].reshape(m, r))
    np.testing.assert_array_equal(A[0], -A[1])  # antithetic partners: opposite A, same B
    np.testing.assert_array_equal(B[0], B[1])


def test_lowrank_factors_stepped_and_reversed_ranges():
    for members in (range(9, 0, -3), range(2, 30, 7)):
        key = dict(members=members, epoch=2, seed=8, sigma=0.7, rank=3)
        A, B = eggroll.lowrank_factors((4, 5), **key)
        A_ref, B_ref = ref.lowrank_factors((4, 5), **key)
        assert A.shape == (len(members), 4, 3)
        np.testing.assert_array_equal(A, A_ref)
        np.testing.assert_array_equal(B, B_ref)


# ------------------------------------------------------------------------------------------
# perturbed_matmul (EGGROLL, low rank) and perturbed_matmul_full (OpenES) vs the reference
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("m,n,b,rank,antithetic,noise_reuse,form,sigma", _grid())
def test_perturbed_matmul_matches_reference(m, n, b, rank, antithetic, noise_reuse, form,
                                            sigma, rng, backend):
    x, W = _inputs(rng, M, m, n, b)
    key = _key(make_members(form, M, rng), sigma, noise_reuse, antithetic, rank=rank)
    y = on(backend, eggroll.perturbed_matmul, x, W, **key)
    if backend.cpu:
        np.testing.assert_array_equal(y, eggroll.perturbed_matmul(x, W, **key))
    assert y.shape == x.shape[:-1] + (m,)
    r64 = ref.perturbed_matmul(x, W, **key, dtype=np.float64)
    r32 = ref.perturbed_matmul(x, W, **key)
    A, B = ref.lowrank_factors((m, n), **key, dtype=np.float64)
    assert_close_derived(y, r64, r32, lowrank_forward_magnitude(x, W, A, B), "perturbed_matmul")


def test_repeated_small_calls_follow_every_key_field(rng, backend):
    """A small forward's factors come from a per-thread memo of recent streams (docs/ops.md):
    calls alternating keys that differ in one field each (or in the split of the same count
    into n and m) must each see their own noise, never a previous call's."""
    base = dict(members=range(6), epoch=3, seed=21, param_id=4, sigma=0.5, noise_reuse=1,
                antithetic=True, rank=2)
    variants = [{}, dict(seed=22), dict(param_id=5), dict(epoch=4), dict(noise_reuse=2),
                dict(antithetic=False), dict(rank=1), dict(members=range(1, 7)), {}]
    outputs = []
    for shape in ((5, 7), (7, 5), (5, 7)):      # the same (n + m) * r, split the other way
        x, W = _inputs(rng, 6, *shape, 2)
        for change in variants:
            key = {**base, **change}
            y = np.asarray(on(backend, eggroll.perturbed_matmul, x, W, **key))
            r64 = ref.perturbed_matmul(x, W, **key, dtype=np.float64)
            r32 = ref.perturbed_matmul(x, W, **key)
            A, B = ref.lowrank_factors(shape, **key, dtype=np.float64)
            assert_close_derived(y, r64, r32, lowrank_forward_magnitude(x, W, A, B),
                                 f"perturbed_matmul {shape} {change}")
            outputs.append(y)
    assert not np.array_equal(outputs[0], outputs[1])      # the keys really differ


def _full_grid():
    cases = []
    for idx, (m, n, b) in enumerate(itertools.product(SIZES, SIZES, LAYOUTS)):
        for t, (antithetic, noise_reuse) in enumerate(itertools.product((True, False), NOISE_REUSE)):
            form = MEMBER_FORMS[(idx + t) % 3]
            cases.append(pytest.param(
                m, n, b, antithetic, noise_reuse, form, SIGMAS[(idx + t) % 3],
                id=f"m{m}-n{n}-{_layout_id(b)}-{'anti' if antithetic else 'plain'}-"
                   f"reuse{noise_reuse}-{form}"))
    return cases


@pytest.mark.parametrize("m,n,b,antithetic,noise_reuse,form,sigma", _full_grid())
def test_perturbed_matmul_full_matches_reference(m, n, b, antithetic, noise_reuse, form, sigma,
                                                 rng, backend):
    x, W = _inputs(rng, M, m, n, b)
    members = make_members(form, M, rng)
    key = _key(members, sigma, noise_reuse, antithetic)
    y = on(backend, eggroll.perturbed_matmul_full, x, W, **key)
    if backend.cpu:
        np.testing.assert_array_equal(y, eggroll.perturbed_matmul_full(x, W, **key))
    assert y.shape == x.shape[:-1] + (m,)
    r64 = ref.perturbed_matmul_full(x, W, **key, dtype=np.float64)
    r32 = ref.perturbed_matmul_full(x, W, **key)
    Z, s = stream_rows(m * n, members, seed=SEED, param_id=PARAM_ID, epoch=EPOCH,
                       noise_reuse=noise_reuse, antithetic=antithetic)
    E = sigma * Z.reshape(M, m, n)
    assert_close_derived(y, r64, r32, fullrank_forward_magnitude(x, W, E), "perturbed_matmul_full")


@pytest.mark.parametrize("m", SIZES)
@pytest.mark.parametrize("antithetic", [True, False])
@pytest.mark.parametrize("noise_reuse", NOISE_REUSE)
@pytest.mark.parametrize("form", MEMBER_FORMS)
def test_perturb_vector_bit_identical(m, antithetic, noise_reuse, form, rng, backend):
    """v + float32(s_i sigma) * z[0:m] is two correctly rounded float32 operations per
    element with no accumulation, so the result must match the reference bit for bit."""
    v = rng.standard_normal(m).astype(np.float32)
    key = _key(make_members(form, 7, rng), 0.37, noise_reuse, antithetic)
    out = on(backend, eggroll.perturb_vector, v, **key)
    assert out.dtype == np.float32 and out.shape == (7, m)
    np.testing.assert_array_equal(out, ref.perturb_vector(v, **key))


@pytest.mark.parametrize("op", sorted(["perturbed_matmul", "perturbed_matmul_full"]))
def test_float64_and_float16_inputs_are_computed_in_float32(op, rng, cpu_backend):
    """The dtype policy (docs/ops.md): float inputs a kernel does not take (float64 always,
    float16 on the CPU) are converted to float32 first; the result is float32."""
    x, W = _inputs(rng, 4, 17, 17, 2)
    key = dict(members=range(4), epoch=1, seed=2, sigma=0.5)
    fn = getattr(eggroll, op)
    expected = fn(x, W, **key)
    for dtype in (np.float64, np.float16):
        xd, Wd = x.astype(dtype), W.astype(dtype)
        y = on(cpu_backend, fn, xd, Wd, **key)
        assert y.dtype == np.float32
        np.testing.assert_array_equal(y, fn(xd.astype(np.float32), Wd.astype(np.float32), **key))
    np.testing.assert_array_equal(on(cpu_backend, fn, x.astype(np.float64), W, **key), expected)


# ------------------------------------------------------------------------------------------
# members=None: no perturbation, exactly x @ W.T
# ------------------------------------------------------------------------------------------

def _numpy_product(x, W):
    """NumPy's x @ W.T as ONE [M*b, n] @ [n, m] product over every row of the population.

    NumPy's batched x @ W.T on a 3-D x would instead run one [b, n] GEMM per member;
    OpenBLAS picks kernels and blocking by the product's shape (b = 1 even becomes a GEMV),
    so its bits may differ from the 2-D product by a few ulps. ops.md's base product is
    "one large GEMM shared by the whole population", hence the 2-D view."""
    n = x.shape[-1]
    return (x.reshape(-1, n) @ W.T).reshape(x.shape[:-1] + (W.shape[0],))


def test_reference_fma32_rounds_once():
    """The reference's float32 FMA rounds a*b + c once, also where rounding a*b + c to
    float64 first lands exactly halfway between two float32 values: here a*b = 32 - 2^-41
    and c = 2^29 + 64 (an odd float32), so the exact sum lies just below the midpoint
    c + 32; the correct result is c, a double rounding would give the even c + 64."""
    a = np.float32(32 * (1 + 2**-23))
    b = np.float32(1 - 2**-23)
    c = np.float32(2**29 + 64)
    assert float(a) * float(b) == 32 - 2**-41
    got = ref._fma32(np.array([a]), np.array([b]), np.array([c]))
    assert got.dtype == np.float32 and got[0] == c
    assert np.float32(float(a) * float(b) + float(c)) == c + 64   # the double-rounding trap
    assert ref._fma32(np.array([np.float32(3)]), np.array([np.float32(0.5)]),
                      np.array([np.float32(-1)]))[0] == 0.5


# The last two are "tall" (>= 16 row blocks, W <= 2^18 values): the driver's row-split path.
GEMM_SHAPES = [(6, 1, 1), (85, 1, 97), (6, 97, 97), (17, 17, 256), (9, 5, 257), (33, 40, 600),
               (300, 40, 300), (225, 33, 513)]


@pytest.mark.parametrize("R,m,n", GEMM_SHAPES)
def test_base_product_is_the_gemm_contract(R, m, n, isa_name, rng):
    """members=None returns the core GEMM's product, whose rounding sequence docs/ops.md fixes
    (256-long FMA chains from +0, slices added in order): bit-identical to the reference's
    matmul_nt on every SIMD path, for both layouts (the 3-D x is the same [M*b, n] rows)."""
    eggroll.set_isa(isa_name)
    x, W = _inputs(rng, R, m, n, None)
    expected = ref.matmul_nt(x, W)
    for op in ("perturbed_matmul", "perturbed_matmul_full"):
        y = getattr(eggroll, op)(x, W, members=None, epoch=0, seed=0, sigma=1.0)
        np.testing.assert_array_equal(y, expected, err_msg=op)
    if R % 3 == 0:
        x3 = x.reshape(R // 3, 3, n)
        y3 = eggroll.perturbed_matmul(x3, W, members=None, epoch=0, seed=0, sigma=1.0)
        np.testing.assert_array_equal(y3, expected.reshape(R // 3, 3, m))


def test_base_product_uses_a_true_fma(isa_name):
    """The FMA-tie case of test_reference_fma32_rounds_once through the core's GEMM: row
    (c, a) times column (1, b) is fma(a, b, c * 1) = c on every path (not c + 64)."""
    eggroll.set_isa(isa_name)
    a, b, c = np.float32(32 * (1 + 2**-23)), np.float32(1 - 2**-23), np.float32(2**29 + 64)
    x = np.array([[c, a]], np.float32)
    W = np.array([[1, b]], np.float32)
    y = eggroll.perturbed_matmul(x, W, members=None, epoch=0, seed=0, sigma=1.0)
    assert y[0, 0] == c
    np.testing.assert_array_equal(y, ref.matmul_nt(x, W))


@pytest.mark.parametrize("op", ["perturbed_matmul", "perturbed_matmul_full"])
@pytest.mark.parametrize("m,n", [(1, 1), (1, 97), (17, 97), (97, 17), (97, 97)])
@pytest.mark.parametrize("b", LAYOUTS)
def test_members_none_is_the_unperturbed_product(op, m, n, b, rng, backend):
    """members=None adds no perturbation: the result does not depend on the noise key at
    all, matches x @ W.T within the derived tolerance, and is bit-exact where there is no
    summation order to choose (n = 1: each output is one correctly rounded product)."""
    x, W = _inputs(rng, 6, m, n, b)
    fn = getattr(eggroll, op)
    y = on(backend, fn, x, W, members=None, epoch=3, seed=1, sigma=0.5)
    np.testing.assert_array_equal(y, on(backend, fn, x, W, members=None, epoch=99, seed=2**64 - 1,
                                        param_id=5, sigma=7.0, noise_reuse=0, antithetic=False))
    r64 = getattr(ref, op)(x, W, members=None, epoch=3, seed=1, sigma=0.5, dtype=np.float64)
    r32 = getattr(ref, op)(x, W, members=None, epoch=3, seed=1, sigma=0.5)
    magnitude = np.abs(x.astype(np.float64)) @ np.abs(W.astype(np.float64)).T
    assert_close_derived(y, r64, r32, magnitude, f"{op}(members=None)")
    if n == 1 and backend.cpu:
        np.testing.assert_array_equal(y, _numpy_product(x, W))


# ------------------------------------------------------------------------------------------
# Shared inputs: one x for every member, the same bits as the materialised input
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["perturbed_matmul", "perturbed_matmul_full"])
@pytest.mark.parametrize("b", [None, 1, 6])
@pytest.mark.parametrize("members", [range(3, 10), "array", None], ids=["range", "array", "none"])
def test_shared_input_equals_the_materialised_input(op, b, members, rng, backend):
    """shared=True with x [n] | [b, n] (no member axis) gives the bits of the same x repeated
    for every member (the core GEMM is row-split invariant, docs/ops.md "The base product"):
    on the CPU backends bit for bit; on GPUs within the derived tolerance (cuBLAS may round a
    differently shaped product differently). Without members it is the plain product."""
    if members == "array":
        members = rng.permutation(20)[:7].astype(np.int64)
    M, n = 7, 33
    xs = rng.standard_normal((n,) if b is None else (b, n)).astype(np.float32)
    W = (rng.standard_normal((19, n)) / np.sqrt(n)).astype(np.float32)
    key = dict(epoch=3, seed=5, param_id=2, sigma=0.3, members=members)
    fn = getattr(eggroll, op)
    y = on(backend, fn, xs, W, shared=True, **key)
    full = np.ascontiguousarray(np.broadcast_to(xs, (M if members is not None else 1,) + xs.shape))
    want = fn(full, W, **key)
    if members is None:
        want = want[0]
    assert y.shape == want.shape
    if backend.cpu:
        np.testing.assert_array_equal(y, want)
    else:
        r64 = getattr(ref, op)(full, W, **key, dtype=np.float64)
        assert_close_derived(y, r64[0] if members is None else r64,
                             want, np.abs(want) + 1, f"{op} shared")


@pytest.mark.parametrize("op", ["perturbed_matmul", "perturbed_matmul_full"])
def test_stride0_member_axis_is_a_shared_input(op, rng):
    """A broadcast (stride-0) member axis, numpy.broadcast_to or torch's expand, is detected
    from the strides and takes the shared path: the materialised input's bits."""
    xs = rng.standard_normal((3, 16)).astype(np.float32)
    W = rng.standard_normal((5, 16)).astype(np.float32)
    key = dict(members=range(6), epoch=1, seed=2, sigma=0.5)
    fn = getattr(eggroll, op)
    want = fn(np.ascontiguousarray(np.broadcast_to(xs, (6, 3, 16))), W, **key)
    np.testing.assert_array_equal(fn(np.broadcast_to(xs, (6, 3, 16)), W, **key), want)
    torch = pytest.importorskip("torch")
    got = fn(torch.from_numpy(xs).expand(6, 3, 16), torch.from_numpy(W), **key)
    np.testing.assert_array_equal(got.numpy(), want)


# ops.md's "members=None gives exactly x @ W.T" is honoured as "exactly the core's product,
# with no noise term" (tested above against reference.matmul_nt, bit for bit); NumPy's BLAS
# bits cannot be promised together with split-population identity (docs/ops.md, "The base
# product"), so there is deliberately no bitwise comparison with NumPy here.


# ------------------------------------------------------------------------------------------
# Noise reuse: e = epoch // noise_reuse (0 when noise_reuse = 0)
# ------------------------------------------------------------------------------------------

def test_noise_reuse_windows(rng):
    x, W = _inputs(rng, 4, 17, 17, None)

    def y(epoch, noise_reuse):
        return eggroll.perturbed_matmul(x, W, members=range(4), epoch=epoch, seed=3, sigma=1.0,
                                        rank=2, noise_reuse=noise_reuse)

    # noise_reuse = 3: epochs 6, 7, 8 share e = 2; epoch 9 starts e = 3
    np.testing.assert_array_equal(y(6, 3), y(8, 3))
    assert not np.array_equal(y(8, 3), y(9, 3))
    # noise_reuse = 0: the same noise forever, equal to noise_reuse = 1 at epoch 0
    np.testing.assert_array_equal(y(0, 0), y(12345, 0))
    np.testing.assert_array_equal(y(0, 0), y(0, 1))
    # noise_reuse = 1: every epoch its own noise
    assert not np.array_equal(y(1, 1), y(2, 1))


# ------------------------------------------------------------------------------------------
# Split populations and member order: bit identity
# ------------------------------------------------------------------------------------------

SPLIT_N = 17


def _split_results(op, x, W, perm, **key):
    """(one call on range(N), [calls on range(0,k) + range(k,N) for several k],
    one call on the permutation perm)."""
    N = x.shape[0]
    whole = op(x, W, members=range(N), **key)
    splits = [np.concatenate([op(x[:k], W, members=range(k), **key),
                              op(x[k:], W, members=range(k, N), **key)])
              for k in (1, 2, 6, 9, N - 1)]
    permuted = op(x[perm], W, members=perm.astype(np.int32), **key)
    return whole, splits, permuted


FORWARD_OPS = {
    "perturbed_matmul": (eggroll.perturbed_matmul, dict(rank=3)),
    "perturbed_matmul_full": (eggroll.perturbed_matmul_full, {}),
}


@pytest.mark.parametrize("op", sorted(FORWARD_OPS))
@pytest.mark.parametrize("b", [None, 3])
def test_split_population_correction_bit_identical(op, b, rng):
    """Each member's correction depends on its own row and noise only. W = 0 makes the base
    product x @ W.T exactly zero whichever GEMM kernel computes it, isolating the core's
    per-member correction: splitting the population over calls, or permuting it, must
    not change a single bit."""
    fn, extra = FORWARD_OPS[op]
    x, _ = _inputs(rng, SPLIT_N, 17, 97, b)
    W = np.zeros((17, 97), np.float32)
    perm = rng.permutation(SPLIT_N)
    whole, splits, permuted = _split_results(fn, x, W, perm, epoch=4, seed=77, sigma=0.2, **extra)
    assert np.abs(whole).max() > 0
    for parts in splits:
        np.testing.assert_array_equal(parts, whole)
    np.testing.assert_array_equal(permuted, whole[perm])


@pytest.mark.parametrize("op", sorted(FORWARD_OPS))
def test_split_population_bit_identical(op, rng):
    """The same with a general W: the base product must not depend on which other members
    share the call either (a BLAS GEMM would: it picks kernels by the row count)."""
    fn, extra = FORWARD_OPS[op]
    x, W = _inputs(rng, SPLIT_N, 17, 97, None)
    perm = rng.permutation(SPLIT_N)
    whole, splits, permuted = _split_results(fn, x, W, perm, epoch=4, seed=77, sigma=0.2, **extra)
    for parts in splits:
        np.testing.assert_array_equal(parts, whole)
    np.testing.assert_array_equal(permuted, whole[perm])


def test_split_population_perturb_vector_bit_identical(rng):
    v = rng.standard_normal(97).astype(np.float32)
    key = dict(epoch=4, seed=77, sigma=0.2)
    whole = eggroll.perturb_vector(v, members=range(SPLIT_N), **key)
    for k in (1, 2, 6, 9, SPLIT_N - 1):
        parts = np.concatenate([eggroll.perturb_vector(v, members=range(k), **key),
                                eggroll.perturb_vector(v, members=range(k, SPLIT_N), **key)])
        np.testing.assert_array_equal(parts, whole)
    perm = rng.permutation(SPLIT_N)
    np.testing.assert_array_equal(eggroll.perturb_vector(v, members=perm.astype(np.int32), **key),
                                  whole[perm])


# ------------------------------------------------------------------------------------------
# Thread count and SIMD path: bit identity
# ------------------------------------------------------------------------------------------

def _forward_outputs(x3, x2, W, v):
    """Every forward op on inputs big enough that the core splits the work over threads."""
    key = dict(members=np.arange(3, 3 + x3.shape[0]), epoch=9, seed=5, param_id=2, sigma=0.3)
    A, B = eggroll.lowrank_factors(W.shape, rank=4, **key)
    return {
        "lowrank_factors.A": A, "lowrank_factors.B": B,
        "perturbed_matmul.3d": eggroll.perturbed_matmul(x3, W, rank=4, **key),
        "perturbed_matmul.2d": eggroll.perturbed_matmul(x2, W, rank=7, **key),
        "perturbed_matmul_full.3d": eggroll.perturbed_matmul_full(x3, W, **key),
        "perturbed_matmul_full.2d": eggroll.perturbed_matmul_full(x2, W, **key),
        "perturb_vector": eggroll.perturb_vector(v, **key),
    }


@pytest.fixture
def forward_inputs(rng):
    M, m, n = 64, 97, 97
    x3, W = _inputs(rng, M, m, n, 3)
    x2, _ = _inputs(rng, M, m, n, None)
    return x3, x2, W, rng.standard_normal(m).astype(np.float32)


@pytest.mark.parametrize("threads", [2, 7])
def test_thread_count_bit_identical(threads, forward_inputs, restore_threads):
    eggroll.set_num_threads(1)
    one = _forward_outputs(*forward_inputs)
    eggroll.set_num_threads(threads)
    assert eggroll.get_num_threads() == threads
    many = _forward_outputs(*forward_inputs)
    for name in one:
        np.testing.assert_array_equal(one[name], many[name], err_msg=name)


LEVELS = ("scalar", "avx2", "avx_vnni", "avx512", "avx512_vnni", "amx")


def test_best_isa_is_a_known_path():
    assert eggroll.best_isa() in LEVELS
    assert eggroll.get_isa() in LEVELS
    assert eggroll.isas()[0] == "scalar" and eggroll.best_isa() == eggroll.isas()[-1]


def test_simd_paths_bit_identical(isa_name, forward_inputs):
    eggroll.set_isa("scalar")
    baseline = _forward_outputs(*forward_inputs)
    eggroll.set_isa(isa_name)
    assert eggroll.get_isa() == isa_name
    out = _forward_outputs(*forward_inputs)
    for name in baseline:
        np.testing.assert_array_equal(out[name], baseline[name], err_msg=f"{isa_name}: {name}")
    # and the noise-only op equals the reference on this path
    A_ref, B_ref = ref.lowrank_factors((97, 97), members=np.arange(3, 67), epoch=9, seed=5,
                                       param_id=2, sigma=0.3, rank=4)
    np.testing.assert_array_equal(out["lowrank_factors.A"], A_ref)
    np.testing.assert_array_equal(out["lowrank_factors.B"], B_ref)
