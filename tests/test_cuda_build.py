"""The CUDA build's contract that holds without a GPU: cuda_available() never raises, a
CPU-only build answers a CUDA request with RuntimeError, and eggroll._cuda (when built)
imports without a driver and validates its arguments before touching the device."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import eggroll
from eggroll._ops import cuda_module

try:
    from eggroll import _cuda
except ImportError:
    _cuda = None

# The children import the same eggroll as this process (installed package or the working tree).
REPO_PYTHON = Path(eggroll.__file__).resolve().parents[1]

needs_module = pytest.mark.skipif(_cuda is None, reason="CPU-only build (no eggroll._cuda)")


def test_cuda_available_is_a_bool():
    assert isinstance(eggroll.cuda_available(), bool)
    if _cuda is None:
        assert eggroll.cuda_available() is False


@pytest.mark.skipif(_cuda is not None, reason="this build has eggroll._cuda")
def test_cpu_only_build_raises_runtime_error():
    with pytest.raises(RuntimeError, match="built without CUDA support"):
        cuda_module()


@needs_module
def test_module_imports_and_counts_devices():
    n = _cuda.device_count()
    assert isinstance(n, int) and n >= 0
    assert eggroll.cuda_available() == (n > 0)
    assert cuda_module() is _cuda


KEY = (1, 0, 0, 1, True, 0.1, 1, 4, 0)   # seed .. sigma_shift: the entries' key arguments


@needs_module
def test_entries_reject_cpu_arrays_before_any_cuda_call():
    x = np.zeros((2, 3), np.float32)
    W = np.zeros((4, 3), np.float32)
    with pytest.raises(TypeError, match="^x: expected a CUDA array"):
        _cuda.perturbed_matmul(x, W, range(2), None, False, True, *KEY, 0)
    with pytest.raises(TypeError, match="^f: expected a CUDA array"):
        _cuda.centered_rank(x[0], None, 0, 0)


# Entry validation with fake device pointers (__cuda_array_interface__ over a pointer that
# must never be dereferenced), one child process per case: the entries must raise before
# touching the pointers or the device, and a crash on a GPU machine (it happened once, see
# docs/backends.md "CUDA: known issues") then fails that one case, naming it.
_CHILD_SETUP = """
import faulthandler, json, re, sys
faulthandler.enable()
from eggroll import _cuda
KEY = (1, 0, 0, 1, True, 0.1, 1, 4, 0)

class _dev:
    def __init__(self, shape, typestr="<f4", ptr=0x1000):
        self.__cuda_array_interface__ = dict(shape=tuple(shape), typestr=typestr,
                                             data=(ptr, False), version=3, strides=None)

x, W, mem = _dev((2, 3)), _dev((4, 3), ptr=0x5000), _dev((2,), "<i8", ptr=0x2000)
"""

_CHILD_CALL = """
print("CALLING", flush=True)
try:
    {call}
    res = {{"raised": None}}
except (ValueError, TypeError) as e:
    res = {{"raised": "ValueError" if isinstance(e, ValueError) else "TypeError",
            "message": str(e)}}
except Exception as e:
    res = {{"raised": type(e).__name__, "message": str(e)}}
