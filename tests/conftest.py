"""Shared fixtures and helpers: derived tolerances, member-index forms, backend restoration,
and the `backend` fixture of the conformance suite (tests/conformance/): each test there runs
on every backend present (numpy, torch-cpu, jax-cpu; cupy, torch-cuda, jax-cuda with a GPU,
cupy also under the CUDA emulation of tools/cuda_emu/run.sh) through the public functions."""
from __future__ import annotations

import importlib.util
import os
from typing import Any

import numpy as np
import pytest

import eggroll
from eggroll import reference as ref

ISAS = ("scalar", "avx2", "avx512")


# ------------------------------------------------------------------------------------------
# Derived tolerances (design.md, "One oracle")
# ------------------------------------------------------------------------------------------

FLOOR_ULPS = 4  # "a few" float32 ulps: covers the last roundings of an exact-looking result


def assert_close_derived(actual: Any, ref64: Any, ref32: Any, magnitude: Any = None,
                         what: str = "") -> None:
    """Assert |actual - ref64| <= 2 * max|ref32 - ref64| + a floor of a few float32 ulps.

    ref64 is the reference evaluated in float64 (the "truth"), ref32 the same formula in
    float32: its error is the error a same-precision evaluation makes, and a backend may
    make at most about twice that. The floor is FLOOR_ULPS float32 ulps of max|ref64| or,
    when given, of max(magnitude): the size of the summed terms (the same formula on
    absolute values). Pass it when outputs are few and sums cancel, where max|ref32 - ref64|
    over a handful of elements can be luckily small while the rounding error a float32 sum
    makes is still proportional to the terms it adds, not to their (small) total.
    """
    actual = np.asarray(actual)
    ref64 = np.asarray(ref64, dtype=np.float64)
    ref32 = np.asarray(ref32)
    assert actual.shape == ref64.shape == ref32.shape, (actual.shape, ref64.shape, ref32.shape)
    assert actual.dtype == np.float32, f"{what}: expected float32, got {actual.dtype}"
    assert np.isfinite(actual).all(), f"{what}: non-finite values"
    if actual.size == 0:
        return
    ref_err = float(np.max(np.abs(ref32.astype(np.float64) - ref64)))
    scale = float(np.max(np.abs(ref64)))
    if magnitude is not None:
        scale = max(scale, float(np.max(np.abs(magnitude))))
    floor = FLOOR_ULPS * float(np.spacing(np.float32(scale)))
    tol = 2.0 * ref_err + floor
    diff = np.abs(actual.astype(np.float64) - ref64)
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape)
    assert diff[worst] <= tol, (
        f"{what}: max |actual - ref64| = {diff[worst]:.3e} at {worst} exceeds the derived "
        f"tolerance {tol:.3e} (2 * ref32 error {ref_err:.3e} + floor {floor:.3e}); "
        f"actual {actual[worst]!r}, ref64 {ref64[worst]!r}")


# ------------------------------------------------------------------------------------------
# Magnitudes (the same formulas on absolute values) for the tolerance floor
# ------------------------------------------------------------------------------------------

def _abs_rows3(x: np.ndarray) -> np.ndarray:
    """|x| for x [M, n] or [M, b, n], as float64 [M, b, n] (b = 1 for the 2-D layout)."""
    x = np.abs(np.asarray(x, dtype=np.float64))
    return x if x.ndim == 3 else x[:, None, :]


