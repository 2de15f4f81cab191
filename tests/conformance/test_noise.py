"""The noise stream (docs/noise.md): Philox known answers, bit-identity, statistics, accuracy."""
from __future__ import annotations

import functools
import math

import numpy as np
import pytest

import eggroll
from eggroll import reference as ref

from conftest import on

ISAS = ("scalar", "avx2", "avx512")
STREAM_END = 1 << 34  # values j < 2^34 of one stream are addressable (noise.md, "Keying")
U32_MAX = (1 << 32) - 1
U64_MAX = (1 << 64) - 1


# ------------------------------------------------------------------------------------------
# fixtures and helpers
# ------------------------------------------------------------------------------------------

@pytest.fixture
def restore_backend():
    """Put the SIMD path and thread count back the way the test found them."""
    isa, threads = eggroll.get_isa(), eggroll.get_num_threads()
    yield
    eggroll.set_isa(isa)
    eggroll.set_num_threads(threads)


@pytest.fixture(params=ISAS)
def isa(request, restore_backend):
    """Every SIMD path of the noise kernel; paths this CPU lacks are skipped."""
    try:
        eggroll.set_isa(request.param)
    except ValueError:
        pytest.skip(f"this CPU lacks the {request.param} path (best: {eggroll.best_isa()})")
    assert eggroll.get_isa() == request.param
    return request.param


@pytest.fixture(params=[1, 2], ids=["threads1", "threads2"])
def threads(request, restore_backend):
    eggroll.set_num_threads(request.param)
    assert eggroll.get_num_threads() == request.param
    return request.param


def assert_same_bits(got: np.ndarray, want: np.ndarray) -> None:
    """float32 arrays equal bit for bit (not just numerically: -0.0 != 0.0 here)."""
    assert got.dtype == np.float32 and want.dtype == np.float32
    assert got.shape == want.shape, (got.shape, want.shape)
    gb, wb = np.ascontiguousarray(got).view(np.uint32), np.ascontiguousarray(want).view(np.uint32)
    if not np.array_equal(gb, wb):
        bad = np.flatnonzero(gb.ravel() != wb.ravel())
        i = int(bad[0])
        pytest.fail(f"{bad.size} of {gb.size} values differ; first at {i}: "
                    f"got {got.ravel()[i]!r} ({gb.ravel()[i]:#010x}), "
                    f"want {want.ravel()[i]!r} ({wb.ravel()[i]:#010x})")


@functools.lru_cache(maxsize=None)
def _ref_normal_cached(count: int, seed: int, param_id: int, e: int, k: int,
                       offset: int) -> np.ndarray:
    z = ref.normal(count, seed=seed, param_id=param_id, epoch_index=e, noise_index=k,
                   offset=offset)
    z = np.array(z, dtype=np.float32)  # own copy, frozen: shared between tests
    z.flags.writeable = False
    return z


def ref_normal(count: int, *, seed: int, param_id: int = 0, epoch_index: int = 0,
               noise_index: int = 0, offset: int = 0) -> np.ndarray:
    return _ref_normal_cached(count, seed, param_id, epoch_index, noise_index, offset)


def float32_ulp(y: np.ndarray) -> np.ndarray:
    """The spacing of float32 numbers at the (float64) value y: 2^(floor(log2|y|) - 23)."""
    _, ex = np.frexp(y)  # |y| = m 2^ex, m in [0.5, 1)  =>  floor(log2|y|) = ex - 1
    return np.ldexp(1.0, np.maximum(ex - 1, -126) - 23)


def ulp_error(y32: np.ndarray, y64: np.ndarray) -> np.ndarray:
    return np.abs(y32.astype(np.float64) - y64) / float32_ulp(y64)


def uniform64(x: np.ndarray) -> np.ndarray:
    """u(x) = (2 (x >> 9) + 1) 2^-24 (noise.md), exact in float64."""
    return (2.0 * (np.asarray(x, dtype=np.uint32) >> np.uint32(9)).astype(np.float64) + 1.0) \
        * 2.0**-24


# ------------------------------------------------------------------------------------------
# Philox4x32-10 known answers (Random123 test vectors, quoted in docs/noise.md)
# ------------------------------------------------------------------------------------------

KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]
KAT_IDS = ["zeros", "ones", "pi"]


