"""JAX: every eggroll op on jax.Arrays through XLA FFI custom calls (eggroll._xla_ffi on the
CPU; eggroll._xla_ffi_cuda on NVIDIA GPUs in CUDA builds, see _cuda.py), and
``eggroll.jax.ES`` (ES over a parameter pytree with optax).

The ops are the top-level functions (``eggroll.perturbed_matmul(jax_array, ...)``); they work
eagerly (one cached dispatch per call) and under ``jax.jit``, ``jax.vmap`` and ``lax.scan``.
Arrays, ``members`` (an index array), ``seed`` and ``epoch`` may be traced; everything that
shapes the computation (``param_id``, ``sigma``, ``rank``, ``noise_reuse``, ``antithetic``,
``fixed_point``, ``sigma_shift``, ``shared``, ``shape``, a range of members) is static. At
trace time the same C++ checks as every other front end run on the shapes and on every value
that is known (ValueError / TypeError at the call site); only traced values that turn out bad
fail later, inside the compiled program. Float inputs are computed in float32 (a traced program
does not know its device until it is lowered, so half inputs are converted here too); on the
CPU results equal the NumPy path bit for bit. ``out=`` is not supported (JAX arrays are
immutable). docs/jax.md says what runs where.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import _core, _ops
from . import _ffi

__all__ = ["perturbed_matmul", "perturbed_matmul_full", "perturb_vector", "lowrank_factors",
           "es_gradient", "centered_rank", "zscore", "antithetic_sign", "perturbed_matmul_int8",
           "int8_update", "normal", "philox4x32", "ES", "param_id"]

_FLOATS = (jnp.float64, jnp.float16, jnp.bfloat16)


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


def _array(a: Any) -> Any:
    return a if isinstance(a, jax.Array) or _traced(a) else jnp.asarray(np.asarray(a))


def _float32(a: Any) -> Any:
    """A float input as float32 (the JAX dtype policy); other dtypes left to the check."""
    a = _array(a)
    return a.astype(jnp.float32) if any(a.dtype == d for d in _FLOATS) else a


def _seed(seed: Any) -> jax.Array:
    """uint32 [2] (low, high words): a Python int may use all 64 bits; a traced seed is an
    integer scalar (its low 32 bits) or uint32 [2]."""
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
    return jnp.asarray(np.array([s & 0xFFFFFFFF, s >> 32], dtype=np.uint32))


def _epoch(epoch: Any) -> jax.Array:
    if _traced(epoch) or isinstance(epoch, jax.Array):
        if not jnp.issubdtype(epoch.dtype, jnp.integer) or epoch.shape != ():
            raise TypeError(f"epoch: expected an integer scalar, got {epoch.dtype}"
                            f"{list(epoch.shape)}")
        return epoch if epoch.dtype in (jnp.int32, jnp.uint32, jnp.int64) else epoch.astype(jnp.int32)
    return jnp.asarray(np.uint32(int(epoch)))


def _scalar_key(v: Any) -> Any:
    """A seed or epoch for the trace-time check: a known int, or None (traced)."""
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
    m = _array(members)
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
    arrays_first = [isinstance(v, jax.Array) or _traced(v) for v in (seed, epoch)]
    ops = [f(v) if a else None for f, v, a in zip((_seed, _epoch), (seed, epoch), arrays_first)]
    _static(param_id=param_id, noise_reuse=noise_reuse, antithetic=antithetic, sigma=sigma,
            rank=rank, fixed_point=fixed_point, sigma_shift=sigma_shift, **options)
    spec = getattr(_core, "check_" + name)(*check_args, _scalar_key(seed), param_id,
                                           _scalar_key(epoch), *key[3:])
    specs = (spec,) if isinstance(spec[1], str) else spec
    outs = tuple(jax.ShapeDtypeStruct(s, jnp.dtype(d)) for s, d in specs)
    attrs = dict(param_id=param_id, noise_reuse=noise_reuse, antithetic=bool(antithetic),
                 sigma=float(sigma), rank=rank, fixed_point=fixed_point, sigma_shift=sigma_shift,
                 **_ffi.member_attrs(members), **options)
    f = _ffi.keyed(name, len(arrays), outs[0] if len(outs) == 1 else outs,
                   tuple(sorted(attrs.items())))
    seed_op = ops[0] if ops[0] is not None else _seed(seed)      # Python ints: checked above
    epoch_op = ops[1] if ops[1] is not None else _epoch(epoch)
    res = f(*arrays, *_ffi.operands(members, seed_op, epoch_op))
    return tuple(res) if len(outs) > 1 else res


class Backend:
    """The entries for jax.Arrays (eggroll._ops.backend), with the binding's arguments."""

    @staticmethod
    def _forward(name: str, x: Any, W: Any, members: Any, out: Any, shared: Any, key: tuple) -> Any:
        _no_out(out)
        conv = _array if name.endswith("int8") else _float32
        x, W, mem = conv(x), conv(W), _members(members)
        return _keyed(name, (x, W), (x, W, _known(members), None, shared), mem, key,
                      shared=bool(shared))

    def perturbed_matmul(self, x: Any, W: Any, members: Any, out: Any, shared: Any, *key: Any) -> Any:
        return self._forward("perturbed_matmul", x, W, members, out, shared, key)

    def perturbed_matmul_full(self, x: Any, W: Any, members: Any, out: Any, shared: Any, *key: Any) -> Any:
        return self._forward("perturbed_matmul_full", x, W, members, out, shared, key)

    def perturbed_matmul_int8(self, x: Any, W: Any, members: Any, out: Any, shared: Any, *key: Any) -> Any:
        return self._forward("perturbed_matmul_int8", x, W, members, out, shared, key)

    def perturb_vector(self, v: Any, members: Any, out: Any, *key: Any) -> Any:
        _no_out(out)
        v, mem = _float32(v), _members(members)
        return _keyed("perturb_vector", (v,), (v, _known(members), None), mem, key)

    def lowrank_factors(self, like: Any, shape: Any, members: Any, *key: Any) -> Any:
        _static(shape=shape)
        return _keyed("lowrank_factors", (), (None, shape, _known(members)), _members(members), key)

    def es_gradient(self, fitness: Any, shape: Any, members: Any, out: Any, full_rank: Any,
                    population: Any, accumulate: Any, *key: Any) -> Any:
        _no_out(out)
        _static(shape=shape, full_rank=full_rank)
        f = _float32(fitness)
        N = f.shape[0] if f.ndim == 1 else 0
        members = range(N) if members is None else members
        full = bool(full_rank) or (isinstance(shape, (tuple, list)) and len(shape) == 1)
        return _keyed("es_gradient", (f,), (_known(f), shape, _known(members), None, full_rank,
                                            population, accumulate),
                      _members(members), key, full_rank=full, population=N)

    def _shaping(self, name: str, f: Any, out: Any, group_size: Any) -> Any:
        _no_out(out)
        _static(group_size=group_size)
        f = _array(f)
        if jnp.issubdtype(f.dtype, jnp.integer) or any(f.dtype == d for d in _FLOATS[1:]):
            f = f.astype(jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
        shape, dt = getattr(_core, "check_" + name)(_known(f), None, group_size)
        return _ffi.shaping(name, jax.ShapeDtypeStruct(shape, jnp.dtype(dt)), int(group_size))(f)

    def centered_rank(self, f: Any, out: Any, group_size: Any) -> Any:
        return self._shaping("centered_rank", f, out, group_size)

    def zscore(self, f: Any, out: Any, group_size: Any) -> Any:
        return self._shaping("zscore", f, out, group_size)

    def antithetic_sign(self, f: Any, out: Any, group_size: Any) -> Any:
        return self._shaping("antithetic_sign", f, out, group_size)

    def int8_update(self, W: Any, pair_fitness: Any, out: Any, threshold: Any, *key: Any) -> Any:
        _no_out(out)
        W, f = _array(W), _array(pair_fitness)
        if f.dtype != jnp.int8 and f.dtype != jnp.bool_ and (
                jnp.issubdtype(f.dtype, jnp.integer) or jnp.issubdtype(f.dtype, jnp.floating)):
            # exact: a value outside {-1, 0, 1} becomes 2, which the check rejects
            f = jnp.where((f == -1) | (f == 0) | (f == 1), f, 2).astype(jnp.int8)
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

from .es import ES, param_id  # noqa: E402  (the trainer builds on the ops above)
