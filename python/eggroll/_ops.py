"""Argument handling shared by every framework adapter: the noise key, members, dtypes.

Adapters (``eggroll.numpy`` now; CuPy, PyTorch and JAX later) turn arrays into
``_core.TensorView`` objects and call the same core functions. Everything here raises
``ValueError`` / ``TypeError`` that names the offending argument.
"""
from __future__ import annotations

import math
import numbers
import operator
from typing import Any

import numpy as np

from . import _core

# dtype codes of cpp/eggroll/tensor.h (DType)
DTYPE_CODES = {
    np.dtype(np.float32): 0, np.dtype(np.float64): 1, np.dtype(np.float16): 2,
    np.dtype(np.int8): 4, np.dtype(np.int32): 5, np.dtype(np.int64): 6, np.dtype(np.uint32): 7,
}
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16))

UINT64_MAX = (1 << 64) - 1
UINT32_MAX = (1 << 32) - 1


def check_int(value: Any, name: str, lo: int, hi: int) -> int:
    """An integer in [lo, hi] (bool and floats are rejected)."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    v = operator.index(value)
    if not lo <= v <= hi:
        raise ValueError(f"{name}: must be in [{lo}, {hi}], got {v}")
    return v


def check_sigma(sigma: Any, name: str = "sigma") -> float:
    if isinstance(sigma, bool) or not isinstance(sigma, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name}: expected a float, got {type(sigma).__name__}")
    s = float(sigma)
    if not math.isfinite(s) or s <= 0:
        raise ValueError(f"{name}: must be finite and > 0, got {s}")
    return s


def check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool, got {type(value).__name__}")
    return bool(value)


def es_args(*, seed: Any, param_id: Any, epoch: Any, noise_reuse: Any, antithetic: Any,
            sigma: Any, rank: Any) -> Any:
    """Validated ``_core.EsArgs`` (the noise key and perturbation scale)."""
    return _core.EsArgs(
        seed=check_int(seed, "seed", 0, UINT64_MAX),
        param_id=check_int(param_id, "param_id", 0, UINT32_MAX),
        epoch=check_int(epoch, "epoch", 0, UINT32_MAX),
        noise_reuse=check_int(noise_reuse, "noise_reuse", 0, UINT32_MAX),
        antithetic=check_bool(antithetic, "antithetic"),
        sigma=check_sigma(sigma),
        rank=check_int(rank, "rank", 1, 1 << 20),
    )


def members_array(members: Any, expected_len: int | None, name: str = "members",
                  what: str = "x") -> np.ndarray:
    """members (range, int sequence or int array) as a contiguous int64 [M] NumPy array."""
    if isinstance(members, range):
        if members.start < 0 or (len(members) and min(members[0], members[-1]) < 0):
            raise ValueError(f"{name}: indices must be >= 0, got {members}")
        arr = np.arange(members.start, members.stop, members.step, dtype=np.int64)
    else:
        arr = np.asarray(members)
        if arr.ndim != 1:
            raise ValueError(f"{name}: expected a 1-D index array or range, got shape {arr.shape}")
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"{name}: expected integer indices, got dtype {arr.dtype}")
        arr = np.ascontiguousarray(arr, dtype=np.int64)
        if arr.size and arr.min() < 0:
            raise ValueError(f"{name}: indices must be >= 0, got {int(arr.min())}")
    if expected_len is not None and arr.shape[0] != expected_len:
        raise ValueError(f"{name}: has {arr.shape[0]} entries but the leading dimension of "
                         f"{what} is {expected_len}")
    return arr


def check_member_block(members: Any, population: int, name: str = "members") -> range:
    """A trainer's member block: a non-empty range(lo, hi) (step 1) inside [0, population).

    The trainers evaluate only these members (one rank's share of the population,
    eggroll.distributed) and still take the whole population's fitness in tell()."""
    if members is None:
        return range(population)
    if not isinstance(members, range):
        raise TypeError(f"{name}: expected a range(lo, hi) of member indices, got "
                        f"{type(members).__name__}")
    if members.step != 1 or len(members) == 0:
        raise ValueError(f"{name}: expected a non-empty range(lo, hi) with step 1, got {members}")
    if members.start < 0 or members.stop > population:
        raise ValueError(f"{name}: must lie inside range(0, {population}) (the population), "
                         f"got {members}")
    return members


def check_shape_arg(shape: Any) -> tuple[int, ...]:
    try:
        dims = tuple(operator.index(d) for d in shape)
    except TypeError:
        raise TypeError(f"shape: expected a tuple of ints, got {shape!r}") from None
    if len(dims) not in (1, 2) or any(d < 1 for d in dims):
        raise ValueError(f"shape: expected (m, n) or (m,) with positive sizes, got {dims}")
    return dims


STREAM_LENGTH = 1 << 34  # values addressable in one noise stream (noise.md, "Keying")


def check_factor_shape(shape: Any, rank: int) -> tuple[int, int]:
    """(m, n) of a matrix parameter whose rank-r factors fit one noise stream (every adapter's
    lowrank_factors)."""
    dims = check_shape_arg(shape)
    if len(dims) != 2:
        raise ValueError(f"shape: expected (m, n) for a matrix parameter, got {dims}")
    m, n = dims
    if (m + n) * rank > STREAM_LENGTH:
        raise ValueError(f"rank: (m + n) * rank = {(m + n) * rank} exceeds the 2^34 values of "
                         "one noise stream")
    return m, n


def ids_layout(shape: tuple[int, ...], strides: tuple[int, ...], name: str = "ids"
               ) -> tuple[int, int, bool]:
    """Token ids [M, ...] (strides in elements) as M rows of T ids: (M, T, shared). The
    trailing axes must be C-contiguous; axis 0 contiguous too, or broadcast (stride 0: one id
    array shared by every member, e.g. numpy.broadcast_to or tensor.expand), read once."""
    if len(shape) < 1:
        raise ValueError(f"{name}: expected [M, ...] (one row of ids per member), got shape "
                         f"{tuple(shape)}")
    M, T = shape[0], math.prod(shape[1:])
    expect = 1
    for d, s in zip(reversed(shape[1:]), reversed(strides[1:])):
        if d != 1 and s != expect:
            raise ValueError(f"{name}: each member's ids must be contiguous; pass "
                             f"{name}.contiguous() (or numpy.ascontiguousarray)")
        expect *= d
    shared = M > 1 and strides[0] == 0
    if M > 1 and not shared and strides[0] != T:
        raise ValueError(f"{name}: axis 0 must be contiguous or broadcast (stride 0), got "
                         f"stride {strides[0]}")
    return M, T, shared


def check_names(names: Any, arg: str) -> tuple[str, ...]:
    """A str or an iterable of str (parameter names) as a tuple, TypeError naming arg."""
    if isinstance(names, str):
        names = (names,)
    try:
        out = tuple(names)
    except TypeError:
        raise TypeError(f"{arg}: expected an iterable of parameter names, got "
                        f"{type(names).__name__}") from None
    for n in out:
        if not isinstance(n, str):
            raise TypeError(f"{arg}: names must be str, got {n!r}")
    return out


def cuda_module() -> Any:
    """eggroll._cuda (the CUDA kernels), or RuntimeError when this build has no CUDA."""
    try:
        from . import _cuda
    except ImportError as e:
        raise RuntimeError("eggroll was built without CUDA support (eggroll._cuda is missing: "
                           "reinstall with EGGROLL_CUDA=ON (needs nvcc); see "
                           "docs/backends.md)") from e
    return _cuda