def stream_rows(count: int, members: Any, *, seed: int, param_id: int = 0, epoch: int,
                noise_reuse: int = 1, antithetic: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(Z float32 [M, count]: the first `count` stream values of each member; s float64 [M])
    from the reference noise (ops.md, "Which noise a member sees")."""
    e = ref.epoch_index(epoch, noise_reuse)
    Z, s = [], []
    for i in (members if isinstance(members, range) else np.asarray(members).tolist()):
        k, sign = ref.member_noise(int(i), antithetic)
        Z.append(ref.normal(count, seed=seed, param_id=param_id, epoch_index=e, noise_index=k))
        s.append(sign)
    return np.array(Z, dtype=np.float32).reshape(len(s), count), np.array(s, dtype=np.float64)


def lowrank_forward_magnitude(x: np.ndarray, W: np.ndarray, A: np.ndarray,
                              B: np.ndarray) -> np.ndarray:
    """|x| @ |W|.T + (|x| @ |B_i|) @ |A_i|.T per member: [M, m] or [M, b, m]."""
    xa = _abs_rows3(x)
    out = xa @ np.abs(np.asarray(W, np.float64)).T
    out = out + (xa @ np.abs(np.asarray(B, np.float64))) @ np.abs(
        np.asarray(A, np.float64)).transpose(0, 2, 1)
    return out.reshape(np.shape(x)[:-1] + (np.shape(W)[0],))


def fullrank_forward_magnitude(x: np.ndarray, W: np.ndarray, E: np.ndarray) -> np.ndarray:
    """|x| @ |W|.T + |x_i| @ |E_i|.T per member (E float [M, m, n])."""
    xa = _abs_rows3(x)
    out = xa @ np.abs(np.asarray(W, np.float64)).T
    out = out + xa @ np.abs(np.asarray(E, np.float64)).transpose(0, 2, 1)
    return out.reshape(np.shape(x)[:-1] + (np.shape(W)[0],))


# ------------------------------------------------------------------------------------------
# JAX: how many custom calls a traced function makes
# ------------------------------------------------------------------------------------------

def ffi_call_count(fn: Any, *args: Any) -> int:
    """Number of ffi_call equations one execution of fn's jaxpr runs, nested jaxprs included.
    A cond runs one branch, so it counts as its largest branch: in CUDA builds every op is a
    platform_dependent cond (CPU / CUDA / default lowering), of which XLA compiles one."""
    def jaxpr_of(closed):
        j = closed.jaxpr
        return j if hasattr(j, "eqns") else j.jaxpr

    def count(jaxpr):
        c = 0
        for eqn in jaxpr.eqns:
            c += eqn.primitive.name == "ffi_call"
            if eqn.primitive.name == "cond":
                c += max(count(jaxpr_of(b)) for b in eqn.params["branches"])
                continue
            for p in eqn.params.values():
                for sub in (p if isinstance(p, (list, tuple)) else (p,)):
                    inner = getattr(sub, "jaxpr", None)
                    if inner is not None:
                        c += count(inner if hasattr(inner, "eqns") else inner.jaxpr)
        return c
    import jax  # the JAX tests only: importing conftest must not need jax
    return count(jax.make_jaxpr(fn)(*args).jaxpr)


# ------------------------------------------------------------------------------------------
# Member index forms: every op must accept a range and any int array, in any order
# ------------------------------------------------------------------------------------------

MEMBER_FORMS = ("range", "shuffled_int32", "permuted_int64")


def make_members(form: str, M: int, rng: np.random.Generator) -> Any:
    """M member indices in one of MEMBER_FORMS.

    range: a contiguous range starting at an odd index (so antithetic pairs straddle it);
    shuffled_int32: M distinct indices drawn from range(3M), shuffled (partners missing);
    permuted_int64: a permutation of range(M)."""
    if form == "range":
        return range(5, 5 + M)
    if form == "shuffled_int32":
        return rng.permutation(3 * M)[:M].astype(np.int32)
    if form == "permuted_int64":
        return rng.permutation(M).astype(np.int64)
    raise ValueError(form)


# ------------------------------------------------------------------------------------------
# Fixtures
# ------------------------------------------------------------------------------------------

def forward_inputs(rng: np.random.Generator, M: int, m: int, n: int, b: Any
                   ) -> tuple[np.ndarray, np.ndarray]:
    """x float32 [M, n] (b None) or [M, b, n] and W float32 [m, n] (entries of order 1 in y)."""
    x = rng.standard_normal((M, n) if b is None else (M, b, n)).astype(np.float32)
    W = (rng.standard_normal((m, n)) / np.sqrt(n)).astype(np.float32)
    return x, W


@pytest.fixture
def rng() -> np.random.Generator:
    """A fixed-seed generator for inputs (x, W, fitness): every run sees the same numbers."""
    return np.random.default_rng(20251116)


@pytest.fixture
def jax_on_cpu():
    """JAX's default device pinned to the CPU (for tests of the CPU FFI handlers, also where
    a CUDA jaxlib would place arrays on a GPU)."""
    import jax
    with jax.default_device(jax.devices("cpu")[0]):
        yield


@pytest.fixture
def restore_threads():
    """Put the core's thread count back the way the test found it."""
    before = eggroll.get_num_threads()
    yield before
    eggroll.set_num_threads(before)


@pytest.fixture
def restore_isa():
    """Put the SIMD path back the way the test found it."""
    before = eggroll.get_isa()
    yield before
    eggroll.set_isa(before)


def supported_isas() -> list[str]:
    """The float SIMD paths (noise, GEMM) this CPU can run: the levels of eggroll.isas()
    among scalar, avx2, avx512 (never assumed from the best one: an AVX-512 CPU may lack a
    level below it, and an AVX2-only one has no avx512)."""
    return [i for i in ISAS if i in eggroll.isas()]


