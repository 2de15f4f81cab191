"""Pure-NumPy reference of every eggroll op: the oracle the tests hold each backend to.

Readable over fast. The noise stream is reproduced bit for bit (uint32 Philox arithmetic,
then float32 operations that are each correctly rounded, in the same order as
``cpp/noise_kernel.h``). Float ops accept ``dtype=np.float64`` to evaluate the same formula
in double precision, which the tests use to derive tolerances.

Shapes follow ``docs/ops.md``: x [M, n] or [M, b, n], W [m, n], members int [M].

Precision: the noise is always the float32 stream. Every float op takes ``dtype``: with the
default ``np.float32`` the formula is evaluated in float32 (the precision a backend
computes in); with ``np.float64`` the same formula is evaluated in double precision from the
same float32 noise values (upcast). The tests compare a backend with the float64 result and
allow about twice the error the float32 evaluation makes (tests/conftest.py).
``matmul_nt`` reproduces the core GEMM's rounding sequence bit for bit (docs/ops.md).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "philox4x32", "normal", "member_noise", "lowrank_factors", "perturbed_matmul",
    "perturbed_matmul_full", "perturb_vector", "perturbed_embedding", "es_gradient",
    "centered_rank", "zscore",
    "antithetic_sign", "epoch_index", "matmul_nt", "int8_noise", "perturbed_matmul_int8",
    "int8_update",
]

_U32 = np.uint32
_M0, _M1 = _U32(0xD2511F53), _U32(0xCD9E8D57)
_W0, _W1 = _U32(0x9E3779B9), _U32(0xBB67AE85)


def _mulhilo(a: np.ndarray, m: np.uint32) -> tuple[np.ndarray, np.ndarray]:
    p = a.astype(np.uint64) * np.uint64(m)
    return (p >> np.uint64(32)).astype(_U32), (p & np.uint64(0xFFFFFFFF)).astype(_U32)


def philox4x32(counter: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Philox4x32-10. counter: uint32 [..., 4], key: uint32 [2] -> uint32 [..., 4]."""
    c = np.asarray(counter, dtype=_U32)
    c0, c1, c2, c3 = (c[..., i].copy() for i in range(4))
    k0, k1 = _U32(key[0]), _U32(key[1])
    with np.errstate(over="ignore"):
        for _ in range(10):
            hi0, lo0 = _mulhilo(c0, _M0)
            hi1, lo1 = _mulhilo(c2, _M1)
            c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
            k0, k1 = _U32(k0 + _W0), _U32(k1 + _W1)
    return np.stack([c0, c1, c2, c3], axis=-1)


# Constants of the float32 log / sin / cos (docs/noise.md), as exact float32 values.
_f = np.float32
_LOG_C1, _LOG_C2 = _f(float.fromhex("0x1.555556p-1")), _f(float.fromhex("0x1.99999ap-2"))
_LOG_C3, _LOG_C4 = _f(float.fromhex("0x1.24924ap-2")), _f(float.fromhex("0x1.c71c72p-3"))
_LN2_HI, _LN2_LO = _f(float.fromhex("0x1.62e4p-1")), _f(float.fromhex("0x1.7f7d1cp-20"))
_SIN = [_f(float.fromhex(h)) for h in ("0x1.921fb6p+2", "-0x1.4abbcep+5", "0x1.466bc6p+6",
                                       "-0x1.32d2ccp+6", "0x1.507834p+5")]
_COS = [_f(float.fromhex(h)) for h in ("-0x1.3bd3ccp+4", "0x1.03c1f0p+6", "-0x1.55d3c8p+6",
                                       "0x1.e1f506p+5", "-0x1.a6d1f2p+4")]


def _radius(x: np.ndarray) -> np.ndarray:
    """sqrt(-2 ln u(x)) in float32, u(x) = (2 (x >> 9) + 1) 2^-24."""
    v = ((x >> _U32(9)) << _U32(1)) + _U32(1)
    bits = v.astype(np.int32).astype(np.float32).view(_U32)
    mant = bits & _U32(0x007FFFFF)
    big = mant > _U32(0x003504F3)
    m = (mant | np.where(big, _U32(0x3F000000), _U32(0x3F800000))).view(np.float32)
    e = (bits >> _U32(23)).astype(np.int32) - 127 - 24 + big.astype(np.int32)
    ef = e.astype(np.float32)
    one = _f(1.0)
    s = (m - one) / (m + one)
    z = s * s
    p = _LOG_C4
    p = p * z + _LOG_C3
    p = p * z + _LOG_C2
    p = p * z + _LOG_C1
    lnm = (s + s) + (s * z) * p
    lnu = ef * _LN2_HI + (ef * _LN2_LO + lnm)
    return np.sqrt(lnu * _f(-2.0))


