"""The eggroll ops, each written once: it picks the backend of its first array and calls that
backend's entry with the positional arguments of the binding (docs/backends.md): the arrays,
members, out, the op's options and the key ``seed, param_id, epoch, noise_reuse, antithetic,
sigma, rank, fixed_point, sigma_shift``.

Backends: NumPy arrays and anything else on the host go straight to ``eggroll._core`` (the
C++ entries parse every argument and allocate the result); torch tensors, CuPy and JAX arrays
to ``eggroll.torch`` / ``eggroll.cupy`` / ``eggroll.jax``, imported the first time such an
array is seen (``import eggroll`` never imports a framework). Every check is in the C++ core:
errors are ValueError / TypeError naming the argument, the same on every backend.
"""
from __future__ import annotations

import functools
import importlib
from typing import Any, Callable

import numpy as np

from . import _core

# The public ops, exported by the eggroll package as they are (`from ._ops import *`): a new
# op is exported by its name here.
__all__ = [
    "philox4x32", "normal", "lowrank_factors", "perturbed_matmul", "perturbed_matmul_full",
    "perturb_vector", "perturbed_embedding", "es_gradient", "centered_rank", "zscore",
    "antithetic_sign", "perturbed_matmul_int8", "int8_update", "set_base_product",
    "get_base_product",
]

# Array type -> backend (an object with the binding's entries); filled as types are met.
_BACKENDS: dict[type, Any] = {}
# Top-level module of an array type -> the adapter that registers its backend.
_ADAPTERS = {"torch": "torch", "jax": "jax", "jaxlib": "jax", "cupy": "cupy", "cupyx": "cupy"}


def backend(a: Any) -> Any:
    """The backend of array a: _core for NumPy and host array-likes, else its adapter's."""
    b = _BACKENDS.get(type(a))
    if b is not None:
        return b
    target = _ADAPTERS.get(type(a).__module__.split(".")[0])
    if target is None:
        b = _core
    else:
        try:
            adapter = importlib.import_module(f"eggroll.{target}")
        except ImportError as e:  # pragma: no cover - depends on the installed frameworks
            raise TypeError(f"{type(a).__module__} arrays need eggroll's {target} adapter, which "
                            f"failed to import ({e})") from e
        b = adapter.BACKEND
    _BACKENDS[type(a)] = b
    return b


def register(b: Any, *types: type) -> None:
    """Arrays of these types go to backend b (an adapter registers its own when imported, so
    that a call traced by torch.compile never has to import it)."""
    _BACKENDS.update(dict.fromkeys(types, b))


# Where the float forwards' base product x W^T comes from (docs/ops.md "The base product").
BASE_PRODUCTS = ("deterministic", "framework")
_base_product = "deterministic"


def set_base_product(mode: str) -> None:
    """The default of the float forwards' `base` option, process-wide: 'deterministic' (the
    core's GEMM: the same bits for any split of the population) or 'framework' (the
    framework's own x @ W.T: its BLAS / MKL / XLA dot, plus eggroll's correction)."""
    global _base_product
    _base_product = _base_mode(mode, "mode")


def get_base_product() -> str:
    """The default base product of the float forwards (set_base_product)."""
    return _base_product


def _base_mode(base: Any, name: str = "base") -> str:
    if base is None and name == "base":
        return _base_product
    if not isinstance(base, str):
        raise TypeError(f"{name}: expected 'deterministic' or 'framework', got {type(base).__name__}")
    if base not in BASE_PRODUCTS:
        raise ValueError(f"{name}: expected 'deterministic' or 'framework', got {base!r}")
    return base


def _forward(name: str, x: Any, W: Any, members: Any, out: Any, shared: bool, base: Any,
             *key: Any) -> Any:
    b = _BACKENDS.get(type(x)) or backend(x)
    if (_base_product if base is None else _base_mode(base)) == "deterministic":
        return getattr(b, name)(x, W, members, out, shared, True, *key)
    y = getattr(b, name)(x, W, members, out, shared, False, *key)   # the correction alone
    if b is _core:
        x, W = np.asarray(x), np.asarray(W)
    y += x @ W.T     # the framework's product (in place where y is mutable: NumPy, torch)
    return y


def perturbed_matmul(x: Any, W: Any, *, members: Any, epoch: Any, seed: Any, param_id: int = 0,
                     sigma: float, rank: int = 1, noise_reuse: int = 1, antithetic: bool = True,
                     out: Any = None, shared: bool = False, base: str | None = None) -> Any:
    """EGGROLL forward: x [M, n] | [M, b, n], W [m, n] -> [M, m] | [M, b, m] (docs/ops.md).

    y_i = x_i W^T + s_i (sigma / sqrt(rank)) (x_i B_k) A_k^T for member i of members (a range,
    an index array or None: exactly x @ W.T). shared=True: x [n] | [b, n] is every member's
    input (the base product computed once; the same bits as the materialised input, as is a
    stride-0 member axis such as numpy.broadcast_to). base: 'deterministic' or 'framework'
    (where x W^T comes from; default get_base_product())."""
    if base is None and _base_product == "deterministic":
        b = _BACKENDS.get(type(x)) or backend(x)
        return b.perturbed_matmul(x, W, members, out, shared, True, seed, param_id, epoch,
                                  noise_reuse, antithetic, sigma, rank, 4, 0)
    return _forward("perturbed_matmul", x, W, members, out, shared, base, seed, param_id,
                    epoch, noise_reuse, antithetic, sigma, rank, 4, 0)


