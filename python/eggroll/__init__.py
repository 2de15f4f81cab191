"""eggroll — EGGROLL evolution strategies (low-rank perturbations regenerated on the fly).

Every op takes arrays of a supported framework and answers in the same framework and on the
same device. Supported now: NumPy (CPU, the C++ core). Semantics: docs/ops.md; noise
stream: docs/noise.md.

Quick start::

    import numpy as np, eggroll
    x = np.random.rand(512, 1024).astype(np.float32)      # one row per member
    W = np.random.rand(256, 1024).astype(np.float32)
    y = eggroll.perturbed_matmul(x, W, members=range(512), epoch=0, seed=42, sigma=0.01)
    fitness = -np.square(y).sum(axis=1)
    g = eggroll.es_gradient(eggroll.centered_rank(fitness), W.shape, epoch=0, seed=42, sigma=0.01)
    W += 0.1 * g                                            # ascend fitness
"""
from __future__ import annotations

from typing import Any

import numpy as np

from . import _core
from . import numpy as _np_adapter

__version__: str = _core.__version__

__all__ = [
    "philox4x32", "normal", "lowrank_factors", "perturbed_matmul", "perturbed_matmul_full",
    "perturb_vector", "perturbed_embedding", "es_gradient", "centered_rank", "zscore", "antithetic_sign",
    "perturbed_matmul_int8", "int8_update",
    "set_num_threads", "get_num_threads", "get_isa", "set_isa", "best_isa", "__version__", "ES",
    "cuda_available",
]


# Framework of an array (the top-level package of its type) -> adapter module of this package.
# Adapters are imported lazily: `import eggroll` never imports torch, jax or cupy.
_ADAPTERS = {"torch": "torch", "jax": "jax", "jaxlib": "jax", "cupy": "cupy", "cupyx": "cupy"}


def _adapter(arr: Any, name: str, op: str | None = None) -> Any:
    """The adapter module for arr's framework (NumPy arrays and array-likes -> NumPy).

    op: the function the caller is about to use; an adapter that lacks it raises TypeError."""
    mod = type(arr).__module__.split(".")[0]
    target = _ADAPTERS.get(mod)
    if target is None:
        return _np_adapter
    import importlib
    try:
        adapter = importlib.import_module(f"{__name__}.{target}")
    except ImportError as e:  # pragma: no cover - depends on the installed frameworks
        raise TypeError(f"{name}: {mod} arrays need eggroll's {target} adapter, which failed "
                        f"to import ({e})") from e
    if op is not None and not hasattr(adapter, op):
        raise TypeError(f"{name}: {op} does not support {mod} arrays yet; pass a NumPy array")
    return adapter


def philox4x32(counter: Any, key: Any) -> Any:
    """Raw Philox4x32-10. counter: uint32 [..., 4]; key: uint32 [2] -> uint32 [..., 4]."""
    return _adapter(counter, "counter", "philox4x32").philox4x32(counter, key)


def normal(count: int, *, seed: int, param_id: int = 0, epoch_index: int = 0,
           noise_index: int = 0, offset: int = 0) -> np.ndarray:
    """float32 [count]: values offset .. offset+count-1 of the stream z(seed, param_id, e, k)."""
    return _np_adapter.normal(count, seed=seed, param_id=param_id, epoch_index=epoch_index,
                              noise_index=noise_index, offset=offset)