print("RESULT " + json.dumps(res), flush=True)
"""

VALIDATION_CASES = {
    "out_shape": ("_cuda.perturbed_matmul(x, W, mem, _dev((3, 4), ptr=0x3000), False, True, *KEY, 0)",
                  "ValueError", "^out: expected shape"),
    "W_columns": ("_cuda.perturbed_matmul(x, _dev((4, 5), ptr=0x5000), mem, None, False, True, *KEY, 0)",
                  "ValueError", "^W: expected 3 columns"),
    "x_dtype": ("_cuda.perturbed_matmul_full(_dev((2, 3), '|i1'), W, mem, None, False, True, *KEY, 0)",
                "TypeError", "^x: expected float32, float16 or bfloat16"),
    "members_dtype": ("_cuda.perturbed_matmul(x, W, _dev((2,), '<f4', ptr=0x2000), None, False, "
                      "True, *KEY, 0)", "TypeError", "^members: expected integer indices"),
    "out_overlap": ("_cuda.perturbed_matmul(x, W, mem, _dev((2, 4), ptr=0x1004), False, True, *KEY, 0)",
                    "ValueError", "^out: overlaps the input x"),
    "rank_limit": ("_cuda.perturbed_matmul(x, W, mem, None, False, True, *KEY[:6], 5000, 4, 0, 0)",
                   "ValueError", "^rank: must be in \\[1, 1024\\]"),
    "members_count": ("_cuda.perturbed_matmul(x, W, range(3), None, False, True, *KEY, 0)",
                      "ValueError", "^members: has 3 entries but the leading dimension of x is 2"),
    "antithetic_odd": ("_cuda.antithetic_sign(_dev((3,)), None, 0, 0)",
                       "ValueError", "^f: antithetic_sign needs an even population"),
    "sigma_type": ("_cuda.perturb_vector(_dev((3,)), range(2), None, *KEY[:5], 'a', 1, 4, 0, 0)",
                   "TypeError", "^sigma: expected a float"),
    "gemm_shape": ("_cuda.gemm_nt(_dev((4, 3)), _dev((5, 2), ptr=0x3000), _dev((4, 5), ptr=0x4000), "
                   "stream=0)", "ValueError", "^W: expected shape"),
    "gemm_tn_shape": ("_cuda.gemm_tn(_dev((6, 4)), _dev((5, 3), ptr=0x3000), _dev((4, 3), ptr=0x4000), "
                      "False, stream=0)", "ValueError", "^B: expected shape"),
}


def _run_child(call: str, timeout: float = 180) -> dict:
    code = _CHILD_SETUP + _CHILD_CALL.format(call=call)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_PYTHON), env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"child exited with {proc.returncode} (negative = killed by signal {-proc.returncode}) "
        f"{'inside' if 'CALLING' in proc.stdout else 'before'} the entry call {call!r}; "
        f"stderr tail:\n{proc.stderr[-3000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, f"child printed no result; stdout:\n{proc.stdout[-2000:]}"
    return json.loads(lines[-1][len("RESULT "):])


@needs_module
@pytest.mark.parametrize("case", sorted(VALIDATION_CASES))
def test_entries_validate_shapes_dtypes_devices(case):
    call, exc, pattern = VALIDATION_CASES[case]
    res = _run_child(call)
    assert res["raised"] == exc, res
    assert re.search(pattern, res["message"]), res


# The JAX CUDA handlers: built whenever both the CUDA module and the JAX handlers are (the
# CMake wiring), importable without a GPU or driver, and covering every op of the CPU table.
def _imports(name: str) -> bool:
    try:
        __import__(f"eggroll.{name}")
    except ImportError:
        return False
    return True


@pytest.mark.skipif(_cuda is None or not _imports("_xla_ffi"),
                    reason="needs a build with both CUDA (eggroll._cuda) and the JAX handlers "
                           "(eggroll._xla_ffi)")
def test_jax_cuda_handlers_are_built_and_cover_every_op():
    from eggroll import _xla_ffi, _xla_ffi_cuda   # an ImportError here: CMakeLists.txt lost it
    table = _xla_ffi_cuda.registrations()
    assert list(table) == ["CUDA"]
    cpu = _xla_ffi.registrations()["cpu"]
    missing = set(cpu) - set(table["CUDA"])
    assert not missing, f"ops without a CUDA handler: {sorted(missing)}"
    assert all(type(c).__name__ == "PyCapsule" for c in table["CUDA"].values())
    # and importing it needed no driver: this process may have none (cuda_available False)
    assert isinstance(eggroll.cuda_available(), bool)


# ------------------------------------------------------------------------------------------
# EGGROLL_CUDA=AUTO: nvcc alone does not make a CUDA build
# ------------------------------------------------------------------------------------------

def _gpu_visible() -> bool:
    return any(Path(p).exists() for p in ("/dev/nvidiactl", "/proc/driver/nvidia/gpus",
                                          "/dev/dxg"))


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
@pytest.mark.skipif(_gpu_visible(), reason="a GPU driver is visible: AUTO builds CUDA here")
def test_auto_skips_cuda_without_a_target(tmp_path):
    """Configure only (no compile): with no GPU and no CUDAARCHS, AUTO must not even look for
    nvcc, whether or not one is installed, and says how to ask for CUDA."""
    repo = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items()
           if k not in ("EGGROLL_CUDA", "CUDAARCHS", "CMAKE_CUDA_ARCHITECTURES")}
    proc = subprocess.run(["cmake", "-S", str(repo), "-B", str(tmp_path / "b"),
                           "-DEGGROLL_CUDA=AUTO"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "building CPU-only (EGGROLL_CUDA=ON builds the CUDA kernels)" in proc.stdout
    cache = (tmp_path / "b" / "CMakeCache.txt").read_text()
    assert "CMAKE_CUDA_COMPILER:" not in cache
