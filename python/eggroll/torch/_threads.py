"""Run the core's CPU work for torch tensors on PyTorch's intra-op threads.

torch's CPU ops run on an OpenMP team whose workers spin for a while after every op (libgomp's
default wait policy) before they sleep. eggroll's core has its own small pool; called right
after a torch op, its threads and torch's still-spinning ones share the cores and both slow
down (measured: ``x @ W.T`` then the eggroll op, 1024x1024, P = 512, on 2 cores took ~19 ms
instead of ~13). So the core borrows torch's own team for calls on torch tensors: the OpenMP
runtime torch loaded (libgomp, or libiomp5 which exports the same entry points) is looked up
once, and each call runs its parallel parts as OpenMP regions of ``omp_get_max_threads()``
threads — what ``torch.get_num_threads()`` reports, so ``torch.set_num_threads`` governs
eggroll's ops too. Results are the same bits whoever runs the work (the core's determinism
contract). Falls back to the core's pool when torch's parallel backend is not OpenMP or no
runtime is found, or after ``use_torch_threads(False)``.
"""
from __future__ import annotations

import ctypes
import glob
import os

import torch

from .. import _core


def _find_runtime() -> tuple[int, int]:
    """Addresses of GOMP_parallel and omp_get_max_threads in the OpenMP runtime torch loaded."""
    try:
        info = torch.__config__.parallel_info()
    except Exception:  # pragma: no cover - very old or unusual builds
        return 0, 0
    if "parallel backend: OpenMP" not in info:
        return 0, 0
    libdir = os.path.join(os.path.dirname(torch.__file__), "lib")
    names = sorted(glob.glob(os.path.join(libdir, "lib*omp*.so*")))
    names += ["libgomp.so.1", "libiomp5.so"]     # a system runtime torch linked against
    for name in names:
        try:
            # RTLD_NOLOAD: only a runtime that is already in the process (torch's own), never
            # a second copy with a second thread pool.
            lib = ctypes.CDLL(name, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
            fns = lib.GOMP_parallel, lib.omp_get_max_threads
        except (OSError, AttributeError):
            continue
        return tuple(int(ctypes.cast(f, ctypes.c_void_p).value or 0) for f in fns)  # type: ignore
    return 0, 0


def use_torch_threads(enable: bool = True) -> bool:
    """Whether eggroll's ops on CPU tensors run on torch's intra-op (OpenMP) threads (the
    default when torch's parallel backend is OpenMP) or on eggroll's own pool
    (``eggroll.set_num_threads``). Returns whether torch's threads are now in use."""
    addrs = _find_runtime() if enable else (0, 0)
    _core.set_openmp_runtime(*addrs)
    return bool(addrs[0] and addrs[1])
