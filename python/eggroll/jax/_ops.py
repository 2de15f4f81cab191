"""The eggroll ops on jax.Arrays (eggroll.jax re-exports them): the trace-time checks (the
core's own, through ``_core.check_<op>``), the static / traced split of the arguments, and one
jitted FFI call per static configuration (_ffi.py)."""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import _core, _ops
from . import _ffi

_FLOATS = (jnp.float64, jnp.float16, jnp.bfloat16)
_CONVERTED = frozenset(np.dtype(d) for d in _FLOATS)


def _traced(v: Any) -> bool:
    return isinstance(v, jax.core.Tracer)


def _known(v: Any) -> Any:
    """v for the trace-time check: a concrete array as NumPy (the check reads its values),
    a tracer as it is (its shape and dtype), anything else unchanged."""
    return np.asarray(v) if isinstance(v, jax.Array) and not _traced(v) else v


def _static(**values: Any) -> None:
    for name, v in values.items():
        if _traced(v) or isinstance(v, jax.Array):
            raise TypeError(f"{name}: must be a static Python value (it shapes the "
                            f"computation); only arrays, members, seed and epoch may be traced")


def _no_out(out: Any) -> None:
    if out is not None:
        raise TypeError("out: not supported for JAX arrays (they are immutable); use the result")


def _array(a: Any, name: str) -> Any:
    if isinstance(a, jax.Array) or _traced(a):
        return a
    a = np.asarray(a)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected a numeric array, got {a.dtype} "
                        f"({type(a).__name__})")
    return jnp.asarray(a)


def _float32(a: Any, name: str) -> Any:
    """A float input as float32 (the JAX dtype policy); other dtypes left to the check."""
    a = _array(a, name)
    return a.astype(jnp.float32) if a.dtype in _CONVERTED else a


def _seed(seed: Any) -> Any:
    """uint32 [2] (low, high words): a Python int may use all 64 bits; a traced seed is an
    integer scalar (its low 32 bits) or uint32 [2]. Python values stay NumPy arrays (the
    jitted call takes them as they are)."""
    if _traced(seed) or isinstance(seed, jax.Array):
        if not jnp.issubdtype(seed.dtype, jnp.integer):
            raise TypeError(f"seed: expected an integer, got dtype {seed.dtype}")
        if seed.shape == (2,) and seed.dtype == jnp.uint32:
            return seed
        if seed.shape != ():
            raise ValueError(f"seed: expected a scalar (or uint32 [2] words), got shape "
                             f"{tuple(seed.shape)}")
        if not _traced(seed):
            return _seed(int(seed))
        return jnp.stack([seed.astype(jnp.uint32), jnp.zeros((), jnp.uint32)])
    s = int(seed)
    return np.array([s & 0xFFFFFFFF, s >> 32], dtype=np.uint32)


def _epoch(epoch: Any) -> Any:
    if _traced(epoch) or isinstance(epoch, jax.Array):
        if not jnp.issubdtype(epoch.dtype, jnp.integer) or epoch.shape != ():
            raise TypeError(f"epoch: expected an integer scalar, got {epoch.dtype}"
                            f"{list(epoch.shape)}")
        return epoch if epoch.dtype in (jnp.int32, jnp.uint32, jnp.int64) else epoch.astype(jnp.int32)
    return np.uint32(int(epoch))


def _scalar_key(v: Any, name: str) -> Any:
    """A seed or epoch for the trace-time check: a known int, or None (traced)."""
    if v is None:
        raise TypeError(f"{name}: expected an int, got NoneType")
    if _traced(v):
        return None
    k = _known(v)
    if isinstance(k, np.ndarray):
        if k.shape == (2,) and k.dtype == np.uint32:      # seed words
            return int(k[0]) | (int(k[1]) << 32)
        return int(k) if k.shape == () and np.issubdtype(k.dtype, np.integer) else k
    return k


def _members(members: Any) -> Any:
    """None, a range (static), or an int32 / int64 index operand."""
    if members is None or isinstance(members, range):
        return members
    m = _array(members, "members")
    if not _traced(m) and m.size and np.asarray(m).max() > np.iinfo(np.int32).max:
        if not jax.config.jax_enable_x64:
            raise ValueError(f"members: indices >= 2^31 need jax_enable_x64 (JAX's int32 "
                             f"default cannot hold {int(np.asarray(m).max())})")
        return m.astype(jnp.int64)
    return m if m.dtype in (jnp.int32, jnp.int64) else m.astype(jnp.int32)


def _keyed(name: str, arrays: tuple, check_args: tuple, members: Any, key: tuple,
           **options: Any) -> Any:
    """One keyed op: the trace-time check (the outputs' specs), then the jitted call.
    check_args: the binding's arguments before the key, with known values for members &c."""
    seed, param_id, epoch, noise_reuse, antithetic, sigma, rank, fixed_point, sigma_shift = key
    # Array seeds / epochs are checked (dtype, shape) before the core's check; Python ints after.
    seed_op = _seed(seed) if isinstance(seed, jax.Array) or _traced(seed) else None
    epoch_op = _epoch(epoch) if isinstance(epoch, jax.Array) or _traced(epoch) else None
    _static(param_id=param_id, noise_reuse=noise_reuse, antithetic=antithetic, sigma=sigma,
            rank=rank, fixed_point=fixed_point, sigma_shift=sigma_shift, **options)
    specs = getattr(_core, "check_" + name)(*check_args, _scalar_key(seed, "seed"), param_id,
                                            _scalar_key(epoch, "epoch"), *key[3:])
    outs = tuple(jax.ShapeDtypeStruct(s, jnp.dtype(d)) for s, d in specs)
    attrs = (("param_id", param_id), ("noise_reuse", noise_reuse), ("antithetic", bool(antithetic)),
             ("sigma", float(sigma)), ("rank", rank), ("fixed_point", fixed_point),
             ("sigma_shift", sigma_shift), *_ffi.member_attrs(members).items(),
             *sorted(options.items()))
    f = _ffi.keyed(name, len(arrays), outs[0] if len(outs) == 1 else outs, attrs)
    res = f(*arrays, *_ffi.operands(members, _seed(seed) if seed_op is None else seed_op,
                                    _epoch(epoch) if epoch_op is None else epoch_op))
    return tuple(res) if len(outs) > 1 else res


