"""CuPy: every op on CuPy arrays, computed on the GPU by eggroll._cuda.

The ops are the top-level functions (``eggroll.perturbed_matmul(cupy_array, ...)``). Outputs
are allocated by CuPy on the inputs' device and every kernel goes to CuPy's current stream of
that device, so calls compose with user streams and CUDA graph capture. The base products
(x @ W.T, Af.T @ Bf) are ``cupy.matmul`` (cuBLAS); while the current stream captures a graph
they are eggroll's own tiled GEMMs (CuPy refuses to call cuBLAS during capture: ``_gemm``
answers NotImplemented, docs/backends.md). Device values (index members, fitness,
pair_fitness, a device epoch) are checked by the kernels, never on the host (docs/backends.md
"Values on the device"). x / W / out may be float16 (kept, float32 accumulation).
"""
from __future__ import annotations

from typing import Any

import cupy as cp

from . import _ops
from ._ops import cuda_module

__all__ = list(_ops.OPS)

_cuda = cuda_module()


def _stream() -> int:
    return int(cp.cuda.get_current_stream().ptr)


def _capturing() -> bool:
    s = cp.cuda.get_current_stream()
    return bool(s.is_capturing() if hasattr(s, "is_capturing") else cp.cuda.runtime.streamIsCapturing(s.ptr))


def _gemm(a: Any, b: Any, out: Any, kind: str) -> Any:
    """The ops' dense products on CuPy's current stream (cuBLAS), or NotImplemented (eggroll's
    own kernels) while it captures a graph."""
    if _capturing():
        return NotImplemented
    if kind == "nt":      # out [..., m] = a [..., n] b [m, n]^T
        cp.matmul(a.reshape(-1, a.shape[-1]), b.T, out=out.reshape(-1, b.shape[0]))
    elif kind == "tn":    # out = a^T b
        cp.matmul(a.T, b, out=out)
    else:                 # out += a^T b
        out += cp.matmul(a.T, b)
    return None


def _empty(shape: tuple, dtype: str, like: Any) -> Any:
    with like.device if like is not None and hasattr(like, "device") else cp.cuda.Device():
        return cp.empty(shape, dtype=dtype)


_cuda.register_framework(cp.ndarray, None, _empty, lambda a, dt: a.astype(dt), _gemm, False,
                         cp.from_dlpack)


class Backend:
    """The entries for CuPy arrays (eggroll._ops.backend): _cuda's, on the current stream."""

    def __getattr__(self, name: str) -> Any:
        entry = getattr(_cuda, name)

        def call(*args: Any) -> Any:
            return entry(*args, _stream())
        setattr(self, name, call)
        return call


BACKEND = Backend()
globals().update(_ops.framework_ops(
    lambda a: a if isinstance(a, (cp.ndarray, range)) or a is None else cp.asarray(a),
    lambda: cp.empty(0, cp.float32)))