def lowrank_factors(shape: tuple[int, int], *, members: Any, epoch: int, seed: int,
                    param_id: int = 0, sigma: float, rank: int = 1, noise_reuse: int = 1,
                    antithetic: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Member factors (A float32 [M, m, r], B float32 [M, n, r]); A is scaled by
    s_i sigma / sqrt(rank), so member i's perturbation is exactly A[i] @ B[i].T."""
    return _np_adapter.lowrank_factors(shape, members=members, epoch=epoch, seed=seed,
                                       param_id=param_id, sigma=sigma, rank=rank,
                                       noise_reuse=noise_reuse, antithetic=antithetic)


def perturbed_matmul(x: Any, W: Any, *, members: Any, epoch: int, seed: int, param_id: int = 0,
                     sigma: float, rank: int = 1, noise_reuse: int = 1, antithetic: bool = True,
                     out: Any = None) -> Any:
    """EGGROLL forward. x: [M, n] or [M, b, n]; W: [m, n] -> [M, m] or [M, b, m].

    y_i = x_i W^T + s_i (sigma / sqrt(rank)) (x_i B_k) A_k^T for each member i in members;
    members=None gives exactly x @ W.T."""
    return _adapter(x, "x", "perturbed_matmul").perturbed_matmul(
        x, W, members=members, epoch=epoch, seed=seed, param_id=param_id, sigma=sigma,
        rank=rank, noise_reuse=noise_reuse, antithetic=antithetic, out=out)


def perturbed_matmul_full(x: Any, W: Any, *, members: Any, epoch: int, seed: int,
                          param_id: int = 0, sigma: float, noise_reuse: int = 1,
                          antithetic: bool = True, out: Any = None) -> Any:
    """Full-rank (OpenES) baseline: y_i = x_i (W + s_i sigma Z_k)^T, streaming Z_k in
    bounded memory. Same shapes and keys as perturbed_matmul."""
    return _adapter(x, "x", "perturbed_matmul_full").perturbed_matmul_full(
        x, W, members=members, epoch=epoch, seed=seed, param_id=param_id, sigma=sigma,
        noise_reuse=noise_reuse, antithetic=antithetic, out=out)


def perturb_vector(v: Any, *, members: Any, epoch: int, seed: int, param_id: int = 0,
                   sigma: float, noise_reuse: int = 1, antithetic: bool = True) -> Any:
    """Full-rank vector perturbation. v: [m] -> [M, m], row i = v + s_i sigma z_k[0:m]."""
    return _adapter(v, "v", "perturb_vector").perturb_vector(v, members=members, epoch=epoch, seed=seed,
                                           param_id=param_id, sigma=sigma,
                                           noise_reuse=noise_reuse, antithetic=antithetic)


def perturbed_embedding(ids: Any, W: Any, *, members: Any, epoch: int, seed: int,
                        param_id: int = 0, sigma: float, rank: int = 1, noise_reuse: int = 1,
                        antithetic: bool = True) -> Any:
    """Low-rank perturbed embedding lookup (docs/ops.md). ids int [M, ...], W [V, d] ->
    [M, ..., d]: row t of member i is row t of W + E_i, with E_i the perturbation
    perturbed_matmul gives a weight W [V, d] (so a tied output projection shares it).
    A broadcast axis 0 of ids (stride 0) is one id array shared by every member."""
    return _adapter(W, "W", "perturbed_embedding").perturbed_embedding(
        ids, W, members=members, epoch=epoch, seed=seed, param_id=param_id, sigma=sigma,
        rank=rank, noise_reuse=noise_reuse, antithetic=antithetic)


def es_gradient(fitness: Any, shape: Any, *, members: Any = None, epoch: int, seed: int,
                param_id: int = 0, sigma: float, rank: int = 1, noise_reuse: int = 1,
                antithetic: bool = True, full_rank: bool = False) -> Any:
    """ES gradient estimate g = (1 / (N sigma)) sum_i f_i E_i: float32 [shape].

    fitness: [N] (already shaped); members defaults to range(N). A 2-D shape is estimated
    low rank (unless full_rank=True), a 1-D shape full rank. g points uphill."""
    return _adapter(fitness, "fitness", "es_gradient").es_gradient(
        fitness, shape, members=members, epoch=epoch, seed=seed, param_id=param_id,
        sigma=sigma, rank=rank, noise_reuse=noise_reuse, antithetic=antithetic,
        full_rank=full_rank)


def centered_rank(f: Any) -> Any:
    """Ranks mapped linearly onto [-0.5, 0.5] (ties share their mean rank): float32 [N]."""
    return _adapter(f, "f", "centered_rank").centered_rank(f)


def zscore(f: Any, group_size: int = 0) -> Any:
    """(f - mean) / sqrt(var + 1e-5): mean per group of group_size (0 = all), var over all."""
    return _adapter(f, "f", "zscore").zscore(f, group_size)


def antithetic_sign(f: Any) -> Any:
    """One value per antithetic pair: sign(f[2k] - f[2k+1]) as float32 [N/2]."""
    return _adapter(f, "f", "antithetic_sign").antithetic_sign(f)


def perturbed_matmul_int8(x: Any, W: Any, *, members: Any, epoch: int, seed: int,
                          param_id: int = 0, rank: int = 1, sigma_shift: int,
                          fixed_point: int = 4, noise_reuse: int = 1, antithetic: bool = True,
                          out: Any = None) -> Any:
    """Integer EGGROLL forward (docs/ops.md "Integer path"). x: int8 [M, n] or [M, b, n];
    W: int8 [m, n] -> int8 [M, m] or [M, b, m]; exact, the same bits on every backend.

    acc = x_i W^T + ((x_i B_k)(s_i A_k)^T >> (fixed_point + sigma_shift)), then
    y_i = clamp(floor(acc / (2**fixed_point * isqrt(n))), -127, 127); members=None drops
    the correction."""
    return _adapter(x, "x", "perturbed_matmul_int8").perturbed_matmul_int8(
        x, W, members=members, epoch=epoch, seed=seed, param_id=param_id, rank=rank,
        sigma_shift=sigma_shift, fixed_point=fixed_point, noise_reuse=noise_reuse,
        antithetic=antithetic, out=out)


def int8_update(W: Any, pair_fitness: Any, *, threshold: int, epoch: int, seed: int,
                param_id: int = 0, rank: int = 1, fixed_point: int = 4,
                noise_reuse: int = 1, out: Any = None) -> Any:
    """Integer ES step: W int8 [m, n] -> int8 [m, n] = clamp(W + [Z >= T] - [Z <= -T],
    -127, 127) with Z = sum_k f_k A_k B_k^T over antithetic pairs k (pair_fitness [P] in
    {-1, 0, 1}, e.g. antithetic_sign(fitness)). out=W updates in place."""
    return _adapter(W, "W", "int8_update").int8_update(
        W, pair_fitness, threshold=threshold, epoch=epoch, seed=seed, param_id=param_id,
        rank=rank, fixed_point=fixed_point, noise_reuse=noise_reuse, out=out)


def set_num_threads(n: int) -> None:
    """Threads used by the core (default: EGGROLL_NUM_THREADS, OMP_NUM_THREADS, or all CPUs).
    Results are bit-identical for any thread count."""
    from ._ops import check_int
    _core.set_num_threads(check_int(n, "n", 1, 4096))


def get_num_threads() -> int:
    return int(_core.num_threads())


def get_isa() -> str:
    """SIMD path of the noise kernel in use: 'avx512', 'avx2' or 'scalar'."""
    return str(_core.isa())


def best_isa() -> str:
    """Widest SIMD path this CPU supports."""
    return str(_core.best_isa())


def set_isa(name: str) -> None:
    """Force a SIMD path (for tests and benchmarks); every path gives identical bits."""
    if not isinstance(name, str):
        raise TypeError(f"name: expected 'scalar', 'avx2' or 'avx512', got {type(name).__name__}")
    _core.set_isa(name)


def cuda_available() -> bool:
    """True when this build has the CUDA kernels (eggroll._cuda) and a GPU is visible.
    Never raises; False on a CPU-only build or a machine without a driver or GPU."""
    try:
        from . import _cuda
    except ImportError:
        return False
    return int(_cuda.device_count()) > 0


from .es import ES  # noqa: E402  (the trainer builds on the ops above)