@pytest.mark.parametrize("impl", [eggroll.philox4x32, ref.philox4x32], ids=["eggroll", "reference"])
@pytest.mark.parametrize(("counter", "key", "want"), KNOWN_ANSWERS, ids=KAT_IDS)
def test_philox_known_answers(impl, counter, key, want):
    got = impl(np.array(counter, dtype=np.uint32), np.array(key, dtype=np.uint32))
    assert got.dtype == np.uint32 and got.shape == (4,)
    assert [int(v) for v in got] == list(want)


@pytest.mark.parametrize("impl", [eggroll.philox4x32, ref.philox4x32], ids=["eggroll", "reference"])
@pytest.mark.parametrize("batch", [(1,), (5,), (2, 3), (3, 1, 2)])
@pytest.mark.parametrize(("counter", "key", "want"), KNOWN_ANSWERS, ids=KAT_IDS)
def test_philox_known_answers_batched(impl, batch, counter, key, want):
    """A batch [..., 4] of identical counters gives the known answer in every row."""
    c = np.broadcast_to(np.array(counter, dtype=np.uint32), batch + (4,)).copy()
    got = impl(c, np.array(key, dtype=np.uint32))
    assert got.dtype == np.uint32 and got.shape == batch + (4,)
    assert np.array_equal(got, np.broadcast_to(np.array(want, dtype=np.uint32), batch + (4,)))


def test_philox_batch_rows_are_independent_calls():
    """Every row of a mixed batch equals its own single call (and the reference)."""
    rng = np.random.default_rng(7)
    c = rng.integers(0, 1 << 32, size=(4, 3, 4), dtype=np.uint64).astype(np.uint32)
    c[0, 0] = KNOWN_ANSWERS[2][0]
    key = np.array(KNOWN_ANSWERS[2][1], dtype=np.uint32)
    got = eggroll.philox4x32(c, key)
    assert got.shape == (4, 3, 4)
    assert [int(v) for v in got[0, 0]] == list(KNOWN_ANSWERS[2][2])
    for idx in np.ndindex(4, 3):
        assert np.array_equal(got[idx], eggroll.philox4x32(c[idx], key))
    assert np.array_equal(got, ref.philox4x32(c, key))


@pytest.mark.parametrize(("counter", "key", "want"), KNOWN_ANSWERS, ids=KAT_IDS)
def test_philox_known_answers_on_every_backend(counter, key, want, backend):
    c = np.tile(np.array(counter, np.uint32), (3, 1))
    got = on(backend, eggroll.philox4x32, c, np.array(key, np.uint32))
    assert got.dtype == np.uint32
    assert all([int(v) for v in row] == list(want) for row in got)


@pytest.mark.parametrize("count,offset", [(0, 0), (1, 5), (37, 3), (4099, 2**34 - 4099)])
def test_normal_on_every_backend(count, offset, backend):
    """The stream bit for bit on every backend (like= picks the framework and device)."""
    key = dict(seed=0xDEADBEEF12345678, param_id=7, epoch_index=3, noise_index=9)
    got = on(backend, eggroll.normal, count, offset=offset, like=True, **key)
    assert got.dtype == np.float32 and got.shape == (count,)
    assert_same_bits(got, ref.normal(count, offset=offset, **key))


def test_philox_accepts_python_ints():
    got = eggroll.philox4x32([0xFFFFFFFF] * 4, [0xFFFFFFFF, 0xFFFFFFFF])
    assert got.dtype == np.uint32
    assert [int(v) for v in got] == list(KNOWN_ANSWERS[1][2])


# ------------------------------------------------------------------------------------------
# Keying: normal() is Box–Muller of the Philox words at counter (j // 4, k, e, param_id)
# ------------------------------------------------------------------------------------------

def box_muller64(words: np.ndarray) -> np.ndarray:
    """float64 normals from Philox words [B, 4] in stream order (noise.md, computed in double)."""
    u = uniform64(words)
    r0, r1 = np.sqrt(-2.0 * np.log(u[:, 0])), np.sqrt(-2.0 * np.log(u[:, 2]))
    t0, t1 = 2.0 * np.pi * u[:, 1], 2.0 * np.pi * u[:, 3]
    return np.stack([r0 * np.cos(t0), r0 * np.sin(t0), r1 * np.cos(t1), r1 * np.sin(t1)],
                    axis=1).reshape(-1)


# Worst case of z = R cos(theta) in float32 ulps: radius 1.46 + angle 1.69 (measured in
# test_box_muller_accuracy) + 0.5 for the rounding of the product, < 3.65; observed 3.59.
Z_MAX_ULP = 4.0


