"""The XLA FFI calls behind eggroll.jax: registration of the handlers of eggroll._xla_ffi
(CPU) and eggroll._xla_ffi_cuda (CUDA, when built) and one ``jax.ffi.ffi_call`` per op, with
its batching rule.

Platforms: where the CUDA handlers are built, each op is staged with
``jax.lax.platform_dependent`` (``per_platform``): the CPU lowering below, and the CUDA one of
``_cuda.py`` (XLA's dot for the base products plus eggroll's handlers for the noise terms,
with a different operand list). XLA compiles only the branch of the device the computation
runs on, so arrays on a CPU keep the CPU handlers and arrays on a GPU get the CUDA ones.

Operands vs attributes: arrays, ``members``, ``seed`` (uint32 [2] = low, high words) and
``epoch`` (an integer scalar) are operands, so they may be traced (a jitted step compiles once
for every epoch); ``param_id``, ``sigma``, ``rank``, ``noise_reuse``, ``antithetic`` are static
attributes. Everything here assumes the arguments were validated by eggroll.jax.

vmap: the forwards and perturb_vector carry a ``custom_vmap`` rule that folds the mapped axis
into the member axis — a vmap over the population becomes ONE call with the members stacked and
W unbatched (never copied per member). A batched W, seed or epoch falls back to one call per
batch element (``lax.map``), which is correct but loses the shared base product.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_REGISTERED: bool = False
_CUDA: bool = False   # the CUDA handlers (eggroll._xla_ffi_cuda) are registered


def ensure_registered() -> None:
    """Registers every handler with XLA (once per process): the CPU ones always, the CUDA ones
    when this eggroll was built with CUDA (silently skipped in CPU-only builds)."""
    global _REGISTERED, _CUDA
    if _REGISTERED:
        return
    try:
        from .. import _xla_ffi
    except ImportError as e:  # pragma: no cover - depends on how eggroll was built
        raise RuntimeError(
            "eggroll.jax: this eggroll was built without the JAX FFI handlers "
            "(eggroll._xla_ffi); reinstall with jaxlib available, e.g. "
            "pip install 'eggroll[jax]' (see docs/jax.md)") from e
    tables = [_xla_ffi.registrations()]
    try:
        from .. import _xla_ffi_cuda
    except ImportError:   # a CPU-only build (or one without jaxlib's headers)
        _xla_ffi_cuda = None
    if _xla_ffi_cuda is not None:
        tables.append(_xla_ffi_cuda.registrations())
    for table in tables:
        for platform, handlers in table.items():
            for name, capsule in handlers.items():
                jax.ffi.register_ffi_target(f"eggroll_{name}", capsule, platform=platform)
    _CUDA = _xla_ffi_cuda is not None
    _REGISTERED = True


def cuda_handlers() -> bool:
    """Whether the CUDA handlers are registered (this eggroll was built with CUDA + JAX)."""
    ensure_registered()
    return _CUDA


def per_platform(cpu: Any, cuda: Any, *args: Any) -> Any:
    """cpu(*args) for arrays on a CPU, cuda(*args) for arrays on an NVIDIA GPU.

    Without the CUDA handlers this is just cpu(*args) (the jaxpr then holds one call, as it
    always did). With them, ``lax.platform_dependent`` stages both; other platforms get the
    CPU lowering, whose custom call XLA then reports as unregistered there."""
    if not cuda_handlers():
        return cpu(*args)
    return lax.platform_dependent(*args, cpu=cpu, cuda=cuda, default=cpu)


def _key_attrs(param_id: int, sigma: float, noise_reuse: int, antithetic: bool,
               rank: int | None = None) -> dict[str, Any]:
    # Explicit NumPy scalar types pin the attribute types the C++ handlers decode.
    attrs = dict(param_id=np.int64(param_id), sigma=np.float64(sigma),
                 noise_reuse=np.int64(noise_reuse), antithetic=np.bool_(antithetic))
    if rank is not None:
        attrs["rank"] = np.int64(rank)
    return attrs


def _call(name: str, results: Any, *operands: Any, aliases: dict[int, int] | None = None,
          **attrs: Any) -> Any:
    """One custom call to eggroll_<name>; aliases: operand index -> result index (in place)."""
    ensure_registered()
    return jax.ffi.ffi_call(f"eggroll_{name}", results, vmap_method="sequential",
                            input_output_aliases=aliases)(*operands, **attrs)


# ------------------------------------------------------------------------------------------
# forwards: x [M, n] | [M, b, n], W [m, n], members int [M], seed uint32 [2], epoch int []
# ------------------------------------------------------------------------------------------

def _forward_raw(x: jax.Array, W: jax.Array, members: jax.Array, seed: jax.Array,
                 epoch: jax.Array, *, full: bool, perturb: bool, **key: Any) -> jax.Array:
    out = jax.ShapeDtypeStruct(x.shape[:-1] + (W.shape[0],), jnp.float32)
    attrs = _key_attrs(**key)          # key["rank"] is 1 for the full-rank baseline

    def cpu(x: jax.Array, W: jax.Array, members: jax.Array, seed: jax.Array,
            epoch: jax.Array) -> jax.Array:
        return _call("perturbed_matmul_full" if full else "perturbed_matmul", out, x, W, members,
                     seed, epoch, perturb=np.bool_(perturb), **attrs)

    def gpu(x: jax.Array, W: jax.Array, members: jax.Array, seed: jax.Array,
            epoch: jax.Array) -> jax.Array:
        return _cuda.forward(x, W, members, seed, epoch, full=full, perturb=perturb, attrs=attrs)

    return per_platform(cpu, gpu, x, W, members, seed, epoch)


def _fold_rule(raw: Any, n_data: int) -> Any:
    """A custom_vmap rule for an op whose operands are (*data[M, ...], members[M], seed,
    epoch) after n_data unbatched-only leading operands (W) — see the module docstring."""
    def rule(axis_size: int, in_batched: list[bool], *args: Any) -> tuple[Any, bool]:
        shared, data, members, seed, epoch = (args[:n_data], args[n_data], args[n_data + 1],
                                              args[n_data + 2], args[n_data + 3])
        b_shared = in_batched[:n_data]
        b_data, b_members, b_seed, b_epoch = in_batched[n_data:n_data + 4]
        if any(b_shared) or b_seed or b_epoch:
            # Different W or keys per batch element: one call each (correct, not shared).
            def one(i: jax.Array) -> jax.Array:
                pick = [a[i] if b else a for a, b in zip(args, in_batched)]
                return raw(*pick)
            return lax.map(one, jnp.arange(axis_size)), True
        M = members.shape[-1]
        if not b_members:
            members = jnp.broadcast_to(members, (axis_size, M))
        if not b_data:
            data = jnp.broadcast_to(data, (axis_size,) + data.shape)
        y = raw(*shared, data.reshape((axis_size * M,) + data.shape[2:]),
                members.reshape(axis_size * M), seed, epoch)
        return y.reshape((axis_size, M) + y.shape[1:]), True
    return rule


@functools.lru_cache(maxsize=None)
def forward_fn(full: bool, perturb: bool, param_id: int, sigma: float, rank: int,
               noise_reuse: int, antithetic: bool) -> Any:
    """f(W, x, members, seed, epoch) -> y, with the population-folding vmap rule."""
    key = dict(param_id=param_id, sigma=sigma, rank=rank, noise_reuse=noise_reuse,
               antithetic=antithetic)

    @jax.custom_batching.custom_vmap
    def f(W: jax.Array, x: jax.Array, members: jax.Array, seed: jax.Array,
          epoch: jax.Array) -> jax.Array:
        return _forward_raw(x, W, members, seed, epoch, full=full, perturb=perturb, **key)

    f.def_vmap(_fold_rule(f, 1))
    return f


@functools.lru_cache(maxsize=None)
def perturb_vector_fn(param_id: int, sigma: float, noise_reuse: int, antithetic: bool) -> Any:
    """f(v, members, seed, epoch) -> [M, m]; a vmap over members folds into one call."""
    attrs = _key_attrs(param_id, sigma, noise_reuse, antithetic)

    def cpu(v: jax.Array, members: jax.Array, seed: jax.Array, epoch: jax.Array) -> jax.Array:
        out = jax.ShapeDtypeStruct((members.shape[0], v.shape[0]), jnp.float32)
        return _call("perturb_vector", out, v, members, seed, epoch, **attrs)

    def gpu(v: jax.Array, members: jax.Array, seed: jax.Array, epoch: jax.Array) -> jax.Array:
        return _cuda.perturb_vector(v, members, seed, epoch, attrs)

    def raw(v: jax.Array, members: jax.Array, seed: jax.Array, epoch: jax.Array) -> jax.Array:
        return per_platform(cpu, gpu, v, members, seed, epoch)

    @jax.custom_batching.custom_vmap
    def f(v: jax.Array, members: jax.Array, seed: jax.Array, epoch: jax.Array) -> jax.Array:
        return raw(v, members, seed, epoch)

    def rule(axis_size: int, in_batched: list[bool], v: Any, members: Any, seed: Any,
             epoch: Any) -> tuple[Any, bool]:
        b_v, b_members, b_seed, b_epoch = in_batched
        if b_v or b_seed or b_epoch or not b_members:
            def one(i: jax.Array) -> jax.Array:
                pick = [a[i] if b else a for a, b in zip((v, members, seed, epoch), in_batched)]
                return f(*pick)
            return lax.map(one, jnp.arange(axis_size)), True
        M = members.shape[-1]
        y = f(v, members.reshape(axis_size * M), seed, epoch)
        return y.reshape(axis_size, M, v.shape[0]), True

    f.def_vmap(rule)
    return f


@functools.lru_cache(maxsize=None)
def forward_int8_fn(perturb: bool, param_id: int, rank: int, noise_reuse: int, antithetic: bool,
                    fixed_point: int, sigma_shift: int) -> Any:
    """f(W, x, members, seed, epoch) -> y int8, the int8 forward with the same
    population-folding vmap rule as the float forwards."""
    attrs = dict(param_id=np.int64(param_id), rank=np.int64(rank),
                 noise_reuse=np.int64(noise_reuse), antithetic=np.bool_(antithetic),
                 fixed_point=np.int64(fixed_point), sigma_shift=np.int64(sigma_shift),
                 perturb=np.bool_(perturb))

    def cpu(x: jax.Array, W: jax.Array, members: jax.Array, seed: jax.Array,
            epoch: jax.Array) -> jax.Array:
        out = jax.ShapeDtypeStruct(x.shape[:-1] + (W.shape[0],), jnp.int8)
        return _call("perturbed_matmul_int8", out, x, W, members, seed, epoch, **attrs)

    def gpu(x: jax.Array, W: jax.Array, members: jax.Array, seed: jax.Array,
            epoch: jax.Array) -> jax.Array:
        return _cuda.forward_int8(x, W, members, seed, epoch, attrs)

    @jax.custom_batching.custom_vmap
    def f(W: jax.Array, x: jax.Array, members: jax.Array, seed: jax.Array,
          epoch: jax.Array) -> jax.Array:
        return per_platform(cpu, gpu, x, W, members, seed, epoch)

    f.def_vmap(_fold_rule(f, 1))
    return f


def int8_update(W: jax.Array, pair_fitness: jax.Array, seed: jax.Array, epoch: jax.Array, *,
                threshold: int, param_id: int, rank: int, noise_reuse: int,
                fixed_point: int) -> jax.Array:
    """W int8 [m, n], pair_fitness int8 [P] -> W' int8 [m, n] (vmap: one call per element)."""
    attrs = dict(threshold=np.int64(threshold), param_id=np.int64(param_id), rank=np.int64(rank),
                 noise_reuse=np.int64(noise_reuse), fixed_point=np.int64(fixed_point))

    def cpu(W: jax.Array, pair_fitness: jax.Array, seed: jax.Array, epoch: jax.Array) -> jax.Array:
        out = jax.ShapeDtypeStruct(W.shape, jnp.int8)
        return _call("int8_update", out, W, pair_fitness, seed, epoch, **attrs)

    def gpu(W: jax.Array, pair_fitness: jax.Array, seed: jax.Array, epoch: jax.Array) -> jax.Array:
        return _cuda.int8_update(W, pair_fitness, seed, epoch, attrs)

    return per_platform(cpu, gpu, W, pair_fitness, seed, epoch)


