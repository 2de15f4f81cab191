"""The XLA FFI calls behind eggroll.jax: registration of the handlers of eggroll._xla_ffi (CPU)
and eggroll._xla_ffi_cuda (CUDA builds), one ``jax.ffi.ffi_call`` per op, jitted once per
static configuration (an eager call is one cached dispatch, no re-trace), and the batching rule.

Operands: the op's arrays, then index members (when an array) and seed uint32 [2] (low, high
words) and epoch (an integer scalar), so members, seed and epoch may be traced (a jitted step
compiles once for all epochs); inside the jitted call they become what every platform's
handler reads (cpp/bindings/xla_ffi_common.h): the members as int64 words (uint32 [M, 2]) and
one key operand uint32 [4] (the seed's words, the epoch's as int64). Attributes: the static key (param_id, sigma, rank, noise_reuse,
antithetic, fixed_point, sigma_shift), members as a range (start, step, count) or kind, shared
and the op's options (cpp/bindings/xla_ffi_common.h). Where the CUDA handlers are built each
op is staged with ``lax.platform_dependent``: the CPU lowering here and the CUDA one of
_cuda.py; XLA compiles only the branch of the device the computation runs on.

vmap: the forwards and perturb_vector fold a batched member axis into the member axis - a
vmap over the population is ONE call with W unbatched; an unbatched x of one row block is
taken as a shared input (its base product computed once). Other batchings (W, seed or epoch
per element) fall back to one call per element (lax.map), correct but not shared.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_CUDA: bool = False   # the CUDA handlers (eggroll._xla_ffi_cuda) are registered


@functools.cache
def ensure_registered() -> None:
    """Registers every handler with XLA (once per process): the CPU ones always, the CUDA ones
    when this eggroll was built with CUDA (silently skipped in CPU-only builds)."""
    global _CUDA
    try:
        from .. import _xla_ffi
    except ImportError as e:  # pragma: no cover - depends on how eggroll was built
        raise RuntimeError(
            "eggroll.jax: this eggroll was built without the JAX FFI handlers "
            "(eggroll._xla_ffi); reinstall with jaxlib available (see docs/jax.md)") from e
    tables = _xla_ffi.registrations()
    try:
        from .. import _xla_ffi_cuda
        tables.update(_xla_ffi_cuda.registrations())
        _CUDA = True
    except ImportError:   # a CPU-only build (or one without jaxlib's headers)
        pass
    for platform, handlers in tables.items():
        for name, capsule in handlers.items():
            jax.ffi.register_ffi_target(f"eggroll_{name}", capsule, platform=platform)


def call(name: str, out: Any, *operands: Any, aliases: dict[int, int] | None = None,
         **attrs: Any) -> Any:
    """One custom call to eggroll_<name>; aliases: operand index -> result index (in place);
    attrs as Python values (typed here)."""
    ensure_registered()
    return jax.ffi.ffi_call(f"eggroll_{name}", out, vmap_method="sequential",
                            input_output_aliases=aliases)(*operands, **typed(attrs))


def typed(attrs: dict[str, Any]) -> dict[str, Any]:
    """Attributes as the NumPy scalar types the handlers decode (int64, float64, bool)."""
    def one(v: Any) -> Any:
        if isinstance(v, (bool, np.bool_)):
            return np.bool_(v)
        return np.float64(v) if isinstance(v, float) else np.int64(v)
    return {k: one(v) for k, v in attrs.items()}


def member_attrs(members: Any) -> dict[str, Any]:
    """members: None (kind 0), a range (kind 1: start, step, count) or an index operand (2)."""
    if members is None:
        return dict(members=0, start=0, step=1, count=0)
    if isinstance(members, range):
        return dict(members=1, start=members.start, step=members.step, count=len(members))
    return dict(members=2, start=0, step=1, count=0)


def operands(members: Any, seed: jax.Array, epoch: jax.Array) -> list[Any]:
    """The trailing operands of a keyed call: (index members), seed, epoch."""
    return ([] if members is None or isinstance(members, range) else [members]) + [seed, epoch]


def int64_words(a: jax.Array) -> jax.Array:
    """int32 / uint32 / int64 [...] as uint32 [..., 2]: the (low, high) words of the values as
    int64 (int32 sign-extended, so a negative value stays negative for the handlers' checks)."""
    if a.dtype == jnp.uint32:
        lo, hi = a, jnp.zeros_like(a)
    elif a.dtype == jnp.int32:
        lo = lax.bitcast_convert_type(a, jnp.uint32)
        hi = lax.bitcast_convert_type(a >> 31, jnp.uint32)      # arithmetic shift: 0 or ~0
    else:
        lo = (a & 0xFFFFFFFF).astype(jnp.uint32)
        hi = ((a >> 32) & 0xFFFFFFFF).astype(jnp.uint32)
    return jnp.stack([lo, hi], axis=-1)


def _packed(narrays: int, ops: tuple) -> tuple:
    """(*arrays, *member operand, seed, epoch) as the handlers take them (module docstring)."""
    *head, seed, epoch = ops
    if len(head) > narrays:
        head[narrays] = int64_words(head[narrays])
    seed = jnp.asarray(seed).astype(jnp.uint32).reshape(2)
    return (*head, jnp.concatenate([seed, int64_words(jnp.asarray(epoch)).reshape(2)]))


def platform(cpu: Any, cuda: Any, *args: Any) -> Any:
    """cpu(*args) for arrays on a CPU, cuda(*args) for arrays on an NVIDIA GPU (the CUDA
    branch only where the CUDA handlers are built)."""
    ensure_registered()
    if not _CUDA:   # a CPU-only build: no CUDA handlers
        return cpu(*args)
    return lax.platform_dependent(*args, cpu=cpu, cuda=cuda, default=cpu)


# ------------------------------------------------------------------------------------------
# the ops, jitted once per static configuration
# ------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def keyed(name: str, narrays: int, out: Any, attrs: tuple) -> Any:
    """f(*arrays, *member operand, seed, epoch) -> the op's result(s), jitted, with the
    folding vmap rule for the forwards and perturb_vector. out: the result spec(s) (static)."""
    from . import _cuda
    attrs_d = dict(attrs)
    # the CPU and CUDA lowerings: f(*arrays, *member words, key words)
    cpu = functools.partial(call, name, out, **attrs_d)
    gpu = functools.partial(_cuda.lower, call, name, narrays, out, attrs_d)

    def raw(*ops: Any) -> Any:
        return platform(cpu, gpu, *_packed(narrays, ops))

    if name not in ("perturbed_matmul", "perturbed_matmul_full", "perturbed_matmul_int8",
                    "perturb_vector") or attrs_d["members"] != 2:
        return jax.jit(raw)
    f = jax.custom_batching.custom_vmap(raw)
    f.def_vmap(_fold_rule(name, narrays, out, attrs_d, f))
    return jax.jit(f)


def _fold_rule(name: str, narrays: int, out: Any, attrs: dict, f: Any) -> Any:
    """A vmap over index members folds into the member axis of one call (module docstring)."""
    forward = name != "perturb_vector"

    def rule(axis_size: int, in_batched: list[bool], *ops: Any) -> tuple[Any, bool]:
        arrays, members, seed, epoch = ops[:narrays], ops[narrays], ops[-2], ops[-1]
        b_x = in_batched[0] if forward else False
        others = in_batched[1:narrays] if forward else in_batched[:narrays]
        if any(others) or in_batched[-1] or in_batched[-2] or not in_batched[narrays]:
            def one(i: jax.Array) -> Any:
                return f(*[a[i] if b else a for a, b in zip(ops, in_batched)])
            return lax.map(one, jnp.arange(axis_size)), True
        M = members.shape[-1]
        members = members.reshape(axis_size * M)
        fold = jax.ShapeDtypeStruct((axis_size * M,) + out.shape[1:], out.dtype)
        if not forward:
            y = keyed(name, narrays, fold, tuple(attrs.items()))(*arrays, members, seed, epoch)
            return y.reshape((axis_size, M) + y.shape[1:]), True
        x, rest = arrays[0], arrays[1:]
        shared = attrs["shared"]
        if not b_x and not shared and x.shape[0] == 1:      # one row block for every member
            x, shared = x[0], True
        elif b_x and shared:                               # shared within a lane only
            x = jnp.broadcast_to(x[:, None], (axis_size, M) + x.shape[1:])
            x, shared = x.reshape((axis_size * M,) + x.shape[2:]), False
        elif b_x:
            x = x.reshape((axis_size * M,) + x.shape[2:])
        elif not shared:
            x = jnp.broadcast_to(x, (axis_size,) + x.shape).reshape((axis_size * M,) + x.shape[1:])
        g = keyed(name, narrays, fold, tuple(dict(attrs, shared=shared).items()))
        y = g(x, *rest, members, seed, epoch)
        return y.reshape((axis_size, M) + y.shape[1:]), True
    return rule


@functools.lru_cache(maxsize=None)
def shaping(name: str, out: Any, group_size: int) -> Any:
    """The fitness-shaping ops, jitted: the same operands on every platform (no branch)."""
    return jax.jit(lambda f: call(name, out, f, group_size=group_size))
