"""The trainer's per-step pieces: fitness checks and shaping, and the optimiser steps (SGD, Adam).

Everything here is float32 NumPy with a fixed order of operations, so a run resumed from a
checkpoint repeats an uninterrupted run bit for bit. The ES gradient estimate g points uphill
(it estimates the gradient of the expected fitness), so every step *adds* lr * direction.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ._ops import antithetic_sign, centered_rank, zscore

SHAPINGS = ("centered_rank", "zscore", "antithetic_sign", None)
OPTIMIZERS = ("sgd", "adam")
NONFINITE = ("raise", "worst")


def check_fitness(raw_fitness: Any, population: int, policy: str) -> tuple[np.ndarray, int]:
    """raw_fitness [population] as float64, with the non-finite policy applied.

    Returns (fitness, number of non-finite values replaced). policy "raise": any NaN/inf is a
    ValueError; "worst": NaN and ±inf become the minimum finite value (a crashed or diverged
    member ranks last, even "+inf", which is almost always a bug rather than a triumph)."""
    f = np.asarray(raw_fitness)
    if f.dtype.kind not in "fiu":
        raise TypeError(f"raw_fitness: expected a real (float or integer) array, got dtype "
                        f"{f.dtype}")
    if f.shape != (population,):
        raise ValueError(f"raw_fitness: expected shape ({population},) (one value per member), "
                         f"got {f.shape}")
    f = f.astype(np.float64)  # a copy: the caller's array is never modified
    bad = ~np.isfinite(f)
    nbad = int(bad.sum())
    if nbad:
        where = np.flatnonzero(bad)[:8].tolist()
        if policy == "raise":
            raise ValueError(f"raw_fitness: {nbad} non-finite value(s) (NaN/inf), first at "
                             f"members {where}; fix the fitness or pass nonfinite='worst'")
        if nbad == population:
            raise ValueError("raw_fitness: every value is non-finite (NaN/inf); "
                             "nonfinite='worst' needs at least one finite value")
        f[bad] = f[~bad].min()
    return f, nbad


def shape_fitness(f: np.ndarray, shaping: str | None, group_size: int) -> np.ndarray:
    """float32 [N] member weights for es_gradient.

    antithetic_sign gives one vote c_k per pair; it is expanded to the members as (+c_k, -c_k),
    so es_gradient's antithetic fold (f_2k - f_2k+1) sees 2 c_k and the estimate is the mean
    over pairs of c_k times the pair's direction."""
    if shaping == "centered_rank":
        return centered_rank(f)
    if shaping == "zscore":
        return zscore(f, group_size)
    if shaping == "antithetic_sign":
        c = antithetic_sign(f)
        out = np.empty(f.shape, dtype=np.float32)
        out[0::2] = c
        out[1::2] = -c
        return out
    return f.astype(np.float32)


def sgd_step(p: np.ndarray, g: np.ndarray, lr: float, weight_decay: float) -> np.ndarray:
    """p - float32(lr*wd) * p + float32(lr) * g (a new array; decay uses the old p)."""
    return _apply(p, g, lr, weight_decay)


def adam_step(p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, t: int, lr: float,
              weight_decay: float, betas: tuple[float, float], eps: float
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Adam on the ascent direction with bias correction (t = 1, 2, ...), decoupled decay:

        m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
        d = (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
        p = p - float32(lr*wd) p + float32(lr) d

    Scalars are computed in float64 and rounded to float32 once. Returns new (p, m, v)."""
    b1, b2 = betas
    f32 = np.float32
    m = f32(b1) * m + f32(1.0 - b1) * g
    v = f32(b2) * v + f32(1.0 - b2) * (g * g)
    mhat = m / f32(1.0 - b1 ** t)
    vhat = v / f32(1.0 - b2 ** t)
    d = mhat / (np.sqrt(vhat) + f32(eps))
    return _apply(p, d, lr, weight_decay), m, v


def _apply(p: np.ndarray, d: np.ndarray, lr: float, weight_decay: float) -> np.ndarray:
    out = p.copy() if weight_decay == 0.0 else p - np.float32(lr * weight_decay) * p
    out += np.float32(lr) * d
    return out
