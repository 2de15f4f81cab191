"""eggroll — EGGROLL evolution strategies (low-rank perturbations regenerated on the fly).

Every op takes arrays of NumPy, PyTorch, JAX or CuPy and answers in the same framework and on
the same device. Semantics: docs/ops.md; noise stream: docs/noise.md.

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

import numbers

from . import _core, _ops
from ._ops import *  # noqa: F401,F403  (the ops: their list is _ops.__all__)

__version__: str = _core.__version__

__all__ = [
    "set_num_threads", "get_num_threads", "get_isa", "set_isa", "best_isa", "isas",
    "__version__", "ES", "cuda_available", "chunk_size", "fitness",
]
__all__ += _ops.__all__


def set_num_threads(n: int) -> None:
    """Threads used by the core (default: EGGROLL_NUM_THREADS, OMP_NUM_THREADS, or all CPUs;
    at most max(64, 8 x the CPUs)). Results are bit-identical for any thread count."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"n: expected an int, got {type(n).__name__}")
    _core.set_num_threads(int(n))


def get_num_threads() -> int:
    return int(_core.num_threads())


def get_isa() -> str:
    """The ISA level in use: 'scalar', 'avx2', 'avx_vnni', 'avx512', 'avx512_vnni' or 'amx'
    (each kernel family runs its widest path at or below it)."""
    return str(_core.isa())


def best_isa() -> str:
    """The widest ISA level this CPU (and OS) supports."""
    return str(_core.best_isa())


def isas() -> list[str]:
    """The ISA levels this CPU (and OS) supports, narrowest first."""
    return list(_core.isas())


def set_isa(name: str) -> None:
    """Cap every kernel family at an ISA level (for tests and benchmarks): every path gives
    identical bits. ValueError for a level this CPU lacks (see isas())."""
    if not isinstance(name, str):
        raise TypeError(f"name: expected an ISA level name such as 'avx2', got "
                        f"{type(name).__name__}")
    _core.set_isa(name)


def cuda_available() -> bool:
    """True when this build has the CUDA kernels (eggroll._cuda) and a GPU is visible.
    Never raises; False on a CPU-only build or a machine without a driver or GPU."""
    try:
        from . import _cuda
    except ImportError:
        return False
    return int(_cuda.device_count()) > 0


from . import fitness  # noqa: E402  (per-member losses for the trainer's outputs)
from ._trainer import chunk_size  # noqa: E402
from .es import ES  # noqa: E402  (the trainer builds on the ops above)
