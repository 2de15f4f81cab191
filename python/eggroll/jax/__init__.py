"""JAX adapter: every op on jax.Arrays through XLA FFI custom calls (eggroll._xla_ffi on the
CPU; eggroll._xla_ffi_cuda on NVIDIA GPUs in CUDA builds, see _cuda.py), plus
``eggroll.jax.ES`` (ES over a parameter pytree with optax).

The functions have the names and keyword arguments of eggroll.numpy, which
``eggroll.<op>(jax_array, ...)`` calls. They work under ``jax.jit``, ``jax.vmap`` and
``lax.scan``. Arrays, ``members``, ``seed`` and ``epoch`` may be traced values (a jitted
training step compiles once for all epochs); ``param_id``, ``sigma``, ``rank``,
``noise_reuse``, ``antithetic`` and ``shape`` must be static Python values. Everything that
can be checked at trace time is, so bad input raises ValueError / TypeError at the call site.

Dtype policy (as eggroll.numpy): computation is float32; float64/float16/bfloat16 inputs are
converted, results are float32. ``out=`` is not supported (JAX arrays are immutable).
On the CPU, results equal the NumPy path's bit for bit (the same core functions run on the
buffers); on a GPU, the CuPy path's kernels run (noise, factors, vectors, full-rank estimates,
ranks and int8 bit for bit; float forwards within the derived tolerance: the base product is
XLA's cuBLAS dot in true float32). docs/jax.md says what runs where.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import _ops
from .._ops import (STREAM_LENGTH, UINT32_MAX, UINT64_MAX, check_bool, check_factor_shape,
                    check_int, check_shape_arg, check_sigma)
from . import _ffi

__all__ = ["perturbed_matmul", "perturbed_matmul_full", "perturb_vector", "lowrank_factors",
           "es_gradient", "centered_rank", "zscore", "antithetic_sign", "ES", "param_id",
           "perturbed_matmul_int8", "int8_update"]

_FLOATS = (jnp.float32, jnp.float64, jnp.float16, jnp.bfloat16)


# ------------------------------------------------------------------------------------------
# trace-time argument handling
# ------------------------------------------------------------------------------------------

def _is_traced(v: Any) -> bool:
    return isinstance(v, jax.core.Tracer)


def _concrete(v: Any) -> Any:
    """v as a NumPy value when it is known now (not a tracer), else None."""
    if _is_traced(v):
        return None
    return np.asarray(v)


def _float_array(a: Any, name: str, ndims: tuple[int, ...]) -> jax.Array:
    if not isinstance(a, (jax.Array, np.ndarray)) and not _is_traced(a):
        a = np.asarray(a)
    if not any(a.dtype == jnp.dtype(d) for d in _FLOATS):
        raise TypeError(f"{name}: expected a float32 array (float64/float16/bfloat16 are "
                        f"converted), got dtype {a.dtype}")
    if a.ndim not in ndims:
        want = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{name}: expected a {want} array, got shape {tuple(a.shape)}")
    return jnp.asarray(a, dtype=jnp.float32)


def _seed(seed: Any) -> jax.Array:
    """uint32 [2] (low, high words). A Python/NumPy int may use all 64 bits; a traced or JAX
    seed is an integer scalar (its low 32 bits, high word 0) or uint32 [2]."""
    if isinstance(seed, (jax.Array,)) or _is_traced(seed):
        if not jnp.issubdtype(seed.dtype, jnp.integer):
            raise TypeError(f"seed: expected an integer, got dtype {seed.dtype}")
        if seed.shape == (2,) and seed.dtype == jnp.uint32:
            return seed
        if seed.shape != ():
            raise ValueError(f"seed: expected a scalar (or uint32 [2] words), got shape "
                             f"{tuple(seed.shape)}")
        c = _concrete(seed)
        if c is not None:
            return _seed(int(c))
        return jnp.stack([seed.astype(jnp.uint32), jnp.zeros((), jnp.uint32)])
    s = check_int(seed, "seed", 0, UINT64_MAX)
    return jnp.asarray(np.array([s & 0xFFFFFFFF, s >> 32], dtype=np.uint32))


def _epoch(epoch: Any) -> jax.Array:
    """An integer scalar operand; Python ints are checked against [0, 2^32) now, traced ones
    by the handler (an XlaRuntimeError naming epoch when negative)."""
    if isinstance(epoch, jax.Array) or _is_traced(epoch):
        if not jnp.issubdtype(epoch.dtype, jnp.integer) or epoch.shape != ():
            raise TypeError(f"epoch: expected an integer scalar, got {epoch.dtype}"
                            f"{list(epoch.shape)}")
        c = _concrete(epoch)
        if c is not None:
            check_int(int(c), "epoch", 0, UINT32_MAX)
        if epoch.dtype not in (jnp.int32, jnp.uint32, jnp.int64):
            epoch = epoch.astype(jnp.int32)
        return epoch
    return jnp.asarray(np.uint32(check_int(epoch, "epoch", 0, UINT32_MAX)))


def _members(members: Any, expected: int | None, what: str = "x",
             name: str = "members") -> jax.Array:
    """int32 [M] (int64 when jax_enable_x64 is on and an index needs it). Concrete members
    are checked now (the NumPy adapter's checks); traced ones by the handler."""
    if isinstance(members, jax.Array) or _is_traced(members):
        if members.ndim != 1:
            raise ValueError(f"{name}: expected a 1-D index array or range, got shape "
                             f"{tuple(members.shape)}")
        if not jnp.issubdtype(members.dtype, jnp.integer):
            raise TypeError(f"{name}: expected integer indices, got dtype {members.dtype}")
        if expected is not None and members.shape[0] != expected:
            raise ValueError(f"{name}: has {members.shape[0]} entries but the leading "
                             f"dimension of {what} is {expected}")
        c = _concrete(members)
        if c is None:
            return members if members.dtype in (jnp.int32, jnp.int64) else members.astype(jnp.int32)
        members = c
    arr = _ops.members_array(members, expected, name, what=what)
    if arr.size and arr.max() > np.iinfo(np.int32).max:
        if not jax.config.jax_enable_x64:
            raise ValueError(f"{name}: indices >= 2^31 need jax_enable_x64 (JAX's int32 "
                             f"default cannot hold {int(arr.max())})")
        return jnp.asarray(arr)
    return jnp.asarray(arr.astype(np.int32))


def _key(param_id: Any, sigma: Any, noise_reuse: Any, antithetic: Any,
         rank: Any = 1) -> dict[str, Any]:
    """The static part of the noise key, checked (the same checks and messages as NumPy's)."""
    for name, v in (("param_id", param_id), ("sigma", sigma), ("rank", rank),
                    ("noise_reuse", noise_reuse), ("antithetic", antithetic)):
        if _is_traced(v) or isinstance(v, jax.Array):
            raise TypeError(f"{name}: must be a static Python value (it shapes the "
                            f"computation); only arrays, members, seed and epoch may be traced")
    return dict(param_id=check_int(param_id, "param_id", 0, UINT32_MAX), sigma=check_sigma(sigma),
                noise_reuse=check_int(noise_reuse, "noise_reuse", 0, UINT32_MAX),
                antithetic=check_bool(antithetic, "antithetic"),
                rank=check_int(rank, "rank", 1, 1 << 20))


def _no_out(out: Any) -> None:
    if out is not None:
        raise TypeError("out: not supported for JAX arrays (they are immutable); use the result")


# ------------------------------------------------------------------------------------------
# ops (names and keyword arguments of eggroll.numpy)
# ------------------------------------------------------------------------------------------

def _forward(full: bool, x: Any, W: Any, members: Any, epoch: Any, seed: Any, key: dict) -> jax.Array:
    x = _float_array(x, "x", (2, 3))
    W = _float_array(W, "W", (2,))
    if W.shape[1] != x.shape[-1]:
        raise ValueError(f"W: expected shape (m, {x.shape[-1]}) to match x's last dimension, "
                         f"got {tuple(W.shape)}")
    perturb = members is not None
    mem = (_members(members, x.shape[0]) if perturb
           else jnp.zeros((x.shape[0],), jnp.int32))
    if full:
        key = dict(key, rank=1)
    f = _ffi.forward_fn(full, perturb, **key)
    return f(W, x, mem, _seed(seed), _epoch(epoch))


def perturbed_matmul(x: Any, W: Any, *, members: Any, epoch: Any = 0, seed: Any = 0,
                     param_id: int = 0, sigma: float = 1.0, rank: int = 1, noise_reuse: int = 1,
                     antithetic: bool = True, out: Any = None) -> jax.Array:
    """EGGROLL forward. x float32 [M, n] | [M, b, n], W [m, n] -> float32 [M, m] | [M, b, m]."""
    _no_out(out)
    key = _key(param_id, sigma, noise_reuse, antithetic, rank)
    return _forward(False, x, W, members, epoch, seed, key)


def perturbed_matmul_full(x: Any, W: Any, *, members: Any, epoch: Any = 0, seed: Any = 0,
                          param_id: int = 0, sigma: float = 1.0, noise_reuse: int = 1,
                          antithetic: bool = True, out: Any = None) -> jax.Array:
    """Full-rank (OpenES) forward; same shapes as perturbed_matmul."""
    _no_out(out)
    key = _key(param_id, sigma, noise_reuse, antithetic)
    return _forward(True, x, W, members, epoch, seed, key)


def perturb_vector(v: Any, *, members: Any, epoch: Any = 0, seed: Any = 0, param_id: int = 0,
                   sigma: float = 1.0, noise_reuse: int = 1, antithetic: bool = True,
                   out: Any = None) -> jax.Array:
    """v float32 [m] -> float32 [M, m], row i = v + s_i sigma z_k[0:m]."""
    _no_out(out)
    key = _key(param_id, sigma, noise_reuse, antithetic)
    v = _float_array(v, "v", (1,))
    mem = _members(members, None)
    f = _ffi.perturb_vector_fn(key["param_id"], key["sigma"], key["noise_reuse"],
                               key["antithetic"])
    return f(v, mem, _seed(seed), _epoch(epoch))


def lowrank_factors(shape: Any, *, members: Any, epoch: Any = 0, seed: Any = 0,
                    param_id: int = 0, sigma: float = 1.0, rank: int = 1, noise_reuse: int = 1,
                    antithetic: bool = True) -> tuple[jax.Array, jax.Array]:
    """(A float32 [M, m, r] scaled by s_i sigma / sqrt(r), B float32 [M, n, r]).

    ``eggroll.lowrank_factors`` answers in NumPy; call this one for JAX arrays (members may be
    traced)."""
    key = _key(param_id, sigma, noise_reuse, antithetic, rank)
    m, n = check_factor_shape(shape, key["rank"])
    return _ffi.lowrank_factors(_members(members, None), _seed(seed), _epoch(epoch), m, n, **key)


def es_gradient(fitness: Any, shape: Any, *, members: Any = None, epoch: Any = 0, seed: Any = 0,
                param_id: int = 0, sigma: float = 1.0, rank: int = 1, noise_reuse: int = 1,
                antithetic: bool = True, full_rank: bool = False) -> jax.Array:
    """g = (1 / (N sigma)) sum_i f_i E_i: float32 [shape]. fitness [N] (already shaped).

    Non-finite fitness: NaN in, NaN out is not checked for traced fitness (it is for concrete
    arrays, like NumPy's ValueError)."""
    key = _key(param_id, sigma, noise_reuse, antithetic, rank)
    dims = check_shape_arg(shape)
    f = _float_array(fitness, "fitness", (1,))
    N = f.shape[0]
    if N == 0:
        raise ValueError("fitness: empty population")
    if key["antithetic"] and N % 2:
        raise ValueError(f"fitness: antithetic sampling needs an even population, got {N}")
    c = _concrete(f)
    if c is not None and not np.isfinite(c).all():
        raise ValueError("fitness: contains NaN or inf")
    mem = _members(range(N) if members is None else members, N, what="fitness")
    full = check_bool(full_rank, "full_rank") or len(dims) == 1
    if full and int(np.prod(dims)) > STREAM_LENGTH:
        raise ValueError(f"shape: {dims} has more than the 2^34 values of one noise stream")
    return _ffi.es_gradient(f, mem, _seed(seed), _epoch(epoch), dims, full, **key)


def _shape_input(f: Any) -> jax.Array:
    if not isinstance(f, jax.Array) and not _is_traced(f):
        f = np.asarray(f)
    dt = jnp.dtype(f.dtype)
    if dt == jnp.bool_ or not (jnp.issubdtype(dt, jnp.floating) or jnp.issubdtype(dt, jnp.integer)):
        raise TypeError(f"f: expected a real (float or integer) array, got dtype {dt}")
    if f.ndim != 1:
        raise ValueError(f"f: expected a 1-D array [N], got shape {tuple(f.shape)}")
    if dt in (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64)):
        return jnp.asarray(f)
    # integers and half floats: float64 when enabled (exact), else float32
    return jnp.asarray(f, dtype=jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)


