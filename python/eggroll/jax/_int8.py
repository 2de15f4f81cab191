"""The integer (int8) path on jax.Arrays: ``perturbed_matmul_int8`` and ``int8_update`` through
the XLA FFI handlers of eggroll._xla_ffi (CPU) or eggroll._xla_ffi_cuda (NVIDIA GPUs: the CUDA
backend's own dp4a GEMM), checked at trace time.

Same names, keyword arguments, dtype policy and messages as the NumPy adapter (eggroll/_int8.py):
x, W must already be int8 (converting wider integers would silently wrap); ``pair_fitness``
may be any integer or float array with values exactly -1, 0 or 1. Arrays, ``members``,
``seed`` and ``epoch`` may be traced; ``param_id``, ``rank``, ``noise_reuse``, ``antithetic``,
``fixed_point``, ``sigma_shift`` and ``threshold`` are static. Semantics and exactness limits:
docs/ops.md "Integer path (int8)". Results equal the NumPy path bit for bit, on both devices.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._int8 import MAX_N, MAX_RANK
from .._ops import STREAM_LENGTH, UINT32_MAX, check_bool, check_int
from . import _ffi


def _traced(v: Any) -> bool:
    return isinstance(v, jax.core.Tracer)


def _static(**values: Any) -> None:
    for name, v in values.items():
        if _traced(v) or isinstance(v, jax.Array):
            raise TypeError(f"{name}: must be a static Python value (it shapes the "
                            f"computation); only arrays, members, seed and epoch may be traced")


def _int8_array(a: Any, name: str, ndims: tuple[int, ...]) -> jax.Array:
    if not isinstance(a, (jax.Array, np.ndarray)) and not _traced(a):
        a = np.asarray(a)
    if a.dtype != jnp.int8:
        raise TypeError(f"{name}: expected an int8 array, got dtype {a.dtype}")
    if a.ndim not in ndims:
        want = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{name}: expected a {want} array, got shape {tuple(a.shape)}")
    return jnp.asarray(a)


def _check_stream(m: int, n: int, rank: int) -> None:
    if (m + n) * rank > STREAM_LENGTH:
        raise ValueError("rank: (m + n) * rank exceeds the stream length 2^34")


def perturbed_matmul_int8(x: Any, W: Any, *, members: Any, epoch: Any = 0, seed: Any = 0,
                          param_id: int = 0, rank: int = 1, sigma_shift: int,
                          fixed_point: int = 4, noise_reuse: int = 1, antithetic: bool = True,
                          out: Any = None) -> jax.Array:
    """EGGROLL int8 forward: x int8 [M, n] | [M, b, n], W int8 [m, n] -> int8 [M, m] |
    [M, b, m]; members int [M] (may be traced) or None for the unperturbed product."""
    from . import _epoch, _members, _no_out, _seed
    _no_out(out)
    _static(param_id=param_id, rank=rank, noise_reuse=noise_reuse, antithetic=antithetic,
            fixed_point=fixed_point, sigma_shift=sigma_shift)
    key = dict(param_id=check_int(param_id, "param_id", 0, UINT32_MAX),
               rank=check_int(rank, "rank", 1, MAX_RANK),
               noise_reuse=check_int(noise_reuse, "noise_reuse", 0, UINT32_MAX),
               antithetic=check_bool(antithetic, "antithetic"),
               fixed_point=check_int(fixed_point, "fixed_point", 0, 7),
               sigma_shift=check_int(sigma_shift, "sigma_shift", 0, 32))
    x = _int8_array(x, "x", (2, 3))
    W = _int8_array(W, "W", (2,))
    n = x.shape[-1]
    if W.shape[1] != n:
        raise ValueError(f"W: expected shape (m, {n}) to match x's last dimension, got "
                         f"{tuple(W.shape)}")
    if not 1 <= n <= MAX_N:
        raise ValueError(f"x: the inner dimension n must be in [1, {MAX_N}] (exact int32 "
                         f"accumulation), got {n}")
    perturb = members is not None
    if perturb:
        _check_stream(W.shape[0], n, key["rank"])
        mem = _members(members, x.shape[0])
    else:
        mem = jnp.zeros((x.shape[0],), jnp.int32)  # ignored by the handler
    f = _ffi.forward_int8_fn(perturb, **key)
    return f(W, x, mem, _seed(seed), _epoch(epoch))


def _pair_fitness(f: Any) -> jax.Array:
    """int8 [P]. Concrete values are checked now; traced values outside {-1, 0, 1} (NaN,
    0.5, 257, ...) become 2, which the handler rejects, instead of wrapping into range."""
    if not isinstance(f, (jax.Array, np.ndarray)) and not _traced(f):
        f = np.asarray(f)
    dt = jnp.dtype(f.dtype)
    if dt == jnp.bool_ or not (jnp.issubdtype(dt, jnp.integer) or jnp.issubdtype(dt, jnp.floating)):
        raise TypeError(f"pair_fitness: expected integer or float values in {{-1, 0, 1}}, "
                        f"got dtype {dt}")
    if f.ndim != 1:
        raise ValueError(f"pair_fitness: expected a 1-D array [P] (one value per antithetic "
                         f"pair), got shape {tuple(f.shape)}")
    if f.shape[0] > (1 << 32):
        raise ValueError("pair_fitness: at most 2^32 pairs")
    if not _traced(f):
        c = np.asarray(f)
        if c.size and not np.isin(c, (-1, 0, 1)).all():
            raise ValueError("pair_fitness: values must be exactly -1, 0 or 1 "
                             "(e.g. eggroll.antithetic_sign(fitness))")
        return jnp.asarray(c.astype(np.int8))
    ok = (f == -1) | (f == 0) | (f == 1)
    return jnp.where(ok, f, 2).astype(jnp.int8)


def int8_update(W: Any, pair_fitness: Any, *, threshold: int, epoch: Any = 0, seed: Any = 0,
                param_id: int = 0, rank: int = 1, fixed_point: int = 4, noise_reuse: int = 1,
                out: Any = None) -> jax.Array:
    """W' int8 [m, n] = clamp(W + [Z >= T] - [Z <= -T], -127, 127), Z = sum_k f_k A_k B_k^T,
    from W int8 [m, n] and pair_fitness [P] in {-1, 0, 1}. Returns a new array (no out=)."""
    from . import _epoch, _no_out, _seed
    _no_out(out)
    _static(threshold=threshold, param_id=param_id, rank=rank, noise_reuse=noise_reuse,
            fixed_point=fixed_point)
    key = dict(threshold=check_int(threshold, "threshold", 1, (1 << 63) - 1),
               param_id=check_int(param_id, "param_id", 0, UINT32_MAX),
               rank=check_int(rank, "rank", 1, MAX_RANK),
               noise_reuse=check_int(noise_reuse, "noise_reuse", 0, UINT32_MAX),
               fixed_point=check_int(fixed_point, "fixed_point", 0, 7))
    W = _int8_array(W, "W", (2,))
    f = _pair_fitness(pair_fitness)
    _check_stream(W.shape[0], W.shape[1], key["rank"])
    return _ffi.int8_update(W, f, _seed(seed), _epoch(epoch), **key)