def _angle(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cos, sin) of 2 pi u(x) in float32, quadrant reduced exactly in integers."""
    v = (((x >> _U32(9)) << _U32(1)) + _U32(1)).astype(np.int64)
    q = (v + (1 << 21)) >> 22
    r = (v - (q << 22)).astype(np.float32) * _f(2.0**-24)
    r2 = r * r
    sp = _SIN[4]
    for c in (_SIN[3], _SIN[2], _SIN[1], _SIN[0]):
        sp = sp * r2 + c
    sn = r * sp
    cp = _COS[4]
    for c in (_COS[3], _COS[2], _COS[1], _COS[0]):
        cp = cp * r2 + c
    cs = cp * r2 + _f(1.0)
    odd = (q & 1).astype(bool)
    cos_t = np.where(odd, sn, cs)
    sin_t = np.where(odd, cs, sn)
    cneg = (((q + 1) >> 1) & 1).astype(bool)
    sneg = ((q >> 1) & 1).astype(bool)
    return np.where(cneg, -cos_t, cos_t), np.where(sneg, -sin_t, sin_t)


def normal(count: int, *, seed: int, param_id: int = 0, epoch_index: int = 0,
           noise_index: int = 0, offset: int = 0) -> np.ndarray:
    """Values offset .. offset+count-1 of the stream z(seed, param_id, e, k): float32 [count]."""
    first, last = offset // 4, (offset + count + 3) // 4
    blocks = np.arange(first, last, dtype=np.uint64).astype(_U32)
    counter = np.empty((blocks.size, 4), dtype=_U32)
    counter[:, 0] = blocks
    counter[:, 1] = noise_index
    counter[:, 2] = epoch_index
    counter[:, 3] = param_id
    key = np.array([seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF], dtype=_U32)
    w = philox4x32(counter, key)
    r0, r1 = _radius(w[:, 0]), _radius(w[:, 2])
    c0, s0 = _angle(w[:, 1])
    c1, s1 = _angle(w[:, 3])
    out = np.stack([r0 * c0, r0 * s0, r1 * c1, r1 * s1], axis=1).reshape(-1)
    start = offset - 4 * first
    return out[start:start + count]


# --------------------------------------------------------------------------------------------
# Which noise a member sees (ops.md, "Which noise a member sees")
# --------------------------------------------------------------------------------------------

def epoch_index(epoch: int, noise_reuse: int) -> int:
    """e = epoch // noise_reuse when noise_reuse > 0, else 0 (the same noise forever)."""
    return epoch // noise_reuse if noise_reuse > 0 else 0


def member_noise(member: int, antithetic: bool) -> tuple[int, int]:
    """(k, s): member i uses noise index k with sign s.

    Antithetic: k = i // 2, s = +1 for even i, -1 for odd i. Otherwise k = i, s = +1."""
    member = int(member)
    if antithetic:
        return member // 2, (1 if member % 2 == 0 else -1)
    return member, 1


def _members_list(members: Any) -> list[int]:
    """members (range or int array/sequence) as a list of Python ints."""
    return [int(i) for i in (members if isinstance(members, range) else np.asarray(members))]


def _stream(count: int, member: int, *, seed: int, param_id: int, epoch: int,
            noise_reuse: int, antithetic: bool) -> tuple[np.ndarray, int]:
    """(the first `count` values of member's stream z(seed, param_id, e, k), float32; s_i)."""
    k, sign = member_noise(member, antithetic)
    z = normal(count, seed=seed, param_id=param_id,
               epoch_index=epoch_index(epoch, noise_reuse), noise_index=k)
    return z, sign


def _coef(sign: int, scale: float, dtype: Any) -> Any:
    """s_i * scale in `dtype`. In float32 it is the double product rounded once to float32
    (the backends compute it that way); in float64 it is the double value itself."""
    return np.dtype(dtype).type(sign * scale)


# --------------------------------------------------------------------------------------------
# The core's GEMM contract (docs/ops.md, "The base product"), bit for bit
# --------------------------------------------------------------------------------------------

GEMM_KC = 256  # k-slice length of the contract


