"""The backends `eggroll bench` measures: one small class per framework and device that says
whether it can run here, puts NumPy data on its device, and supplies the two baselines a user
of that framework would compare against — its own `x @ W.T` and the idiomatic low-rank ES
forward written in that framework — plus how to make a call finish inside a timed region.

The ops themselves are the public eggroll.* functions, which answer in the framework and on
the device of their inputs. Frameworks are imported only when their backend is asked whether
it is available, so a machine without torch or JAX never imports them.

    backend       inputs            x @ W.T (baseline)     idiom (first rank of the grid)
    numpy/cpu     numpy.ndarray     NumPy's BLAS           np.random factors + np.einsum
    torch/cpu     torch.Tensor      torch.matmul           torch.randn factors + torch.bmm
    jax/cpu       jax.Array, jit    XLA's dot              the official EGGROLL code's way:
                                                           jax.random per member under vmap
    cupy/cuda     cupy.ndarray      cuBLAS                 cupy.random factors + matmul
    torch/cuda    torch.Tensor      cuBLAS                 as torch/cpu, on the GPU
    jax/cuda      jax.Array, jit    XLA's dot (cuBLAS)     as jax/cpu, on the GPU
"""
from __future__ import annotations

import importlib.util
import math
import os
from typing import Any, Callable

import numpy as np

