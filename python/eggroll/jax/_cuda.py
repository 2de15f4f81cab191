"""The CUDA lowering of each eggroll.jax op: what runs when the arrays live on an NVIDIA GPU
(the handlers of eggroll._xla_ffi_cuda, registered for platform "CUDA" under the CPU ops'
target names). ``_ffi.per_platform`` picks these with ``jax.lax.platform_dependent``, so one
traced program holds both lowerings and XLA compiles the one of the device it runs on.

Why the operands differ from the CPU handlers':
- The CUDA backend has no cuBLAS of its own. The base product ``x @ W.T`` is XLA's dot
  (cuBLAS), at ``Precision.HIGHEST`` (true float32: JAX's default on GPUs is TF32, whose
  10-bit mantissa would be far outside the tolerance the CPU path meets), and the
  ``perturbed_matmul`` / ``perturbed_matmul_full`` handlers add the per-member correction
  onto it in place (``input_output_aliases={1: 0}``). The low-rank ``es_gradient`` is the
  ``es_gradient_factors`` handler plus one dot ``Af.T @ Bf``, in member chunks of bounded
  factor memory, as the CuPy adapter does.
- The launchers take the noise key on the host, but ``seed``, ``epoch`` and ``members`` are
  traced device values (one compilation for every epoch). They travel as ONE uint32 operand,
  ``key_words``, which each handler copies to the host (one small device-to-host copy and a
  stream synchronisation per call) and validates like the CPU core; the kernels read the
  member words in place as int64.
Everything here assumes the arguments were validated by eggroll.jax (trace-time checks).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import _ffi

# Factor memory per es_gradient chunk (the CuPy adapter and the CPU core use the same bound).
FACTOR_BYTES = 64 << 20
_HIGHEST = lax.Precision.HIGHEST


def _int64_words(a: jax.Array) -> jax.Array:
    """An int32 / uint32 / int64 array [...] as uint32 [..., 2]: the (low, high) words of its
    values as int64, i.e. the bytes of an int64 array on a little-endian device. int32 is
    sign-extended, so a negative value stays negative for the handler's checks."""
    if a.dtype == jnp.uint32:
        lo, hi = a, jnp.zeros_like(a)
    elif a.dtype == jnp.int32:
        lo = lax.bitcast_convert_type(a, jnp.uint32)
        hi = lax.bitcast_convert_type(a >> 31, jnp.uint32)      # arithmetic shift: 0 or ~0
    elif a.dtype == jnp.int64:
        lo = (a & 0xFFFFFFFF).astype(jnp.uint32)
        hi = ((a >> 32) & 0xFFFFFFFF).astype(jnp.uint32)
    else:  # pragma: no cover - eggroll.jax converts members / epoch to these
        raise TypeError(f"expected int32, uint32 or int64, got {a.dtype}")
    return jnp.stack([lo, hi], axis=-1)


def key_words(seed: jax.Array, epoch: jax.Array, members: jax.Array | None = None) -> jax.Array:
    """uint32 [4 + 2M] = seed (low, high), epoch (low, high), then each member's int64 words.

    seed: uint32 [2]; epoch: an int32 / uint32 / int64 scalar; members: int32 / int64 [M]."""
    parts = [seed.astype(jnp.uint32).reshape(2), _int64_words(epoch).reshape(2)]
    if members is not None:
        parts.append(_int64_words(members).reshape(-1))
    return jnp.concatenate(parts)


def _matmul_nt(x: jax.Array, W: jax.Array) -> jax.Array:
    """x [M, n] | [M, b, n] @ W [m, n].T -> float32 [M, (b,) m], true float32 (no TF32)."""
    return lax.dot_general(x, W, (((x.ndim - 1,), (1,)), ((), ())), precision=_HIGHEST,
                           preferred_element_type=jnp.float32)


# ------------------------------------------------------------------------------------------
# forwards
# ------------------------------------------------------------------------------------------

def forward(x: jax.Array, W: jax.Array, members: jax.Array, seed: jax.Array, epoch: jax.Array,
            *, full: bool, perturb: bool, attrs: dict[str, Any]) -> jax.Array:
    """y float32 [M, (b,) m] = XLA's x @ W.T, then the correction added in place."""
    base = _matmul_nt(x, W)
    if not perturb:
        return base   # members=None: exactly the product, no custom call at all
    out = jax.ShapeDtypeStruct(base.shape, jnp.float32)
    return _ffi._call("perturbed_matmul_full" if full else "perturbed_matmul", out, x, base,
                      key_words(seed, epoch, members), aliases={1: 0}, **attrs)


