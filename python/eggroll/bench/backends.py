"""The backends `eggroll bench` measures: each is a small object that says whether it can run
here and how to put a NumPy array on its device, so a CuPy, PyTorch or JAX entry is one class
and one line in BACKENDS.

The ops themselves are the public eggroll.* functions, which answer in the framework and on
the device of their inputs; a backend only supplies inputs, the plain-inference baseline
(`x @ W.T` in its own framework) and a sync that makes queued device work finish inside a
timed region.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

# Every dtype the benchmark grid asks about, in the order the tables list them. A backend
# that lacks one is reported as "not available on this backend" instead of being left out.
ALL_DTYPES = ("float32", "bfloat16", "int8")
NOT_AVAILABLE = "not available on this backend"


class Backend:
    """One framework on one device. Subclasses set name, device and dtypes and override
    available(), asarray() and sync() as needed."""

    name = "?"
    device = "?"
    dtypes: tuple[str, ...] = ()

    def available(self) -> tuple[bool, str]:
        """(usable here, why not when it is not)."""
        return False, "not implemented"

    def asarray(self, a: np.ndarray, dtype: str = "float32") -> Any:
        """a (a NumPy array) on this backend's device, as dtype."""
        raise NotImplementedError

    def sync(self) -> None:
        """Wait for queued work (a no-op for synchronous CPU code)."""

    def matmul_t(self, x: Any, W: Any) -> Any:
        """Plain inference, the forward's baseline: x [M, n] @ W[m, n].T -> [M, m]."""
        return x @ W.T

    def matmul(self, a: Any, b: Any) -> Any:
        """a [m, k] @ b [k, n] -> [m, n]: the update's same-shape GEMM baseline."""
        return a @ b

    def normal(self, count: int, seed: int) -> Any:
        """eggroll's noise stream on this backend: float32 [count]."""
        raise NotImplementedError

    def isa_paths(self) -> list[str]:
        """The core's SIMD paths to sweep in the noise benchmark ([] where it has none)."""
        return []

    def thread_counts(self, requested: int | None) -> list[int]:
        """Thread counts to sweep in the noise benchmark."""
        return []

    def describe(self) -> dict[str, Any]:
        ok, why = self.available()
        return {"backend": self.name, "device": self.device, "available": ok,
                "why_not": None if ok else why, "dtypes": list(self.dtypes)}


class NumpyCPU(Backend):
    """NumPy arrays on the CPU: the C++ core; its baseline GEMMs are NumPy's BLAS."""

    name = "numpy"
    device = "cpu"
    dtypes = ("float32",)
    ISAS = ("avx512", "avx2", "scalar")   # widest first

    def available(self) -> tuple[bool, str]:
        return True, ""

    def asarray(self, a: np.ndarray, dtype: str = "float32") -> np.ndarray:
        if dtype not in self.dtypes:
            raise TypeError(f"dtype: {dtype} is {NOT_AVAILABLE} ({self.name}/{self.device})")
        return np.ascontiguousarray(a, dtype=np.float32)

    def normal(self, count: int, seed: int) -> np.ndarray:
        import eggroll
        return eggroll.normal(count, seed=seed)

    def isa_paths(self) -> list[str]:
        import eggroll
        return [i for i in self.ISAS if i in eggroll.isas()]

    def thread_counts(self, requested: int | None) -> list[int]:
        ncpu = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                else os.cpu_count()) or 1
        ts = {1, ncpu}
        if requested:
            ts.add(requested)
        return sorted(ts)


# Later entries (CuPy, PyTorch, JAX on CUDA) are appended here; available() keeps a machine
# without them from trying.
BACKENDS: list[Backend] = [NumpyCPU()]


def available_backends(names: list[str] | None = None) -> list[Backend]:
    """The registered backends usable here (only those named, when names is given)."""
    out = []
    for b in BACKENDS:
        if names and b.name not in names and f"{b.name}/{b.device}" not in names:
            continue
        if b.available()[0]:
            out.append(b)
    return out