# Every dtype the benchmark grid asks about, in the order the tables list them. A backend
# that lacks one is reported as "not available on this backend" instead of being left out.
ALL_DTYPES = ("float32", "bfloat16", "int8")
NOT_AVAILABLE = "not available on this backend"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _antithetic_sign(P: int) -> np.ndarray:
    """s_i = +1, -1, +1, ... as float32 [P]."""
    return np.tile(np.array([1.0, -1.0], dtype=np.float32), P // 2)


class Backend:
    """One framework on one device. Subclasses set name, device, dtypes and `module` (what
    must be importable) and override what differs from NumPy."""

    name = "?"
    device = "?"
    module = "numpy"
    dtypes: tuple[str, ...] = ("float32",)
    # Candidates whose threads linger after a call (NumPy's BLAS workers spin ~0.1 s): the
    # harness cools down after switching away from them. See bench/README.md.
    lingering: tuple[str, ...] = ()

    def available(self) -> tuple[bool, str]:
        """(usable here, why not when it is not)."""
        return False, "not implemented"

    @property
    def label(self) -> str:
        return f"{self.name}/{self.device}"

    def asarray(self, a: np.ndarray, dtype: str = "float32") -> Any:
        """a (a NumPy array) on this backend's device, as dtype."""
        raise NotImplementedError

    def prepare(self, fn: Callable[..., Any], *args: Any) -> Callable[[], Any]:
        """A callable of no arguments that runs fn(*args) the way a user of this framework
        would (JAX: jitted) and returns once the work is done (with sync())."""
        return lambda: fn(*args)

    def sync(self) -> None:
        """Wait for queued device work (a no-op for synchronous CPU code)."""

    def setup(self, threads: int | None) -> None:
        """Apply --threads to the framework's own pool where it can be changed at run time."""

    def idiom(self, P: int, m: int, n: int, r: int, sigma: float) -> Callable[[Any, Any], Any]:
        """fn(x [P, n], W [m, n]) -> [P, m]: the low-rank ES forward a user of this framework
        writes without eggroll (fresh factors each call, antithetic pairs, rank r)."""
        raise NotImplementedError

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


# ----------------------------------------------------------------------------- NumPy / CuPy

class NumpyCPU(Backend):
    """NumPy arrays on the CPU: the C++ core; its baselines are NumPy's BLAS."""

    name = "numpy"
    device = "cpu"
    lingering = ("inference", "idiom", "gemm")
    ISAS = ("avx512", "avx2", "scalar")   # widest first

    def available(self) -> tuple[bool, str]:
        return True, ""

    def asarray(self, a: np.ndarray, dtype: str = "float32") -> np.ndarray:
        if dtype not in self.dtypes:
            raise TypeError(f"dtype: {dtype} is {NOT_AVAILABLE} ({self.label})")
        return np.ascontiguousarray(a, dtype=np.float32)

    def xp(self) -> Any:
        return np

    def idiom(self, P: int, m: int, n: int, r: int, sigma: float) -> Callable[[Any, Any], Any]:
        xp = self.xp()
        scale_sign = xp.asarray(_antithetic_sign(P) * np.float32(sigma / math.sqrt(r)))
        rng = xp.random.default_rng(1)

        def fn(x: Any, W: Any) -> Any:
            A = rng.standard_normal((P // 2, m, r), dtype=xp.float32)       # [P/2, m, r]
            B = rng.standard_normal((P // 2, n, r), dtype=xp.float32)       # [P/2, n, r]
            A = xp.repeat(A, 2, axis=0) * scale_sign[:, None, None]         # [P, m, r]
            B = xp.repeat(B, 2, axis=0)                                     # [P, n, r]
            xb = xp.einsum("pn,pnr->pr", x, B)                              # [P, r]
            return x @ W.T + xp.einsum("pr,pmr->pm", xb, A)
        return fn

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


class CupyCUDA(NumpyCPU):
    """CuPy arrays on the current GPU: eggroll's CUDA kernels; baselines are cuBLAS."""

    name = "cupy"
    device = "cuda"
    module = "cupy"
    lingering = ()

    def available(self) -> tuple[bool, str]:
        if not _installed("cupy"):
            return False, "cupy is not installed (pip install cupy-cuda12x)"
        import eggroll
        if not eggroll.cuda_available():
            return False, "no GPU, or eggroll was built without CUDA"
        return True, ""

    def xp(self) -> Any:
        import cupy
        return cupy

    def asarray(self, a: np.ndarray, dtype: str = "float32") -> Any:
        if dtype not in self.dtypes:
            raise TypeError(f"dtype: {dtype} is {NOT_AVAILABLE} ({self.label})")
        import cupy
        return cupy.asarray(np.ascontiguousarray(a, dtype=np.float32))

    def sync(self) -> None:
        import cupy
        cupy.cuda.get_current_stream().synchronize()

    def isa_paths(self) -> list[str]:
        return []


# ----------------------------------------------------------------------------- PyTorch

class TorchBackend(Backend):
    """torch tensors: eggroll's custom ops (CPU: the core on torch's threads; CUDA: the
    kernels on torch's current stream); baselines are torch's own matmul."""

    name = "torch"
    module = "torch"

    def __init__(self, device: str) -> None:
        self.device = device

    def available(self) -> tuple[bool, str]:
        if not _installed("torch"):
            return False, "torch is not installed (pip install torch)"
        if self.device == "cuda":
            import torch

            import eggroll
            if not torch.cuda.is_available():
                return False, "torch sees no GPU"
            if not eggroll.cuda_available():
                return False, "eggroll was built without CUDA"
        return True, ""

    def asarray(self, a: np.ndarray, dtype: str = "float32") -> Any:
        if dtype not in self.dtypes:
            raise TypeError(f"dtype: {dtype} is {NOT_AVAILABLE} ({self.label})")
        import torch
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(self.device)

    def prepare(self, fn: Callable[..., Any], *args: Any) -> Callable[[], Any]:
        import torch

        def call() -> Any:
            with torch.no_grad():
                return fn(*args)
        return call

    def sync(self) -> None:
        if self.device == "cuda":
            import torch
            torch.cuda.synchronize()

    def setup(self, threads: int | None) -> None:
        if threads is not None:
            import torch
            torch.set_num_threads(threads)

    def idiom(self, P: int, m: int, n: int, r: int, sigma: float) -> Callable[[Any, Any], Any]:
        import torch
        dev = self.device
        scale_sign = torch.from_numpy(_antithetic_sign(P) * np.float32(sigma / math.sqrt(r))
                                      ).to(dev)
        gen = torch.Generator(device=dev).manual_seed(1)

        def fn(x: Any, W: Any) -> Any:
            A = torch.randn(P // 2, m, r, generator=gen, device=dev)           # [P/2, m, r]
            B = torch.randn(P // 2, n, r, generator=gen, device=dev)           # [P/2, n, r]
            A = A.repeat_interleave(2, dim=0) * scale_sign[:, None, None]      # [P, m, r]
            B = B.repeat_interleave(2, dim=0)                                  # [P, n, r]
            corr = torch.bmm(torch.bmm(x[:, None, :], B), A.transpose(1, 2))  # [P, 1, m]
            return x @ W.T + corr[:, 0, :]
        return fn


# ----------------------------------------------------------------------------- JAX

class JaxBackend(Backend):
    """jax.Arrays, every candidate jitted (the JAX habit): eggroll's XLA FFI handlers;
    baselines are XLA's dot and the official EGGROLL code's idiom."""

    name = "jax"
    module = "jax"

    def __init__(self, device: str) -> None:
        self.device = device

    def _device(self) -> Any:
        import jax
        return jax.devices("cpu" if self.device == "cpu" else "gpu")[0]

    def available(self) -> tuple[bool, str]:
        if not _installed("jax"):
            return False, "jax is not installed (pip install jax)"
        ffi = "eggroll._xla_ffi" + ("" if self.device == "cpu" else "_cuda")
        if not _installed(ffi):
            return False, (f"this eggroll was built without {ffi} (the JAX FFI handlers: "
                           "rebuild with jaxlib installed, docs/jax.md)")
        if self.device == "cuda":
            import jax
            try:
                jax.devices("gpu")
            except RuntimeError:
                return False, "JAX sees no GPU"
        return True, ""

    def asarray(self, a: np.ndarray, dtype: str = "float32") -> Any:
        if dtype not in self.dtypes:
            raise TypeError(f"dtype: {dtype} is {NOT_AVAILABLE} ({self.label})")
        import jax
        import eggroll.jax  # noqa: F401  (registers the FFI handlers)
        return jax.device_put(np.ascontiguousarray(a, dtype=np.float32), self._device())

    def prepare(self, fn: Callable[..., Any], *args: Any) -> Callable[[], Any]:
        import jax
        jitted = jax.jit(fn)
        return lambda: jax.block_until_ready(jitted(*args))

    def idiom(self, P: int, m: int, n: int, r: int, sigma: float) -> Callable[[Any, Any], Any]:
        import jax
        import jax.numpy as jnp
        base_key = jax.random.key(1)
        scale = sigma / math.sqrt(r)
        members = jnp.arange(P)

        def member(x_i: Any, i: Any, W: Any) -> Any:
            # The official code's per-member noise: one jax.random draw per antithetic pair,
            # the forward of one member, vmapped over the population.
            z = jax.random.normal(jax.random.fold_in(base_key, i // 2), (m + n, r),
                                  dtype=jnp.float32)
            A, B = z[n:], z[:n]                                              # [m, r], [n, r]
            s = jnp.where(i % 2 == 0, 1.0, -1.0).astype(jnp.float32)
            return x_i @ W.T + (s * scale) * ((x_i @ B) @ A.T)

        pop = jax.vmap(member, in_axes=(0, 0, None))
        return lambda x, W: pop(x, members, W)


# Every backend `eggroll bench` knows, in the order it measures them; available() keeps a
# machine without one from trying it.
BACKENDS: list[Backend] = [NumpyCPU(), TorchBackend("cpu"), JaxBackend("cpu"), CupyCUDA(),
                           TorchBackend("cuda"), JaxBackend("cuda")]


def select(names: list[str] | None = None) -> list[Backend]:
    """The registered backends named (by name, e.g. torch, or name/device), or all."""
    if not names:
        return list(BACKENDS)
    known = {b.name for b in BACKENDS} | {b.label for b in BACKENDS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"--backend: unknown {unknown}; known: {sorted(known)}")
    return [b for b in BACKENDS if b.name in names or b.label in names]


def available_backends(names: list[str] | None = None) -> list[Backend]:
    """The registered backends usable here (only those named, when names is given)."""
    return [b for b in select(names) if b.available()[0]]