class Backend:
    """The entries for jax.Arrays (eggroll._ops.backend), with the binding's arguments."""

    def _forward(self, name: str, x: Any, W: Any, members: Any, out: Any, shared: Any,
                 base: Any, *key: Any) -> Any:
        _no_out(out)
        conv = _array if name.endswith("int8") else _float32
        x, W, mem = conv(x, "x"), conv(W, "W"), _members(members)
        return _keyed(name, (x, W), (x, W, _known(members), None, shared, base), mem, key,
                      shared=bool(shared), base=bool(base))

    perturbed_matmul = functools.partialmethod(_forward, "perturbed_matmul")
    perturbed_matmul_full = functools.partialmethod(_forward, "perturbed_matmul_full")
    perturbed_matmul_int8 = functools.partialmethod(_forward, "perturbed_matmul_int8")

    def perturb_vector(self, v: Any, members: Any, out: Any, *key: Any) -> Any:
        _no_out(out)
        v, mem = _float32(v, "v"), _members(members)
        return _keyed("perturb_vector", (v,), (v, _known(members), None), mem, key)

    def perturbed_embedding(self, ids: Any, W: Any, members: Any, out: Any, shared: Any,
                            *key: Any) -> Any:
        _no_out(out)
        ids, W, mem = _array(ids, "ids"), _float32(W, "W"), _members(members)
        # concrete ids are checked at trace time (values in [0, V)) like the other backends
        return _keyed("perturbed_embedding", (ids, W), (_known(ids), W, _known(members), None,
                                                        shared), mem, key, shared=bool(shared))

    def lowrank_factors(self, like: Any, shape: Any, members: Any, *key: Any) -> Any:
        _static(shape=shape)
        return _keyed("lowrank_factors", (), (None, shape, _known(members)), _members(members), key)

    def es_gradient(self, fitness: Any, shape: Any, members: Any, out: Any, full_rank: Any,
                    population: Any, accumulate: Any, *key: Any) -> Any:
        _no_out(out)
        _static(shape=shape, full_rank=full_rank)
        f = _float32(fitness, "fitness")
        N = f.shape[0] if f.ndim == 1 else 0
        members = range(N) if members is None else members
        full = bool(full_rank) or (isinstance(shape, (tuple, list)) and len(shape) == 1)
        return _keyed("es_gradient", (f,), (_known(f), shape, _known(members), None, full_rank,
                                            population, accumulate),
                      _members(members), key, full_rank=full, population=N, accumulate=False)

    def _shaping(self, name: str, f: Any, out: Any, group_size: Any) -> Any:
        _no_out(out)
        _static(group_size=group_size)
        f = _array(f, "f")
        if jnp.issubdtype(f.dtype, jnp.integer) or any(f.dtype == d for d in _FLOATS[1:]):
            f = f.astype(jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
        [(shape, dt)] = getattr(_core, "check_" + name)(_known(f), None, group_size)
        return _ffi.shaping(name, jax.ShapeDtypeStruct(shape, jnp.dtype(dt)), int(group_size))(f)

    centered_rank = functools.partialmethod(_shaping, "centered_rank")
    zscore = functools.partialmethod(_shaping, "zscore")
    antithetic_sign = functools.partialmethod(_shaping, "antithetic_sign")

    def int8_update(self, W: Any, pair_fitness: Any, out: Any, threshold: Any, *key: Any) -> Any:
        _no_out(out)
        W, f = _array(W, "W"), _array(pair_fitness, "pair_fitness")
        if f.dtype != jnp.int8 and f.dtype != jnp.bool_ and (
                jnp.issubdtype(f.dtype, jnp.integer) or jnp.issubdtype(f.dtype, jnp.floating)):
            # exact (compared as floats: an unsigned 255 is not -1): a value outside
            # {-1, 0, 1} becomes 2, which the check rejects by index
            v = f.astype(jnp.float32)
            f = jnp.where((v == -1) | (v == 0) | (v == 1), v, 2).astype(jnp.int8)
        return _keyed("int8_update", (W, f), (W, _known(f), None, threshold), None, key,
                      threshold=threshold)

    def normal(self, like: Any, *args: Any) -> Any:
        return jnp.asarray(_core.normal(None, *args))

    def philox4x32(self, counter: Any, key: Any, out: Any) -> Any:
        _no_out(out)
        if _traced(counter) or _traced(key):
            raise TypeError("counter: philox4x32 takes concrete arrays (it is not traceable)")
        return jnp.asarray(_core.philox4x32(np.asarray(counter), np.asarray(key), None))


BACKEND = Backend()


def _convert(a: Any) -> Any:
    """An argument of eggroll.jax.<op> as a JAX value (tracers and ranges as they are)."""
    return a if isinstance(a, (jax.Array, range)) or _traced(a) or a is None else jnp.asarray(a)


globals().update(_ops.framework_ops(_convert, lambda: jnp.zeros(0, jnp.float32)))
__all__ = list(_ops.OPS)
