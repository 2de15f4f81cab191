"""Pure-NumPy reference of every eggroll op: the oracle the tests hold each backend to.

Readable over fast. The noise stream is reproduced bit for bit (uint32 Philox arithmetic,
then float32 operations that are each correctly rounded, in the same order as
``cpp/noise_kernel.h``). Float ops accept ``dtype=np.float64`` to evaluate the same formula
in double precision, which the tests use to derive tolerances.

Shapes follow ``docs/ops.md``: x [M, n] or [M, b, n], W [m, n], members int [M].
"""
from __future__ import annotations

import math

import numpy as np

__all__ = [
    "philox4x32", "normal", "member_noise", "lowrank_factors", "perturbed_matmul",
    "perturbed_matmul_full", "perturb_vector", "es_gradient", "centered_rank", "zscore",
    "antithetic_sign", "epoch_index",
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