@pytest.mark.parametrize(("seed", "param_id", "e", "k"), [
    (0, 0, 0, 0), (0xDEADBEEFCAFEF00D, 17, 3, 9), (U64_MAX, U32_MAX, U32_MAX, U32_MAX),
])
def test_normal_is_box_muller_of_the_keyed_philox_words(seed, param_id, e, k):
    """Independent of the reference: key = (seed mod 2^32, seed >> 32), counter =
    (block, k, e, param_id), normals (R cos, R sin) from (x0, x1) and (x2, x3), within the
    documented float32 accuracy of the transform."""
    nblocks = 1 << 16
    first = 12345
    c = np.zeros((nblocks, 4), dtype=np.uint32)
    c[:, 0] = np.arange(first, first + nblocks, dtype=np.uint32)
    c[:, 1], c[:, 2], c[:, 3] = k, e, param_id
    key = np.array([seed & U32_MAX, seed >> 32], dtype=np.uint32)
    z64 = box_muller64(eggroll.philox4x32(c, key))
    z32 = eggroll.normal(4 * nblocks, seed=seed, param_id=param_id, epoch_index=e,
                         noise_index=k, offset=4 * first)
    err = ulp_error(z32, z64)
    assert err.max() < Z_MAX_ULP, f"max error {err.max():.3f} ulp at {int(err.argmax())}"


# ------------------------------------------------------------------------------------------
# Bit-identity: C++ kernel == NumPy reference, on every SIMD path and thread count
# ------------------------------------------------------------------------------------------

COUNTS = [1, 3, 5, 17, 63, 64, 65, 1_000_003]
OFFSETS = [0, 1, 2, 3, 5, 61, "end"]  # "end": offset = 2^34 - count, the last values


@pytest.mark.parametrize("offset", OFFSETS, ids=[f"off{o}" for o in OFFSETS])
@pytest.mark.parametrize("count", COUNTS, ids=[f"n{c}" for c in COUNTS])
def test_normal_matches_reference_bitwise(count, offset, isa, threads):
    off = STREAM_END - count if offset == "end" else offset
    key = dict(seed=0x0123456789ABCDEF, param_id=5, epoch_index=2, noise_index=11)
    got = eggroll.normal(count, offset=off, **key)
    assert_same_bits(got, ref_normal(count, offset=off, **key))


KEYS = [  # (seed, param_id, epoch_index, noise_index)
    (0, 0, 0, 0),
    (1, 0, 0, 0),
    (U32_MAX, 1, 1, 1),            # seed fills the low key word only
    (1 << 32, 0, 0, 0),            # seed in the high key word only
    (1 << 63, 7, 0, 3),
    (U64_MAX, U32_MAX, U32_MAX, U32_MAX),
    (0x9E3779B97F4A7C15, 123456789, 1 << 31, (1 << 31) + 1),
]


@pytest.mark.parametrize(("seed", "param_id", "e", "k"), KEYS, ids=[f"key{i}" for i in range(len(KEYS))])
def test_normal_matches_reference_for_extreme_keys(seed, param_id, e, k, isa, threads):
    for count, offset in [(1001, 3), (77, STREAM_END - 77), (4, (1 << 33) + 1)]:
        got = eggroll.normal(count, seed=seed, param_id=param_id, epoch_index=e,
                             noise_index=k, offset=offset)
        want = ref_normal(count, seed=seed, param_id=param_id, epoch_index=e,
                          noise_index=k, offset=offset)
        assert_same_bits(got, want)


def test_normal_same_bits_on_every_path_and_thread_count(restore_backend):
    """Cross-check the paths against each other on a count spanning many thread chunks."""
    key = dict(seed=99, param_id=1, epoch_index=0, noise_index=4)
    count, offset = 3 * (1 << 17) + 13, 7
    runs = {}
    for name in ISAS:
        try:
            eggroll.set_isa(name)
        except ValueError:
            continue
        for t in (1, 2, 3):
            eggroll.set_num_threads(t)
            runs[(name, t)] = eggroll.normal(count, offset=offset, **key)
    assert ("scalar", 1) in runs
    base = runs[("scalar", 1)]
    for got in runs.values():
        assert_same_bits(got, base)
    assert_same_bits(base, ref_normal(count, offset=offset, **key))