def perturbed_matmul_full(x: Any, W: Any, *, members: Any, epoch: Any, seed: Any,
                          param_id: int = 0, sigma: float, noise_reuse: int = 1,
                          antithetic: bool = True, out: Any = None, shared: bool = False,
                          base: str | None = None) -> Any:
    """Full-rank (OpenES) baseline: y_i = x_i (W + s_i sigma Z_k)^T, Z_k streamed in bounded
    memory. Shapes, members, shared and base as perturbed_matmul."""
    return _forward("perturbed_matmul_full", x, W, members, out, shared, base, seed, param_id,
                    epoch, noise_reuse, antithetic, sigma, 1, 4, 0)


def perturb_vector(v: Any, *, members: Any, epoch: Any, seed: Any, param_id: int = 0,
                   sigma: float, noise_reuse: int = 1, antithetic: bool = True,
                   out: Any = None) -> Any:
    """Full-rank vector perturbation. v [m] -> [M, m], row i = v + s_i sigma z_k[0:m]."""
    b = _BACKENDS.get(type(v)) or backend(v)
    return b.perturb_vector(v, members, out, seed, param_id, epoch, noise_reuse, antithetic,
                            sigma, 1, 4, 0)


def perturbed_embedding(ids: Any, W: Any, *, members: Any, epoch: Any, seed: Any,
                        param_id: int = 0, sigma: float, rank: int = 1, noise_reuse: int = 1,
                        antithetic: bool = True, out: Any = None, shared: bool = False) -> Any:
    """Low-rank perturbed embedding lookup (docs/ops.md "Perturbed embedding"): ids int64 /
    int32 [M, ...], W [V, d] -> float32 [M, ..., d].

    Row t of member i's table is W[t] + s_i (sigma / sqrt(rank)) A_k[t] B_k^T: the perturbation
    perturbed_matmul gives a weight W [V, d] (a tied output projection shares it, and
    es_gradient of shape (V, d) is its update), computed from A_k's looked-up rows only.
    members=None: W[ids]. shared=True: ids [...] is every member's (as is a stride-0 axis 0,
    e.g. numpy.broadcast_to or tensor.expand: read once)."""
    b = _BACKENDS.get(type(ids)) or backend(ids)
    return b.perturbed_embedding(ids, W, members, out, shared, seed, param_id, epoch,
                                 noise_reuse, antithetic, sigma, rank, 4, 0)


def _like(like: Any, members: Any) -> Any:
    """The array whose framework and device the results of a shape-only op take."""
    if like is not None or members is None or isinstance(members, (range, list, tuple)):
        return like
    return members if hasattr(members, "shape") else None


def lowrank_factors(shape: Any, *, members: Any, epoch: Any, seed: Any, param_id: int = 0,
                    sigma: float, rank: int = 1, noise_reuse: int = 1, antithetic: bool = True,
                    like: Any = None) -> Any:
    """Member factors (A float32 [M, m, r], B float32 [M, n, r]); A is scaled by
    s_i sigma / sqrt(rank), so member i's perturbation is exactly A[i] @ B[i].T. They are
    arrays of like's framework and device (default: members' when it is an array, else NumPy)."""
    like = _like(like, members)
    return backend(like).lowrank_factors(like, shape, members, seed, param_id, epoch,
                                         noise_reuse, antithetic, sigma, rank, 4, 0)


def es_gradient(fitness: Any, shape: Any, *, members: Any = None, epoch: Any, seed: Any,
                param_id: int = 0, sigma: float, rank: int = 1, noise_reuse: int = 1,
                antithetic: bool = True, full_rank: bool = False) -> Any:
    """ES gradient estimate g = (1 / (N sigma)) sum_i f_i E_i: float32 [shape].

    fitness: [N] (already shaped); members defaults to range(N). A 2-D shape is estimated
    low rank (unless full_rank=True), a 1-D shape full rank. g points uphill."""
    b = _BACKENDS.get(type(fitness)) or backend(fitness)
    return b.es_gradient(fitness, shape, members, None, full_rank, None, False, seed, param_id,
                         epoch, noise_reuse, antithetic, sigma, rank, 4, 0)


def centered_rank(f: Any) -> Any:
    """Ranks mapped linearly onto [-0.5, 0.5] (ties share their mean rank): float32 [N]."""
    return (_BACKENDS.get(type(f)) or backend(f)).centered_rank(f, None, 0)


def zscore(f: Any, group_size: int = 0) -> Any:
    """(f - mean) / sqrt(var + 1e-5): mean per group of group_size (0 = all), var over all."""
    return (_BACKENDS.get(type(f)) or backend(f)).zscore(f, None, group_size)