def _fma32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """fma(a, b, c) in float32: a * b + c computed exactly, rounded ONCE to float32.

    a * b of two float32 values is exact in float64; p + c rounded to float64 can then
    differ from the exact sum, and rounding that to float32 is wrong only when it lands
    exactly halfway between two float32 values while the exact sum does not: TwoSum gives
    the exact remainder, whose sign then decides the tie."""
    p = a.astype(np.float64) * b.astype(np.float64)
    c64 = c.astype(np.float64)
    s = p + c64
    bb = s - p
    err = (p - (s - bb)) + (c64 - bb)                  # s + err == p + c exactly
    r = s.astype(np.float32)
    r64 = r.astype(np.float64)
    toward = np.where(s > r64, np.float32(np.inf), np.float32(-np.inf))
    other = np.nextafter(r, toward)
    tie = (s != r64) & (2 * s == r64 + other.astype(np.float64))
    fix = tie & (err != 0) & ((err > 0) == (s > r64))
    return np.where(fix, other, r)


def matmul_nt(x: np.ndarray, W: np.ndarray) -> np.ndarray:
    """y [R, m] = x [R, n] @ W [m, n].T with the core GEMM's rounding sequence:

        s_q     = FMA chain over k in [256 q, 256 q + 256) of x[r, k] * W[o, k], from +0
        y[r, o] = ((s_0 + s_1) + s_2) + ...          (float32 adds, in order)

    Every element has this one sequence on every SIMD path, thread count and row count."""
    x = np.asarray(x, dtype=np.float32)
    W = np.asarray(W, dtype=np.float32)
    R, n = x.shape
    y = np.zeros((R, W.shape[0]), dtype=np.float32)
    for k0 in range(0, n, GEMM_KC):
        acc = np.zeros_like(y)
        for k in range(k0, min(n, k0 + GEMM_KC)):
            acc = _fma32(x[:, k, None], W[None, :, k], acc)
        y = acc if k0 == 0 else y + acc
    return y


# --------------------------------------------------------------------------------------------
# Low-rank factors and the perturbed forward passes
# --------------------------------------------------------------------------------------------