def perturb_vector(v: jax.Array, members: jax.Array, seed: jax.Array, epoch: jax.Array,
                   attrs: dict[str, Any]) -> jax.Array:
    out = jax.ShapeDtypeStruct((members.shape[0], v.shape[0]), jnp.float32)
    return _ffi._call("perturb_vector", out, v, key_words(seed, epoch, members), **attrs)


def lowrank_factors(members: jax.Array, seed: jax.Array, epoch: jax.Array, m: int, n: int,
                    attrs: dict[str, Any]) -> tuple[jax.Array, jax.Array]:
    M, r = members.shape[0], int(attrs["rank"])
    out = (jax.ShapeDtypeStruct((M, m, r), jnp.float32), jax.ShapeDtypeStruct((M, n, r), jnp.float32))
    return tuple(_ffi._call("lowrank_factors", out, key_words(seed, epoch, members), **attrs))


# ------------------------------------------------------------------------------------------
# es_gradient
# ------------------------------------------------------------------------------------------

def gradient_chunks(N: int, m: int, n: int, rank: int, antithetic: bool,
                    host_members: np.ndarray | None) -> list[tuple[int, int, int]]:
    """Static (c0, c1, C) per member chunk of the low-rank estimate: factor memory bounded
    by FACTOR_BYTES (even-sized chunks keep antithetic pairs together), C = the chunk's exact
    es_gradient_columns when the members are known at trace time, else its bound
    (c1 - c0) * rank (the handler zeroes the rows it does not need)."""
    from .. import _core
    from ..numpy import view as host_view
    step = max(2, (FACTOR_BYTES // (4 * (m + n) * rank)) & ~1)
    chunks = []
    for c0 in range(0, N, step):
        c1 = min(N, c0 + step)
        if host_members is None:
            C = (c1 - c0) * rank
        else:
            C = int(_core.es_gradient_columns(
                host_view(np.ascontiguousarray(host_members[c0:c1], dtype=np.int64)),
                antithetic, rank))
        chunks.append((c0, c1, C))
    return chunks


def es_gradient(f: jax.Array, members: jax.Array, seed: jax.Array, epoch: jax.Array,
                shape: tuple[int, ...], full_rank: bool, chunks: list[tuple[int, int, int]],
                attrs: dict[str, Any]) -> jax.Array:
    """g float32 [shape] for fitness f [N]: the streamed full-rank / vector estimate, or the
    low-rank one as sum over chunks of Af.T @ Bf (XLA's dot, true float32)."""
    N = f.shape[0]
    attrs = dict(attrs, population=np.int64(N))
    if full_rank:
        out = jax.ShapeDtypeStruct(shape, jnp.float32)
        return _ffi._call("es_gradient", out, f, key_words(seed, epoch, members), **attrs)
    m, n = shape
    g = None
    for c0, c1, C in chunks:
        out = (jax.ShapeDtypeStruct((C, m), jnp.float32), jax.ShapeDtypeStruct((C, n), jnp.float32))
        Af, Bf = _ffi._call("es_gradient_factors", out, f[c0:c1],
                            key_words(seed, epoch, members[c0:c1]), **attrs)
        part = lax.dot_general(Af, Bf, (((0,), (0,)), ((), ())), precision=_HIGHEST,
                               preferred_element_type=jnp.float32)
        g = part if g is None else g + part
    return g


# ------------------------------------------------------------------------------------------
# integer path (the CUDA backend's own dp4a GEMM: no framework product needed)
# ------------------------------------------------------------------------------------------

def forward_int8(x: jax.Array, W: jax.Array, members: jax.Array, seed: jax.Array,
                 epoch: jax.Array, attrs: dict[str, Any]) -> jax.Array:
    out = jax.ShapeDtypeStruct(x.shape[:-1] + (W.shape[0],), jnp.int8)
    key = key_words(seed, epoch, members if bool(attrs["perturb"]) else None)
    return _ffi._call("perturbed_matmul_int8", out, x, W, key, **attrs)


def int8_update(W: jax.Array, pair_fitness: jax.Array, seed: jax.Array, epoch: jax.Array,
                attrs: dict[str, Any]) -> jax.Array:
    out = jax.ShapeDtypeStruct(W.shape, jnp.int8)
    return _ffi._call("int8_update", out, W, pair_fitness, key_words(seed, epoch), **attrs)