@pytest.mark.parametrize(("start", "count"), [
    (0, 1), (1, 5), (3, 64), (61, 1000), (65535, 3), (65533, 70000), (4 * 9999 + 2, 1),
    (131071, 60000),
])
def test_normal_chunk_equals_slice_of_longer_read(start, count, isa, threads):
    key = dict(seed=2**40 + 3, param_id=9, epoch_index=1, noise_index=2)
    long = eggroll.normal(200_003, **key)
    assert_same_bits(eggroll.normal(count, offset=start, **key), long[start:start + count])


# ------------------------------------------------------------------------------------------
# The noise the ops use is the stream
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("antithetic", [True, False], ids=["antithetic", "plain"])
@pytest.mark.parametrize("noise_reuse", [0, 1, 3])
@pytest.mark.parametrize("rank", [1, 3])
def test_lowrank_factors_are_the_stream(antithetic, noise_reuse, rank):
    m, n, sigma, seed, param_id = 5, 7, 0.03, (1 << 64) - 5, 4000000000
    members = [0, 1, 2, 3, 6, 7, 10, 9, 101, (1 << 32) - 1]
    if antithetic:
        members.append((1 << 33) - 1)  # the largest member: k = 2^32 - 1
    for epoch in (0, 2, 5, 7, U32_MAX):
        A, B = eggroll.lowrank_factors((m, n), members=members, epoch=epoch, seed=seed,
                                       param_id=param_id, sigma=sigma, rank=rank,
                                       noise_reuse=noise_reuse, antithetic=antithetic)
        assert A.shape == (len(members), m, rank) and B.shape == (len(members), n, rank)
        e = epoch // noise_reuse if noise_reuse > 0 else 0
        for row, i in enumerate(members):
            k, s = (i // 2, -1.0 if i % 2 else 1.0) if antithetic else (i, 1.0)
            key = dict(seed=seed, param_id=param_id, epoch_index=e, noise_index=k)
            zb = ref_normal(n * rank, **key)
            za = ref_normal(m * rank, offset=n * rank, **key)
            assert_same_bits(eggroll.normal(n * rank, **key), zb)
            assert_same_bits(B[row], zb.reshape(n, rank))
            # A = s_i sigma / sqrt(r) * z, the coefficient rounded once to float32 (ops.md)
            coef = np.float32(s * sigma / math.sqrt(rank))
            assert_same_bits(A[row], coef * za.reshape(m, rank))


@pytest.mark.parametrize("antithetic", [True, False], ids=["antithetic", "plain"])
@pytest.mark.parametrize("noise_reuse", [0, 1, 3])
def test_perturb_vector_noise_is_the_stream(antithetic, noise_reuse):
    """With v = 0, row i is exactly s_i sigma z_k[0:m] (0 + x is exact; z is never 0)."""
    mlen, sigma, epoch, seed = 37, 0.5, 10, 31337
    members = [0, 1, 5, 4, 200]
    out = eggroll.perturb_vector(np.zeros(mlen, np.float32), members=members, epoch=epoch,
                                 seed=seed, param_id=3, sigma=sigma, noise_reuse=noise_reuse,
                                 antithetic=antithetic)
    e = epoch // noise_reuse if noise_reuse > 0 else 0
    for row, i in enumerate(members):
        k, s = (i // 2, -1.0 if i % 2 else 1.0) if antithetic else (i, 1.0)
        z = ref_normal(mlen, seed=seed, param_id=3, epoch_index=e, noise_index=k)
        assert_same_bits(out[row], np.float32(s * sigma) * z)


# ------------------------------------------------------------------------------------------
# Statistics of >= 10^7 values. Bounds are 6 standard errors (two-sided false-alarm
# probability 2e-9 per check; the seeds are fixed, so a pass is a pass forever).
# ------------------------------------------------------------------------------------------

N_STAT = 10_000_000
KS_P_MIN = 1e-4
# Box–Muller with u >= 2^-24 bounds |z| by sqrt(-2 ln 2^-24) = sqrt(48 ln 2) = 5.7682...
Z_BOUND = math.sqrt(48.0 * math.log(2.0))


def check_normal_sample(z: np.ndarray) -> None:
    from scipy import stats

    z = z.astype(np.float64)
    n = z.size
    assert n >= N_STAT
    assert np.isfinite(z).all()
    mean, var = z.mean(), z.var()
    # mean: SE 1/sqrt(n). variance: Var[(z-mu)^2] = E z^4 - 1 = 2, SE sqrt(2/n).
    assert abs(mean) < 6.0 / math.sqrt(n), mean
    assert abs(var - 1.0) < 6.0 * math.sqrt(2.0 / n), var
    # third and fourth moments: Var[z^3] = E z^6 = 15, Var[z^4] = E z^8 - 9 = 96.
    assert abs(np.mean(z**3)) < 6.0 * math.sqrt(15.0 / n)
    assert abs(np.mean(z**4) - 3.0) < 6.0 * math.sqrt(96.0 / n)
    ks = stats.kstest(z, "norm")
    assert ks.pvalue > KS_P_MIN, ks
    # Tails: the fraction beyond |z| > t against the exact 2 Q(t) = erfc(t / sqrt 2);
    # binomial SE sqrt(p (1 - p) / n).
    absz = np.abs(z)
    for t in (1.0, 2.0, 3.0, 4.0):
        p = math.erfc(t / math.sqrt(2.0))
        frac = np.count_nonzero(absz > t) / n
        assert abs(frac - p) < 6.0 * math.sqrt(p * (1.0 - p) / n), (t, frac, p)
    assert absz.max() <= Z_BOUND * (1 + 2.0**-20)


def test_statistics_of_one_long_stream():
    z = eggroll.normal(N_STAT, seed=20240601, param_id=3, epoch_index=1, noise_index=2)
    check_normal_sample(z)


def test_statistics_of_the_starts_of_many_streams():
    """Small parameters only ever see the first values of many streams: pool 2000 of them."""
    per = N_STAT // 2000
    z = np.concatenate([
        eggroll.normal(per, seed=1000 + (i % 7), param_id=i % 13, epoch_index=i % 3,
                       noise_index=i)
        for i in range(2000)])
    check_normal_sample(z)


# ------------------------------------------------------------------------------------------
# No correlation between neighbouring streams or neighbouring values.
# For independent variables the sample Pearson correlation has SE 1/sqrt(n); bound 6/sqrt(n).
# ------------------------------------------------------------------------------------------

N_CORR = 1 << 20
CORR_BOUND = 6.0 / math.sqrt(N_CORR)  # about 0.0059 for n = 2^20


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.astype(np.float64), b.astype(np.float64))[0, 1])


