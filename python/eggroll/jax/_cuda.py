"""The CUDA lowering of each eggroll.jax op: what runs when the arrays live on an NVIDIA GPU
(the handlers of eggroll._xla_ffi_cuda, registered for platform "CUDA" under the CPU ops'
target names). ``_ffi.platform`` picks it with ``jax.lax.platform_dependent``.

How the operands differ from the CPU handlers' (cpp/bindings/xla_ffi_cuda.cpp):
- The base product ``x @ W.T`` is XLA's dot (cuBLAS) at ``Precision.HIGHEST`` (true float32:
  JAX's default on GPUs is TF32), computed once for a shared input and broadcast; the forward
  handlers add the correction onto it in place (``input_output_aliases={1: 0}``). The low-rank
  ``es_gradient`` is the ``es_gradient_factors`` handler plus one dot ``Af.T @ Bf`` per chunk
  of the core's chunk plan (``_core.es_gradient_chunks``).
- The key words and index members stay device values that the kernels read in place (no copy
  to the host, no synchronisation: the handlers are command-buffer compatible).
- Every keyed handler's last result is its scratch workspace (uint8, sized at trace time by
  ``_xla_ffi_cuda.workspace_<op>``: the plan the handler makes, made by the same maker from
  the entry's arguments): a command buffer may not allocate.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

_HIGHEST = lax.Precision.HIGHEST


# The key's arguments of every keyed entry; a call's attributes hold all but the traced two
# (seed, epoch: None, as at trace time).
_KEY = ("seed", "param_id", "epoch", "noise_reuse", "antithetic", "sigma", "rank", "fixed_point",
        "sigma_shift")


def _dot_nt(x: jax.Array, W: jax.Array) -> jax.Array:
    """x [..., n] @ W [m, n].T -> float32 [..., m], true float32 (no TF32)."""
    return lax.dot_general(x, W, (((x.ndim - 1,), (1,)), ((), ())), precision=_HIGHEST,
                           preferred_element_type=jnp.float32)


def _call(call: Any, name: str, out: Any, operands: list, attrs: dict, entry: tuple | None,
          aliases: dict[int, int] | None = None) -> Any:
    """eggroll_<name> by call (_ffi.call) with its workspace as the last result (dropped from
    what it returns), of the bytes the handler's plan needs: that plan made here by the same
    maker from `entry`, the entry's arguments before the key (abstract arrays; members as a
    range: index members are device values, never uploaded). None: no scratch (the ops whose
    only scratch would be uploaded host members)."""
    from .. import _xla_ffi_cuda
    nbytes = 0 if entry is None else int(getattr(_xla_ffi_cuda, "workspace_" + name)(
        *entry, *(attrs.get(k) for k in _KEY)))
    outs = tuple(out) if isinstance(out, tuple) else (out,)
    spec = outs + (jax.ShapeDtypeStruct((max(nbytes, 1),), jnp.uint8),)
    res = call(name, spec, *operands, aliases=aliases, **attrs)
    return tuple(res[:-1]) if isinstance(out, tuple) else res[0]


def lower(call: Any, name: str, narrays: int, out: Any, attrs: dict, *ops: Any) -> Any:
    """The CUDA lowering of keyed op `name` on operands ops (as the CPU handler's: the arrays,
    then the member words when attrs["members"] == 2, the key words); call: _ffi.call, the
    custom call itself."""
    arrays, key = ops[:narrays], list(ops[narrays:])
    index = key[0] if attrs["members"] == 2 else None
    if name in ("perturbed_matmul", "perturbed_matmul_full", "perturbed_matmul_int8"):
        x, W = arrays
        entry = (x, W, range(out.shape[0]) if attrs["members"] else None, None, attrs["shared"],
                 attrs["base"])
        if name == "perturbed_matmul_int8":
            return _call(call, name, out, [x, W] + key, attrs, entry)
        base = _dot_nt(x, W).astype(out.dtype) if attrs["base"] else jnp.zeros(out.shape, out.dtype)
        if attrs["shared"] and base.shape != out.shape:
            base = jnp.broadcast_to(base, out.shape)
        if attrs["members"] == 0:
            return base   # members=None: exactly the product, no custom call at all
        return _call(call, name, out, [x, base] + key, attrs, entry, aliases={1: 0})
    if name == "es_gradient":
        f = arrays[0]
        if attrs["full_rank"]:
            return _call(call, name, out, [f] + key, attrs,
                         (f, out.shape, range(f.shape[0]), None, True, attrs["population"], False))
        return _lowrank_gradient(call, f, index, key[-1], out, attrs)
    # int8_update's scratch is its factor columns; perturb_vector, lowrank_factors and
    # perturbed_embedding have none
    entry = (*arrays, None, attrs["threshold"]) if name == "int8_update" else None
    return _call(call, name, out, list(arrays) + key, attrs, entry)


def _lowrank_gradient(call: Any, f: jax.Array, index: jax.Array | None, words: jax.Array,
                      out: Any, attrs: dict) -> jax.Array:
    """sum over the chunk plan's chunks of Af.T @ Bf (XLA's dot, true float32)."""
    from .. import _core
    m, n = out.shape
    N = f.shape[0]
    members = (range(attrs["start"], attrs["start"] + N * attrs["step"], attrs["step"])
               if attrs["members"] == 1 else None)
    g = None
    for c0, c1, C in _core.es_gradient_chunks(members, N, m, n, attrs["rank"],
                                              bool(attrs["antithetic"])):
        part = dict(attrs)
        if index is None:
            part.update(start=attrs["start"] + c0 * attrs["step"], count=c1 - c0)
            key = [words]
        else:
            key = [index[c0:c1], words]
        spec = (jax.ShapeDtypeStruct((C, m), jnp.float32), jax.ShapeDtypeStruct((C, n), jnp.float32))
        fc = f[c0:c1]
        Af, Bf = _call(call, "es_gradient_factors", spec, [fc] + key, part,
                       (fc, (m, n), range(c1 - c0), attrs["population"]))
        prod = lax.dot_general(Af, Bf, (((0,), (0,)), ((), ())), precision=_HIGHEST,
                               preferred_element_type=jnp.float32)
        g = prod if g is None else g + prod
    return g if g is not None else jnp.zeros(out.shape, jnp.float32)
