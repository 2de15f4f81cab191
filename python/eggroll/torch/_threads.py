"""Run the core's CPU work on PyTorch's intra-op threads.

torch's CPU ops run on an OpenMP team whose workers spin for a while after every op (libgomp's
default wait policy) before they sleep. eggroll's core has its own small pool; called right
after a torch op, its threads and torch's still-spinning ones share the cores and both slow
down (measured: ``x @ W.T`` then the eggroll op, 1024x1024, P = 512, on 2 cores took ~19 ms
instead of ~13). So the torch kernels lend the core torch's own team instead: the OpenMP
runtime torch loaded (libgomp, or libiomp5 which exports the same ``GOMP_parallel`` entry
point) is looked up once, and each eggroll op on CPU tensors runs its parallel parts as OpenMP
regions of ``torch.get_num_threads()`` threads — the same threads and thread count torch's own
ops use, so ``torch.set_num_threads`` governs eggroll's ops too. Results are the same bits
whoever runs the work (the core's determinism contract).

Falls back to the core's pool when torch's parallel backend is not OpenMP or no runtime is
found, or after ``use_torch_threads(False)``.
"""
from __future__ import annotations

import ctypes
import glob
import os
from typing import Any, Optional

import torch

from .. import _core

_enabled: Optional[bool] = None   # None: not looked up yet


def _find_gomp_parallel() -> int:
    """The address of GOMP_parallel in the OpenMP runtime torch loaded, or 0."""
    try:
        info = torch.__config__.parallel_info()
    except Exception:  # pragma: no cover - very old or unusual builds
        return 0
    if "parallel backend: OpenMP" not in info:
        return 0
    libdir = os.path.join(os.path.dirname(torch.__file__), "lib")
    names = sorted(glob.glob(os.path.join(libdir, "lib*omp*.so*")))
    names += ["libgomp.so.1", "libiomp5.so"]     # a system runtime torch linked against
    for name in names:
        try:
            # RTLD_NOLOAD: only a runtime that is already in the process (torch's own), never
            # a second copy with a second thread pool.
            lib = ctypes.CDLL(name, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
            fn = lib.GOMP_parallel
        except (OSError, AttributeError):
            continue
        return int(ctypes.cast(fn, ctypes.c_void_p).value or 0)
    return 0


def use_torch_threads(enable: bool = True) -> bool:
    """Whether eggroll's ops on CPU tensors run on torch's intra-op (OpenMP) threads (the
    default when torch's parallel backend is OpenMP) or on eggroll's own pool
    (``eggroll.set_num_threads``). Returns whether torch's threads are now in use."""
    global _enabled
    addr = _find_gomp_parallel() if enable else 0
    _core.set_openmp_runtime(addr)
    _enabled = bool(addr)
    return _enabled


class _OnTorchThreads:
    """``with on_torch_threads:`` — the core calls inside run on torch's threads."""
    __slots__ = ("prev",)

    def __enter__(self) -> None:
        if _enabled is None:
            use_torch_threads(True)
        self.prev = _core.set_host_threads(torch.get_num_threads() if _enabled else 0)

    def __exit__(self, *exc: Any) -> None:
        _core.set_host_threads(self.prev)


def on_torch_threads() -> _OnTorchThreads:
    return _OnTorchThreads()