def stream(seed=77, param_id=5, e=3, k=11, count=N_CORR):
    return eggroll.normal(count, seed=seed, param_id=param_id, epoch_index=e, noise_index=k)


NEIGHBOURS = {
    "seed": (dict(seed=12345), dict(seed=12346)),
    "seed_carry": (dict(seed=U32_MAX), dict(seed=1 << 32)),  # low key word wraps
    "seed_max": (dict(seed=U64_MAX - 1), dict(seed=U64_MAX)),
    "param_id": (dict(param_id=40), dict(param_id=41)),
    "param_id_max": (dict(param_id=U32_MAX - 1), dict(param_id=U32_MAX)),
    "epoch_index": (dict(e=0), dict(e=1)),
    "epoch_index_mid": (dict(e=1000), dict(e=1001)),
    "noise_index": (dict(k=0), dict(k=1)),
    "noise_index_max": (dict(k=U32_MAX - 1), dict(k=U32_MAX)),
}


@pytest.mark.parametrize("pair", list(NEIGHBOURS), ids=list(NEIGHBOURS))
def test_neighbouring_streams_are_uncorrelated(pair):
    a, b = (stream(**kw) for kw in NEIGHBOURS[pair])
    assert not np.array_equal(a, b)
    assert abs(pearson(a, b)) < CORR_BOUND
    # A non-linear dependence would show in the squares (z^2 has SE 1/sqrt(n) too).
    assert abs(pearson(a * a, b * b)) < CORR_BOUND


# Pairs of positions j, j + d inside one stream. "call" pairs come from the same Philox call:
# (4b, 4b+1) share the radius (cos/sin of one angle), (4b, 4b+2) are the two Box–Muller pairs.
LAGS = {
    "j,j+1": (slice(0, -1), slice(1, None)),
    "j,j+2": (slice(0, -2), slice(2, None)),
    "j,j+4": (slice(0, -4), slice(4, None)),
    "call:4b,4b+1": (slice(0, None, 4), slice(1, None, 4)),
    "call:4b+2,4b+3": (slice(2, None, 4), slice(3, None, 4)),
    "call:4b,4b+2": (slice(0, None, 4), slice(2, None, 4)),
    "call:4b+1,4b+3": (slice(1, None, 4), slice(3, None, 4)),
    "call:4b,4b+3": (slice(0, None, 4), slice(3, None, 4)),
    "next call:4b,4b+4": (slice(0, -4, 4), slice(4, None, 4)),
}