def centered_rank(f: Any) -> jax.Array:
    """Ranks mapped linearly onto [-0.5, 0.5] (ties share their mean rank): float32 [N]."""
    f = _shape_input(f)
    return _ffi.shaping("centered_rank", f, f.shape[0])


def zscore(f: Any, group_size: int = 0) -> jax.Array:
    """(f - mean) / sqrt(var + 1e-5): mean per group of group_size (0 = all), var over all."""
    f = _shape_input(f)
    g = check_int(group_size, "group_size", 0, 1 << 62)
    if g and f.shape[0] % g:
        raise ValueError(f"group_size: must divide the population {f.shape[0]}, got {g}")
    return _ffi.shaping("zscore", f, f.shape[0], group_size=g)


def antithetic_sign(f: Any) -> jax.Array:
    """One value per antithetic pair: sign(f[2k] - f[2k+1]), float32 [N/2]."""
    f = _shape_input(f)
    if f.shape[0] % 2:
        raise ValueError(f"f: antithetic_sign needs an even population, got {f.shape[0]}")
    return _ffi.shaping("antithetic_sign", f, f.shape[0] // 2)


from .es import ES, param_id  # noqa: E402  (the trainer builds on the ops above)
from ._int8 import int8_update, perturbed_matmul_int8  # noqa: E402  (the integer path)
