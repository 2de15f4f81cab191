"""The CUDA lowering of each eggroll.jax op: what runs when the arrays live on an NVIDIA GPU
(the handlers of eggroll._xla_ffi_cuda, registered for platform "CUDA" under the CPU ops'
target names). ``_ffi.platform`` picks it with ``jax.lax.platform_dependent``.

Why the operands differ from the CPU handlers':
- The CUDA backend has no cuBLAS of its own. The base product ``x @ W.T`` is XLA's dot
  (cuBLAS), at ``Precision.HIGHEST`` (true float32: JAX's default on GPUs is TF32), computed
  once for a shared input and broadcast, and the forward handlers add the correction onto it
  in place (``input_output_aliases={1: 0}``). The low-rank ``es_gradient`` is the
  ``es_gradient_factors`` handler plus one dot ``Af.T @ Bf`` per chunk of members of bounded
  factor memory.
- The launchers take the key on the host, but seed, epoch and index members are traced device
  values: they travel as ONE uint32 operand, ``key`` = [seed lo, seed hi, epoch lo, epoch hi,
  each index member's int64 words], which the handler copies to the host (one small copy and
  a stream synchronisation per call) and checks like the CPU core.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# Factor memory per es_gradient chunk (the CUDA entries and the CPU core use the same bound).
FACTOR_BYTES = 64 << 20
_HIGHEST = lax.Precision.HIGHEST


def _int64_words(a: jax.Array) -> jax.Array:
    """int32 / uint32 / int64 [...] as uint32 [..., 2]: the (low, high) words of the values as
    int64 (int32 sign-extended, so a negative value stays negative for the handler's checks)."""
    if a.dtype == jnp.uint32:
        lo, hi = a, jnp.zeros_like(a)
    elif a.dtype == jnp.int32:
        lo = lax.bitcast_convert_type(a, jnp.uint32)
        hi = lax.bitcast_convert_type(a >> 31, jnp.uint32)      # arithmetic shift: 0 or ~0
    else:
        lo = (a & 0xFFFFFFFF).astype(jnp.uint32)
        hi = ((a >> 32) & 0xFFFFFFFF).astype(jnp.uint32)
    return jnp.stack([lo, hi], axis=-1)


def key_words(ops: tuple, narrays: int, attrs: dict) -> jax.Array:
    """uint32 [4 + 2M] from the trailing operands (index members when kind 2, seed, epoch)."""
    seed, epoch = ops[-2], ops[-1]
    parts = [seed.astype(jnp.uint32).reshape(2), _int64_words(epoch).reshape(2)]
    if attrs["members"] == 2:
        parts.append(_int64_words(ops[narrays]).reshape(-1))
    return jnp.concatenate(parts)


def _dot_nt(x: jax.Array, W: jax.Array) -> jax.Array:
    """x [..., n] @ W [m, n].T -> float32 [..., m], true float32 (no TF32)."""
    return lax.dot_general(x, W, (((x.ndim - 1,), (1,)), ((), ())), precision=_HIGHEST,
                           preferred_element_type=jnp.float32)


def _chunks(attrs: dict, N: int, m: int, n: int) -> list[tuple[int, int, int]]:
    """(c0, c1, C) per member chunk of the low-rank estimate: C the chunk's runs times rank
    for a range of members, else the bound (c1 - c0) rank (the handler zeroes unused rows)."""
    from .. import _core
    r = int(attrs["rank"])
    step = max(2, (FACTOR_BYTES // (4 * (m + n) * r)) & ~1)
    out = []
    for c0 in range(0, N, step):
        c1 = min(N, c0 + step)
        if attrs["members"] == 1:
            part = range(attrs["start"] + c0 * attrs["step"], attrs["start"] + c1 * attrs["step"],
                         attrs["step"])
            C = int(_core.es_gradient_columns(part, bool(attrs["antithetic"]), r))
        else:
            C = (c1 - c0) * r
        out.append((c0, c1, C))
    return out


def lower(call: Any, name: str, narrays: int, out: Any, ops: tuple, attrs: dict) -> Any:
    """The CUDA lowering of keyed op `name` on operands ops (as the CPU handler's); call:
    _ffi.call, the custom call itself."""
    arrays, key = ops[:narrays], key_words(ops, narrays, attrs)
    a = attrs
    if name in ("perturbed_matmul", "perturbed_matmul_full"):
        x, W = arrays
        base = _dot_nt(x, W) if attrs["base"] else jnp.zeros(out.shape, out.dtype)
        if attrs["shared"] and base.shape != out.shape:
            base = jnp.broadcast_to(base, out.shape)
        if attrs["members"] == 0:
            return base   # members=None: exactly the product, no custom call at all
        return call(name, out, x, base, key, aliases={1: 0}, **a)
    if name == "perturbed_matmul_int8":
        x, W = arrays
        if attrs["shared"]:      # the CUDA int8 GEMM reads x per member: materialise it
            x = jnp.broadcast_to(x, out.shape[:-1] + x.shape[-1:])
            a = dict(attrs, shared=False)
        return call(name, out, x, W, key, **a)
    if name == "es_gradient" and not attrs["full_rank"]:
        f = arrays[0]
        m, n = out.shape
        g = None
        for c0, c1, C in _chunks(attrs, f.shape[0], m, n):
            part = dict(attrs)
            if attrs["members"] == 1:
                part.update(start=attrs["start"] + c0 * attrs["step"], count=c1 - c0)
                k = key
            else:
                k = jnp.concatenate([key[:4], key[4 + 2 * c0:4 + 2 * c1]])
            spec = (jax.ShapeDtypeStruct((C, m), jnp.float32), jax.ShapeDtypeStruct((C, n), jnp.float32))
            Af, Bf = call("es_gradient_factors", spec, f[c0:c1], k, **part)
            prod = lax.dot_general(Af, Bf, (((0,), (0,)), ((), ())), precision=_HIGHEST,
                                   preferred_element_type=jnp.float32)
            g = prod if g is None else g + prod
        return g if g is not None else jnp.zeros(out.shape, jnp.float32)
    return call(name, out, *arrays, key, **a)