@pytest.mark.parametrize("lag", list(LAGS), ids=list(LAGS))
def test_values_within_a_stream_are_uncorrelated(lag):
    z = stream(count=4 * N_CORR)
    sa, sb = LAGS[lag]
    a, b = z[sa], z[sb]
    n = min(a.size, b.size)
    a, b = a[:n], b[:n]
    bound = 6.0 / math.sqrt(n)
    assert abs(pearson(a, b)) < bound
    # Box–Muller pairs are exactly independent normals, so even R cos and R sin (which share
    # R) have uncorrelated squares: E[R^4 cos^2 sin^2] = E z0^2 E z1^2 = 1.
    assert abs(pearson(a * a, b * b)) < bound


# ------------------------------------------------------------------------------------------
# Accuracy of the project's float32 log / sin / cos inside Box–Muller
# ------------------------------------------------------------------------------------------

# Measured over all 2^23 inputs (see the printout of test_box_muller_accuracy):
#   radius sqrt(-2 ln u): 1.4646 ulp;  cos 2 pi u: 1.6881 ulp;  sin 2 pi u: 1.6881 ulp.
# The float64 references are far more accurate than these bounds: log/sqrt within 1 ulp of
# double; cos(2 pi u) has absolute error <~ 1e-15 from rounding 2 pi u, and |cos 2 pi u| >=
# sin(2 pi 2^-24) ~ 3.7e-7, i.e. a relative error < 3e-9, under 0.05 float32 ulp.
RADIUS_MAX_ULP = 1.5
ANGLE_MAX_ULP = 1.75


def test_box_muller_accuracy():
    # Only x >> 9 enters u(x): these 2^23 words cover every possible uniform input.
    i = np.arange(1 << 23, dtype=np.uint32)
    x = i << np.uint32(9)
    u = uniform64(x)
    assert np.array_equal(u, (2.0 * i + 1.0) * 2.0**-24)

    radius = ref._radius(x)
    cos32, sin32 = ref._angle(x)
    for arr in (radius, cos32, sin32):
        assert arr.dtype == np.float32 and arr.shape == x.shape

    err_r = ulp_error(radius, np.sqrt(-2.0 * np.log(u)))
    err_c = ulp_error(cos32, np.cos(2.0 * np.pi * u))
    err_s = ulp_error(sin32, np.sin(2.0 * np.pi * u))
    print(f"\nBox-Muller float32 accuracy over all 2^23 uniforms: "
          f"radius max {err_r.max():.4f} ulp (mean {err_r.mean():.4f}), "
          f"cos max {err_c.max():.4f} ulp (mean {err_c.mean():.4f}), "
          f"sin max {err_s.max():.4f} ulp (mean {err_s.mean():.4f})")
    assert err_r.max() < RADIUS_MAX_ULP
    assert err_c.max() < ANGLE_MAX_ULP
    assert err_s.max() < ANGLE_MAX_ULP
    # cos^2 + sin^2 = 1 and signs by quadrant: a gross quadrant bug would not hide in ulps
    # of tiny values, but check it directly anyway.
    assert np.array_equal(np.sign(cos32), np.sign(np.cos(2.0 * np.pi * u)))
    assert np.array_equal(np.sign(sin32), np.sign(np.sin(2.0 * np.pi * u)))


def test_reference_helpers_are_the_kernel():
    """_radius / _angle (used above) reproduce the C++ kernel: rebuild normals from them
    for raw words taken from eggroll.philox4x32 and compare with eggroll.normal bitwise."""
    nblocks, seed, p, e, k = 4096, 5, 6, 7, 8
    c = np.zeros((nblocks, 4), dtype=np.uint32)
    c[:, 0] = np.arange(nblocks, dtype=np.uint32)
    c[:, 1], c[:, 2], c[:, 3] = k, e, p
    w = eggroll.philox4x32(c, np.array([seed, 0], dtype=np.uint32))
    r0, r1 = ref._radius(w[:, 0]), ref._radius(w[:, 2])
    c0, s0 = ref._angle(w[:, 1])
    c1, s1 = ref._angle(w[:, 3])
    z = np.stack([r0 * c0, r0 * s0, r1 * c1, r1 * s1], axis=1).reshape(-1)
    assert_same_bits(eggroll.normal(4 * nblocks, seed=seed, param_id=p, epoch_index=e,
                                    noise_index=k), z)
