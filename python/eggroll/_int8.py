"""NumPy adapter of the integer (int8) path: ``perturbed_matmul_int8`` and ``int8_update``.

Dtype policy: x, W (and out) must already be int8 (TypeError otherwise: converting wider
integers would silently wrap). ``pair_fitness`` may be any integer or float array whose
values are exactly -1, 0 or 1 (e.g. ``antithetic_sign``'s float32 output). Semantics and
the exactness limits: docs/ops.md "Integer path".
"""
from __future__ import annotations

from typing import Any

import numpy as np

from . import _core
from ._ops import UINT32_MAX, UINT64_MAX, check_bool, check_int, members_array

MAX_N = 1 << 16      # inner dimension limit (cpp/eggroll/int8.h kInt8MaxN)
MAX_RANK = 1024      # cpp/eggroll/int8.h kInt8MaxRank
_INT8 = np.dtype(np.int8)


def _view(a: np.ndarray) -> Any:
    from .numpy import view
    return view(a)


def _int8_array(a: Any, name: str, ndims: tuple[int, ...]) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        a = np.asarray(a)
    if a.dtype != _INT8:
        raise TypeError(f"{name}: expected an int8 array, got dtype {a.dtype}")
    if a.ndim not in ndims:
        want = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{name}: expected a {want} array, got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name}: must be C-contiguous; pass numpy.ascontiguousarray({name})")
    return a


def _int8_out(out: Any, shape: tuple[int, ...], inputs: dict[str, np.ndarray],
              may_alias: str | None = None) -> np.ndarray:
    if out is None:
        return np.empty(shape, dtype=np.int8)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out: expected a NumPy array, got {type(out).__name__}")
    if out.dtype != _INT8:
        raise TypeError(f"out: expected dtype int8, got {out.dtype}")
    if out.shape != shape:
        raise ValueError(f"out: expected shape {shape}, got {out.shape}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out: must be a writeable C-contiguous array")
    for name, arr in inputs.items():
        same = (name == may_alias and out.ctypes.data == arr.ctypes.data
                and out.shape == arr.shape)
        if not same and np.shares_memory(out, arr):
            raise ValueError(f"out: overlaps the input {name}")
    return out


def _int8_args(*, seed: Any, param_id: Any, epoch: Any, noise_reuse: Any, antithetic: Any,
               rank: Any, fixed_point: Any, sigma_shift: Any) -> Any:
    return _core.Int8Args(
        seed=check_int(seed, "seed", 0, UINT64_MAX),
        param_id=check_int(param_id, "param_id", 0, UINT32_MAX),
        epoch=check_int(epoch, "epoch", 0, UINT32_MAX),
        noise_reuse=check_int(noise_reuse, "noise_reuse", 0, UINT32_MAX),
        antithetic=check_bool(antithetic, "antithetic"),
        rank=check_int(rank, "rank", 1, MAX_RANK),
        fixed_point=check_int(fixed_point, "fixed_point", 0, 7),
        sigma_shift=check_int(sigma_shift, "sigma_shift", 0, 32),
    )


def perturbed_matmul_int8(x: Any, W: Any, *, members: Any, epoch: int = 0, seed: int = 0,
                          param_id: int = 0, rank: int = 1, sigma_shift: int,
                          fixed_point: int = 4, noise_reuse: int = 1, antithetic: bool = True,
                          out: Any = None) -> np.ndarray:
    """int8 [M, m] / [M, b, m] from x int8 [M, n] / [M, b, n] and W int8 [m, n]."""
    args = _int8_args(seed=seed, param_id=param_id, epoch=epoch, noise_reuse=noise_reuse,
                      antithetic=antithetic, rank=rank, fixed_point=fixed_point,
                      sigma_shift=sigma_shift)
    x = _int8_array(x, "x", (2, 3))
    W = _int8_array(W, "W", (2,))
    n = x.shape[-1]
    if W.shape[1] != n:
        raise ValueError(f"W: expected shape (m, {n}) to match x's last dimension, got {W.shape}")
    if not 1 <= n <= MAX_N:
        raise ValueError(f"x: the inner dimension n must be in [1, {MAX_N}] (exact int32 "
                         f"accumulation), got {n}")
    mem = None if members is None else members_array(members, x.shape[0])
    y = _int8_out(out, x.shape[:-1] + (W.shape[0],), {"x": x, "W": W})
    from .numpy import NO_MEMBERS
    _core.perturbed_matmul_int8(_view(x), _view(W), NO_MEMBERS if mem is None else _view(mem),
                                args, _view(y))
    return y


def _pair_fitness(f: Any) -> np.ndarray:
    if not isinstance(f, np.ndarray):
        f = np.asarray(f)
    if f.dtype.kind not in "iuf":
        raise TypeError(f"pair_fitness: expected integer or float values in {{-1, 0, 1}}, "
                        f"got dtype {f.dtype}")
    if f.ndim != 1:
        raise ValueError(f"pair_fitness: expected a 1-D array [P] (one value per antithetic "
                         f"pair), got shape {f.shape}")
    if f.size and not np.isin(f, (-1, 0, 1)).all():
        raise ValueError("pair_fitness: values must be exactly -1, 0 or 1 "
                         "(e.g. eggroll.antithetic_sign(fitness))")
    return np.ascontiguousarray(f, dtype=np.int8)


def int8_update(W: Any, pair_fitness: Any, *, threshold: int, epoch: int = 0, seed: int = 0,
                param_id: int = 0, rank: int = 1, fixed_point: int = 4, noise_reuse: int = 1,
                out: Any = None) -> np.ndarray:
    """W' int8 [m, n] = clamp(W + [Z >= T] - [Z <= -T], -127, 127), Z = sum_k f_k A_k B_k^T.
    out may be W itself (in-place update)."""
    args = _int8_args(seed=seed, param_id=param_id, epoch=epoch, noise_reuse=noise_reuse,
                      antithetic=True, rank=rank, fixed_point=fixed_point, sigma_shift=0)
    T = check_int(threshold, "threshold", 1, (1 << 63) - 1)
    W = _int8_array(W, "W", (2,))
    f = _pair_fitness(pair_fitness)
    if f.shape[0] > (1 << 32):
        raise ValueError("pair_fitness: at most 2^32 pairs")
    y = _int8_out(out, W.shape, {"W": W, "pair_fitness": f}, may_alias="W")
    _core.int8_update(_view(W), _view(f), T, args, _view(y))
    return y