@pytest.fixture(params=ISAS)
def isa_name(request, restore_isa) -> str:
    """Each SIMD path; the ones this CPU lacks are skipped with a reason. The path is NOT
    activated: the test switches between it and the scalar baseline itself."""
    if request.param not in supported_isas():
        pytest.skip(f"this CPU lacks the {request.param} path (best: {eggroll.best_isa()})")
    return request.param


# ------------------------------------------------------------------------------------------
# Backends of the conformance suite
# ------------------------------------------------------------------------------------------

class Backend:
    """name; array(np) -> the backend's array; numpy(result) -> np.ndarray; cpu: whether its
    float forwards must equal the NumPy path bit for bit (the same core GEMM)."""

    def __init__(self, name: str, array: Any, numpy: Any, cpu: bool, empty: Any) -> None:
        self.name, self.array, self._numpy, self.cpu, self._empty = name, array, numpy, cpu, empty

    def numpy(self, a: Any) -> Any:
        if isinstance(a, tuple):
            return tuple(self.numpy(v) for v in a)
        return self._numpy(a)

    def like(self) -> Any:
        """An empty array of the backend (for the shape-only ops' `like`)."""
        return self._empty()

    def index(self, members: Any) -> Any:
        """members in the backend's form: an index array as its array (int32 where the
        framework's default is int32), ranges, lists and None as they are."""
        if not isinstance(members, np.ndarray):
            return members
        if self.name.startswith("jax"):
            members = members.astype(np.int32)
        return self.array(members)

    def __repr__(self) -> str:
        return self.name


def _numpy() -> Backend:
    return Backend("numpy", lambda a: a, np.asarray, True, lambda: np.zeros(0, np.float32))


def _torch(device: str) -> Backend:
    torch = pytest.importorskip("torch")
    if device == "cuda" and not (torch.cuda.is_available() and eggroll.cuda_available()):
        pytest.skip("torch-cuda: needs a GPU and eggroll built with CUDA")
    return Backend(f"torch-{device}", lambda a: torch.from_numpy(np.array(a)).to(device),
                   lambda t: t.detach().cpu().numpy(), device == "cpu",
                   lambda: torch.empty(0, device=device))


def _jax(platform: str) -> Backend:
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp
    try:
        dev = jax.devices(platform)[0]
    except RuntimeError:
        pytest.skip(f"jax-{platform}: no {platform} device visible to JAX")
    return Backend(f"jax-{platform}", lambda a: jax.device_put(np.asarray(a), dev),
                   lambda a: np.asarray(a), platform == "cpu",
                   lambda: jax.device_put(jnp.zeros(0, jnp.float32), dev))


def _cupy() -> Backend:
    if importlib.util.find_spec("cupy") is None:
        pytest.skip("cupy: not installed (pip install cupy-cuda12x)")
    import cupy as cp
    if not (eggroll.cuda_available() or os.environ.get("EGGROLL_CUDA_EMU")):
        pytest.skip("cupy: needs a GPU and eggroll built with CUDA (or the CUDA emulation)")
    return Backend("cupy", cp.asarray, cp.asnumpy, False, lambda: cp.zeros(0, cp.float32))


BACKENDS = {"numpy": _numpy, "torch-cpu": lambda: _torch("cpu"), "jax-cpu": lambda: _jax("cpu"),
            "cupy": _cupy, "torch-cuda": lambda: _torch("cuda"), "jax-cuda": lambda: _jax("gpu")}


@pytest.fixture(params=list(BACKENDS))
def backend(request) -> Backend:
    """Each backend; the ones this machine lacks are skipped with a reason."""
    return BACKENDS[request.param]()


@pytest.fixture(params=["numpy", "torch-cpu", "jax-cpu"])
def cpu_backend(request) -> Backend:
    """The CPU backends (one core: the same bits everywhere)."""
    return BACKENDS[request.param]()


def on(backend: Backend, fn: Any, *arrays: Any, like: bool = False, **kw: Any) -> Any:
    """fn(*arrays, **kw) on a backend: NumPy arrays and index members converted to it, `like`
    set to one of its arrays when asked, the result(s) back as NumPy."""
    args = [backend.array(a) if isinstance(a, np.ndarray) else a for a in arrays]
    if "members" in kw:
        kw["members"] = backend.index(kw["members"])
    if like:
        kw["like"] = backend.like()
    return backend.numpy(fn(*args, **kw))