def antithetic_sign(f: Any) -> Any:
    """One value per antithetic pair: sign(f[2k] - f[2k+1]) as float32 [N/2]."""
    return (_BACKENDS.get(type(f)) or backend(f)).antithetic_sign(f, None, 0)


def perturbed_matmul_int8(x: Any, W: Any, *, members: Any, epoch: Any, seed: Any,
                          param_id: int = 0, rank: int = 1, sigma_shift: int,
                          fixed_point: int = 4, noise_reuse: int = 1, antithetic: bool = True,
                          out: Any = None, shared: bool = False) -> Any:
    """Integer EGGROLL forward (docs/ops.md "Integer path"): x int8 [M, n] | [M, b, n],
    W int8 [m, n] -> int8 [M, m] | [M, b, m], exact, the same bits on every backend.

    acc = x_i W^T + ((x_i B_k)(s_i A_k)^T >> (fixed_point + sigma_shift)), then
    y_i = clamp(floor(acc / (2**fixed_point * isqrt(n))), -127, 127); members=None drops the
    correction; shared as perturbed_matmul."""
    b = _BACKENDS.get(type(x)) or backend(x)
    return b.perturbed_matmul_int8(x, W, members, out, shared, True, seed, param_id, epoch,
                                   noise_reuse, antithetic, 1.0, rank, fixed_point, sigma_shift)


def int8_update(W: Any, pair_fitness: Any, *, threshold: int, epoch: Any, seed: Any,
                param_id: int = 0, rank: int = 1, fixed_point: int = 4, noise_reuse: int = 1,
                out: Any = None) -> Any:
    """Integer ES step: W int8 [m, n] -> int8 [m, n] = clamp(W + [Z >= T] - [Z <= -T],
    -127, 127) with Z = sum_k f_k A_k B_k^T over antithetic pairs k (pair_fitness [P] in
    {-1, 0, 1}, e.g. antithetic_sign(fitness)). out=W updates in place."""
    b = _BACKENDS.get(type(W)) or backend(W)
    return b.int8_update(W, pair_fitness, out, threshold, seed, param_id, epoch, noise_reuse,
                         True, 1.0, rank, fixed_point, 0)


def normal(count: int, *, seed: int, param_id: int = 0, epoch_index: int = 0,
           noise_index: int = 0, offset: int = 0, like: Any = None) -> Any:
    """float32 [count]: values offset .. offset+count-1 of the stream z(seed, param_id, e, k),
    an array of like's framework and device (default NumPy)."""
    return backend(like).normal(like, count, offset, seed, param_id, epoch_index, noise_index)


def philox4x32(counter: Any, key: Any) -> Any:
    """Raw Philox4x32-10. counter: uint32 [..., 4]; key: uint32 [2] -> uint32 [..., 4]."""
    return (_BACKENDS.get(type(counter)) or backend(counter)).philox4x32(counter, key, None)


def cuda_module() -> Any:
    """eggroll._cuda (the CUDA entries), or RuntimeError when this build has no CUDA."""
    try:
        from . import _cuda
    except ImportError as e:
        raise RuntimeError("eggroll was built without CUDA support (eggroll._cuda is missing: "
                           "reinstall with EGGROLL_CUDA=ON (needs nvcc); see "
                           "docs/backends.md)") from e
    return _cuda


def framework_ops(convert: Callable[[Any], Any], like: Callable[[], Any],
                  native: tuple = ()) -> dict[str, Any]:
    """The ops of one framework's module (eggroll.torch.<op>, eggroll.jax.<op>, ...): the same
    functions, with the first array converted to the framework (convert; arrays whose type is
    in `native` as they are) and the shape-only ops' results made there (like() is an empty
    array of it), so that they always answer in that framework, also for NumPy or list inputs."""
    def first(f: Callable) -> Callable:
        @functools.wraps(f)
        def op(a: Any, *args: Any, **kw: Any) -> Any:
            return f(a if type(a) in native else convert(a), *args, **kw)
        return op

    def shaped(f: Callable) -> Callable:
        @functools.wraps(f)
        def op(*args: Any, like: Any = None, **kw: Any) -> Any:
            return f(*args, like=like0() if like is None else like, **kw)
        return op
    like0 = like
    g = globals()
    return {name: (shaped if name in ("lowrank_factors", "normal") else first)(g[name])
            for name in OPS}


# Every op: name -> (its leading array arguments, the position of `out` in its entry, or None).
# A framework layer that needs the entries' structure (torch's custom ops) reads it here.
OPS = {"perturbed_matmul": (2, 3), "perturbed_matmul_full": (2, 3), "perturb_vector": (1, 2),
       "perturbed_embedding": (2, 3),
       "lowrank_factors": (1, None), "es_gradient": (1, 3), "centered_rank": (1, 1),
       "zscore": (1, 1), "antithetic_sign": (1, 1), "perturbed_matmul_int8": (2, 3),
       "int8_update": (2, 2), "normal": (1, None), "philox4x32": (2, 2)}