def lowrank_factors(shape: tuple[int, int], *, members: Any, epoch: int, seed: int,
                    param_id: int = 0, sigma: float, rank: int = 1, noise_reuse: int = 1,
                    antithetic: bool = True, dtype: Any = np.float32
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(A [M, m, r], B [M, n, r]) with member i's perturbation E_i = A[i] @ B[i].T.

    B_k = the first n*r stream values (row-major [n, r]); A_k = the next m*r values
    ([m, r]), multiplied by s_i * sigma / sqrt(r) (one scalar per member)."""
    m, n = shape
    r = rank
    scale = sigma / math.sqrt(r)
    mem = _members_list(members)
    A = np.empty((len(mem), m, r), dtype=dtype)
    B = np.empty((len(mem), n, r), dtype=dtype)
    for row, i in enumerate(mem):
        z, sign = _stream((n + m) * r, i, seed=seed, param_id=param_id, epoch=epoch,
                          noise_reuse=noise_reuse, antithetic=antithetic)
        z = z.astype(dtype)
        B[row] = z[:n * r].reshape(n, r)
        A[row] = _coef(sign, scale, dtype) * z[n * r:].reshape(m, r)
    return A, B


def _base_product(x: np.ndarray, W: np.ndarray) -> np.ndarray:
    """x @ W.T for x [M, n] or [M, b, n], as ONE 2-D product over all rows."""
    n = x.shape[-1]
    return (x.reshape(-1, n) @ W.T).reshape(x.shape[:-1] + (W.shape[0],))


def perturbed_matmul(x: np.ndarray, W: np.ndarray, *, members: Any, epoch: int, seed: int,
                     param_id: int = 0, sigma: float, rank: int = 1, noise_reuse: int = 1,
                     antithetic: bool = True, dtype: Any = np.float32) -> np.ndarray:
    """EGGROLL forward: y_i = x_i @ W.T + (x_i @ B_i) @ A_i.T (A_i carries s_i sigma/sqrt r).

    x [M, n] or [M, b, n], W [m, n] -> [M, m] or [M, b, m]. members=None: x @ W.T."""
    x = np.asarray(x, dtype=dtype)
    W = np.asarray(W, dtype=dtype)
    y = _base_product(x, W)
    if members is None:
        return y
    A, B = lowrank_factors(W.shape, members=members, epoch=epoch, seed=seed,
                           param_id=param_id, sigma=sigma, rank=rank, noise_reuse=noise_reuse,
                           antithetic=antithetic, dtype=dtype)
    xb = x if x.ndim == 3 else x[:, None, :]          # [M, b, n]
    corr = (xb @ B) @ A.transpose(0, 2, 1)            # [M, b, r] @ [M, r, m] -> [M, b, m]
    return y + corr.reshape(y.shape)


def perturbed_matmul_full(x: np.ndarray, W: np.ndarray, *, members: Any, epoch: int, seed: int,
                          param_id: int = 0, sigma: float, noise_reuse: int = 1,
                          antithetic: bool = True, dtype: Any = np.float32) -> np.ndarray:
    """Full-rank (OpenES) forward: y_i = x_i @ (W + E_i).T with E_i = s_i sigma Z_k and
    Z_k the first m*n stream values, row-major [m, n]. members=None: x @ W.T.

    Evaluated as x_i @ W.T + x_i @ E_i.T (the shared base product plus a per-member
    correction), the same structure every backend uses, so that the float32 evaluation's
    rounding error is a fair yardstick for theirs."""
    x = np.asarray(x, dtype=dtype)
    W = np.asarray(W, dtype=dtype)
    y = _base_product(x, W)
    if members is None:
        return y
    m, n = W.shape
    for row, i in enumerate(_members_list(members)):
        z, sign = _stream(m * n, i, seed=seed, param_id=param_id, epoch=epoch,
                          noise_reuse=noise_reuse, antithetic=antithetic)
        E = _coef(sign, sigma, dtype) * z.astype(dtype).reshape(m, n)
        y[row] = y[row] + x[row] @ E.T
    return y


def perturb_vector(v: np.ndarray, *, members: Any, epoch: int, seed: int, param_id: int = 0,
                   sigma: float, noise_reuse: int = 1, antithetic: bool = True,
                   dtype: Any = np.float32) -> np.ndarray:
    """v [m] -> [M, m], row i = v + s_i sigma z_k[0:m]."""
    v = np.asarray(v, dtype=dtype)
    m = v.shape[0]
    mem = _members_list(members)
    out = np.empty((len(mem), m), dtype=dtype)
    for row, i in enumerate(mem):
        z, sign = _stream(m, i, seed=seed, param_id=param_id, epoch=epoch,
                          noise_reuse=noise_reuse, antithetic=antithetic)
        out[row] = v + _coef(sign, sigma, dtype) * z.astype(dtype)
    return out


def perturbed_embedding(ids: np.ndarray, W: np.ndarray, *, members: Any, epoch: int,
                        seed: int, param_id: int = 0, sigma: float, rank: int = 1,
                        noise_reuse: int = 1, antithetic: bool = True,
                        dtype: Any = np.float32) -> np.ndarray:
    """Rows of member i's table W + E_i, E_i = A_i @ B_i.T the low-rank perturbation of the
    parameter shape (V, d) (lowrank_factors((V, d)): the one perturbed_matmul applies to a
    weight W [V, d], so a tied output projection sees the same noise).

    ids int [M, ...] (a broadcast axis 0 is one id array shared by every member), W [V, d]
    -> [M, ..., d]; members=None: W[ids]. Row t of member i is

        W[t] + corr,  corr = t_0 B_i[:, 0] + t_1 B_i[:, 1] + ...  (in that order),
        t_l = A_i[t, l] = (s_i sigma / sqrt r) * a_k[t, l]

    each product and sum rounded in dtype (the core's order)."""
    ids = np.asarray(ids)
    W = np.asarray(W, dtype=dtype)
    if ids.ndim < 1:
        raise ValueError(f"ids: expected [M, ...], got shape {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= W.shape[0]):
        raise ValueError(f"ids: every id must be in [0, {W.shape[0]})")
    if members is None:
        return W[ids]
    mem = _members_list(members)
    out = np.empty(ids.shape + (W.shape[1],), dtype=dtype)
    for row, i in enumerate(mem):
        A, B = lowrank_factors(W.shape, members=[i], epoch=epoch, seed=seed, param_id=param_id,
                               sigma=sigma, rank=rank, noise_reuse=noise_reuse,
                               antithetic=antithetic, dtype=dtype)
        t = A[0][ids[row]]                               # [..., r]: A_i's rows of these ids
        corr = t[..., 0:1] * B[0][:, 0]
        for l in range(1, rank):
            corr = corr + t[..., l:l + 1] * B[0][:, l]
        out[row] = W[ids[row]] + corr
    return out


# --------------------------------------------------------------------------------------------
# The ES gradient estimate
# --------------------------------------------------------------------------------------------

def es_gradient(fitness: np.ndarray, shape: Any, *, members: Any = None, epoch: int,
                seed: int, param_id: int = 0, sigma: float, rank: int = 1, noise_reuse: int = 1,
                antithetic: bool = True, full_rank: bool = False,
                dtype: Any = np.float32) -> np.ndarray:
    """g = (1 / (N sigma)) * sum_i f_i E_i over the N = len(fitness) members given
    (default range(N)): low rank for a 2-D shape, full rank (E_i = s_i sigma Z_k) for a
    1-D shape or full_rank=True. Returns [shape] in dtype."""
    dtype = np.dtype(dtype).type
    f = np.asarray(fitness, dtype=dtype)
    N = f.shape[0]
    mem = list(range(N)) if members is None else _members_list(members)
    if len(mem) != N:
        raise ValueError(f"members: has {len(mem)} entries, fitness has {N}")
    shape = tuple(int(d) for d in shape)
    size = math.prod(shape)
    if full_rank or len(shape) == 1:
        # E_i / sigma = s_i Z_k, so g = (1/N) sum_i f_i s_i Z_k: a weighted sum of streams.
        Z = np.empty((N, size), dtype=dtype)
        weight = np.empty(N, dtype=dtype)
        for row, i in enumerate(mem):
            z, sign = _stream(size, i, seed=seed, param_id=param_id, epoch=epoch,
                              noise_reuse=noise_reuse, antithetic=antithetic)
            Z[row] = z
            weight[row] = sign * f[row] / dtype(N)
        return (weight @ Z).reshape(shape)
    # Low rank: E_i = A_i @ B_i.T (A_i scaled by s_i sigma/sqrt r), so with
    # c_i = f_i / (N sigma), g = sum_i (c_i A_i) @ B_i.T = Af @ Bf.T with the members' rank
    # columns side by side: Af [m, N*r], Bf [n, N*r].
    m, n = shape
    A, B = lowrank_factors(shape, members=mem, epoch=epoch, seed=seed, param_id=param_id,
                           sigma=sigma, rank=rank, noise_reuse=noise_reuse,
                           antithetic=antithetic, dtype=dtype)
    c = f / dtype(N * sigma)
    Af = (c[:, None, None] * A).transpose(1, 0, 2).reshape(m, N * rank)
    Bf = B.transpose(1, 0, 2).reshape(n, N * rank)
    return Af @ Bf.T


# --------------------------------------------------------------------------------------------
# Fitness shaping
# --------------------------------------------------------------------------------------------

def centered_rank(f: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
    """Ranks 0..N-1 (ties share their mean rank) mapped linearly onto [-0.5, 0.5]; N = 1
    gives 0. Ties are exact equality of the input values."""
    dtype = np.dtype(dtype).type
    f = np.asarray(f)
    N = f.shape[0]
    if N == 0:
        return np.zeros(0, dtype=dtype)
    # Sorted distinct values; each value's ranks span [start, start + count - 1].
    _, inverse, counts = np.unique(f, return_inverse=True, return_counts=True)
    start = np.cumsum(counts) - counts
    mean_rank = start + (counts - 1) / 2.0              # exact: half-integers
    ranks = mean_rank[inverse.reshape(-1)].astype(dtype)
    if N == 1:
        return np.zeros(1, dtype=dtype)
    return ranks / dtype(N - 1) - dtype(0.5)


def zscore(f: np.ndarray, group_size: int = 0, dtype: Any = np.float32) -> np.ndarray:
    """(f - mean) / sqrt(var + 1e-5): mean over each consecutive group of group_size members
    (group_size = 0: over all N), var always over all N."""
    dtype = np.dtype(dtype).type
    f = np.asarray(f, dtype=dtype)
    N = f.shape[0]
    G = group_size if group_size > 0 else N
    if N and N % G:
        raise ValueError(f"group_size: {group_size} does not divide the population {N}")
    if N == 0:
        return np.zeros(0, dtype=dtype)
    var = np.mean(np.square(f - np.mean(f)))
    groups = f.reshape(N // G, G)
    centred = groups - groups.mean(axis=1, keepdims=True)
    return (centred / np.sqrt(var + dtype(1e-5))).reshape(N)


def antithetic_sign(f: np.ndarray) -> np.ndarray:
    """One value per antithetic pair: sign(f[2k] - f[2k+1]) in {-1, 0, +1}, float32 [N/2]."""
    f = np.asarray(f, dtype=np.float64)
    if f.shape[0] % 2:
        raise ValueError(f"fitness: antithetic_sign needs an even population, got {f.shape[0]}")
    return np.sign(f[0::2] - f[1::2]).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Integer (int8) path (ops.md "Integer (int8) path"; choices in docs/ops.md "Integer path").
# Every quantity is an exact Python/NumPy int64: no int32 intermediate, so this is the truth
# the kernels (int32 accumulators where provably safe) must reproduce bit for bit.
# --------------------------------------------------------------------------------------------

def int8_noise(m: int, n: int, *, k: int, seed: int, param_id: int = 0, e: int = 0,
               rank: int = 1, fixed_point: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Integer factors of noise index k: (A int64 [m, r], B int64 [n, r]) with
    q = clamp(trunc(z * 2**fixed_point), -127, 127); B = first n*r values, A = next m*r."""
    z = normal((n + m) * rank, seed=seed, param_id=param_id, epoch_index=e, noise_index=k)
    q = np.clip(np.trunc(z.astype(np.float64) * 2.0 ** fixed_point), -127, 127).astype(np.int64)
    return q[n * rank:].reshape(m, rank), q[:n * rank].reshape(n, rank)


def perturbed_matmul_int8(x: np.ndarray, W: np.ndarray, *, members: Any, epoch: int, seed: int,
                          param_id: int = 0, rank: int = 1, sigma_shift: int,
                          fixed_point: int = 4, noise_reuse: int = 1,
                          antithetic: bool = True) -> np.ndarray:
    """int8 [M, m] or [M, b, m] from x int8 [M, n] / [M, b, n] and W int8 [m, n]:

        acc = x_i @ W.T + (((x_i @ B_k) @ (s_i A_k).T) >> (fixed_point + sigma_shift))
        y_i = clamp(floor(acc / (2**fixed_point * isqrt(n))), -127, 127)

    with >> an arithmetic (flooring) shift; members=None drops the correction."""
    x = np.asarray(x)
    W = np.asarray(W).astype(np.int64)
    n = W.shape[1]
    x3 = x.reshape(x.shape[0], -1, n).astype(np.int64)
    acc = np.einsum("ibk,jk->ibj", x3, W)
    if members is not None:
        e = epoch_index(epoch, noise_reuse)
        shift = fixed_point + sigma_shift
        for i, member in enumerate(_members_list(members)):
            k, sign = member_noise(member, antithetic)
            A, B = int8_noise(W.shape[0], n, k=k, seed=seed, param_id=param_id, e=e,
                              rank=rank, fixed_point=fixed_point)
            corr = (x3[i] @ B) @ (sign * A).T          # exact int64 [b, m]
            acc[i] += corr >> shift                     # numpy >> on int64 floors
    div = (1 << fixed_point) * math.isqrt(n)
    y = np.clip(acc // div, -127, 127).astype(np.int8)   # // floors
    return y.reshape(x.shape[:-1] + (W.shape[0],))


def int8_update(W: np.ndarray, pair_fitness: np.ndarray, *, threshold: int, epoch: int,
                seed: int, param_id: int = 0, rank: int = 1, fixed_point: int = 4,
                noise_reuse: int = 1) -> np.ndarray:
    """Thresholded +-1 vote: Z = sum_k f_k A_k B_k^T over pairs k (f_k in {-1, 0, 1}; pair k
    is members 2k (+) and 2k+1 (-), noise index k); W' = clamp(W + [Z >= T] - [Z <= -T],
    -127, 127). W int8 [m, n], pair_fitness [P] -> int8 [m, n]."""
    W = np.asarray(W).astype(np.int64)
    m, n = W.shape
    e = epoch_index(epoch, noise_reuse)
    Z = np.zeros((m, n), dtype=np.int64)
    for k, f in enumerate(np.asarray(pair_fitness).tolist()):
        if f == 0:
            continue
        A, B = int8_noise(m, n, k=k, seed=seed, param_id=param_id, e=e, rank=rank,
                          fixed_point=fixed_point)
        Z += int(f) * (A @ B.T)
    step = (Z >= threshold).astype(np.int64) - (Z <= -threshold).astype(np.int64)
    return np.clip(W + step, -127, 127).astype(np.int8)