# ------------------------------------------------------------------------------------------
# the rest (vmap: one call per batch element)
# ------------------------------------------------------------------------------------------

def lowrank_factors(members: jax.Array, seed: jax.Array, epoch: jax.Array, m: int, n: int,
                    **key: Any) -> tuple[jax.Array, jax.Array]:
    M, r = members.shape[0], key["rank"]
    attrs = _key_attrs(**key)

    def cpu(members: jax.Array, seed: jax.Array, epoch: jax.Array) -> tuple[jax.Array, jax.Array]:
        out = (jax.ShapeDtypeStruct((M, m, r), jnp.float32),
               jax.ShapeDtypeStruct((M, n, r), jnp.float32))
        return tuple(_call("lowrank_factors", out, members, seed, epoch, **attrs))

    def gpu(members: jax.Array, seed: jax.Array, epoch: jax.Array) -> tuple[jax.Array, jax.Array]:
        return _cuda.lowrank_factors(members, seed, epoch, m, n, attrs)

    return per_platform(cpu, gpu, members, seed, epoch)


def es_gradient(fitness: jax.Array, members: jax.Array, seed: jax.Array, epoch: jax.Array,
                shape: tuple[int, ...], full_rank: bool, **key: Any) -> jax.Array:
    attrs = _key_attrs(**key)

    def cpu(fitness: jax.Array, members: jax.Array, seed: jax.Array, epoch: jax.Array) -> jax.Array:
        out = jax.ShapeDtypeStruct(shape, jnp.float32)
        return _call("es_gradient", out, fitness, members, seed, epoch,
                     full_rank=np.bool_(full_rank), **attrs)

    chunks: list[tuple[int, int, int]] = []
    if not full_rank and cuda_handlers():
        # Decided now, outside the platform branches (inside them members is always traced).
        host = None if isinstance(members, jax.core.Tracer) else np.asarray(members)
        chunks = _cuda.gradient_chunks(fitness.shape[0], shape[0], shape[1], key["rank"],
                                       key["antithetic"], host)

    def gpu(fitness: jax.Array, members: jax.Array, seed: jax.Array, epoch: jax.Array) -> jax.Array:
        return _cuda.es_gradient(fitness, members, seed, epoch, shape, full_rank, chunks, attrs)

    return per_platform(cpu, gpu, fitness, members, seed, epoch)


def shaping(name: str, f: jax.Array, out_len: int, **attrs: Any) -> jax.Array:
    """The fitness shaping ops: the same operands on every platform (no branch needed)."""
    out = jax.ShapeDtypeStruct((out_len,), jnp.float32)
    return _call(name, out, f, **{k: np.int64(v) for k, v in attrs.items()})


from . import _cuda  # noqa: E402  (the CUDA lowerings call back into _call)
