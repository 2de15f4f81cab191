"""The C++ package end to end: install the core as a CMake package, build examples/cpp against
it with find_package(eggroll), run it, and hold its numbers to the Python package bit for bit.

The core is deterministic (one fixed rounding sequence per output element on every SIMD path
and thread count), and the Python package calls the same core functions, so the program's
noise, forward pass, fitness shaping and gradient must equal eggroll's exactly.
Skipped when cmake or a C++ compiler is missing, unless EGGROLL_REQUIRE_CPP_EXAMPLE=1 (CI
sets it, so a missing toolchain there is a failure rather than a silent skip).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import eggroll
from eggroll import reference as ref

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "cpp"
# The whole chain (core ~15 s on 2 cores, example ~2 s) must finish within this; a hung or
# runaway build fails with the step's output instead of stalling the suite.
BUILD_TIMEOUT_S = 60.0
CONFIG = "Release"


def _missing_toolchain() -> str | None:
    if shutil.which("cmake") is None:
        return "cmake not found on PATH"
    cxx = os.environ.get("CXX")
    if cxx and shutil.which(cxx.split()[0]) is None:
        return f"the C++ compiler named by CXX ({cxx}) was not found"
    if not cxx and not any(shutil.which(c) for c in ("c++", "g++", "clang++", "cl")):
        return "no C++ compiler (c++, g++, clang++ or cl) on PATH"
    return None


def _run(cmd: list[str], deadline: float, what: str) -> str:
    left = deadline - time.monotonic()
    if left <= 0:
        pytest.fail(f"C++ example: out of the {BUILD_TIMEOUT_S:.0f} s budget before {what}")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=left)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"C++ example: {what} exceeded the {BUILD_TIMEOUT_S:.0f} s budget "
                    f"({' '.join(cmd)})\n{(e.stdout or '')[-2000:]}")
    if proc.returncode != 0:
        pytest.fail(f"C++ example: {what} failed with status {proc.returncode} "
                    f"({' '.join(cmd)})\nstdout:\n{proc.stdout[-4000:]}\n"
                    f"stderr:\n{proc.stderr[-4000:]}")
    return proc.stdout


def _find_exe(build: Path) -> Path:
    # Single-config generators put it in build/, multi-config ones (Visual Studio) in build/Release.
    name = "eggroll_example" + (".exe" if sys.platform == "win32" else "")
    for p in (build / name, build / CONFIG / name):
        if p.is_file():
            return p
    pytest.fail(f"C++ example: built, but {name} is not in {build}")


@pytest.fixture(scope="session")
def cpp_example(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The example's JSON output, built once per session against a fresh install."""
    reason = _missing_toolchain()
    if reason is not None:
        if os.environ.get("EGGROLL_REQUIRE_CPP_EXAMPLE") == "1":
            pytest.fail(f"EGGROLL_REQUIRE_CPP_EXAMPLE=1 but {reason}")
        pytest.skip(f"C++ example not built: {reason}")
    tmp = tmp_path_factory.mktemp("cpp_example")
    build, prefix, ex_build = tmp / "build", tmp / "prefix", tmp / "example"
    jobs = str(max(1, min(os.cpu_count() or 1, 8)))
    deadline = time.monotonic() + BUILD_TIMEOUT_S
    # A plain CMake build (EGGROLL_BUILD_PYTHON defaults to OFF) installs the CMake package.
    # EGGROLL_CUDA=OFF: the example uses the CPU core only; compiling the CUDA kernels too
    # would only add minutes where nvcc is installed.
    _run(["cmake", "-S", str(REPO), "-B", str(build), f"-DCMAKE_BUILD_TYPE={CONFIG}",
          "-DEGGROLL_CUDA=OFF"], deadline, "configuring the core")
    _run(["cmake", "--build", str(build), "--config", CONFIG, "--parallel", jobs],
         deadline, "building the core")
    _run(["cmake", "--install", str(build), "--config", CONFIG, "--prefix", str(prefix)],
         deadline, "installing the core")
    _run(["cmake", "-S", str(EXAMPLE), "-B", str(ex_build), f"-DCMAKE_BUILD_TYPE={CONFIG}",
          f"-DCMAKE_PREFIX_PATH={prefix}"], deadline, "configuring examples/cpp")
    _run(["cmake", "--build", str(ex_build), "--config", CONFIG], deadline,
         "building examples/cpp")
    out = _run([str(_find_exe(ex_build))], deadline, "running the example")
    try:
        return json.loads(out)
    except json.JSONDecodeError as e:
        pytest.fail(f"C++ example: stdout is not one JSON object ({e}):\n{out[:2000]}")


def f32(values: list[float], shape: list[int] | None = None) -> np.ndarray:
    """A printed array back as float32: nine significant digits (%.9g) identify a float32
    uniquely, so rounding the parsed double to float32 recovers the exact bits."""
    a = np.array(values, dtype=np.float64).astype(np.float32)
    return a if shape is None else a.reshape(shape)


def es_key(out: dict[str, Any]) -> dict[str, Any]:
    a = out["args"]
    return dict(seed=a["seed"], param_id=a["param_id"], epoch=a["epoch"],
                noise_reuse=a["noise_reuse"], antithetic=a["antithetic"], sigma=a["sigma"],
                rank=a["rank"])


def test_noise_bit_exact(cpp_example: dict[str, Any]) -> None:
    noise = f32(cpp_example["noise"])
    key = cpp_example["key"]
    assert noise.shape == (8,)
    py = eggroll.normal(noise.size, **key)
    assert np.array_equal(noise, py), (noise, py)
    # and the pure-NumPy oracle (the noise contract is bit-exact against it)
    assert np.array_equal(noise, ref.normal(noise.size, **key))


def test_inputs_are_what_the_example_says(cpp_example: dict[str, Any]) -> None:
    s = cpp_example["shapes"]
    x, W = f32(cpp_example["x"], s["x"]), f32(cpp_example["W"], s["W"])
    assert x.shape == (4, 5) and W.shape == (3, 5)
    # sin/cos of the index from C++'s libm; only a sanity check (libms may differ by an ulp),
    # the bit comparisons below use the printed inputs.
    np.testing.assert_allclose(x.ravel(), np.sin(0.5 * np.arange(x.size)), rtol=0, atol=1e-7)
    np.testing.assert_allclose(W.ravel(), np.cos(0.3 * np.arange(W.size)), rtol=0, atol=1e-7)


def test_perturbed_matmul_bit_exact(cpp_example: dict[str, Any]) -> None:
    s = cpp_example["shapes"]
    x, W, y = (f32(cpp_example[k], s[k]) for k in ("x", "W", "y"))
    py = eggroll.perturbed_matmul(x, W, members=range(x.shape[0]), **es_key(cpp_example))
    assert py.shape == y.shape == (4, 3)
    assert np.array_equal(y, py), (y, py)


def test_fitness_shaping_and_gradient_bit_exact(cpp_example: dict[str, Any]) -> None:
    s = cpp_example["shapes"]
    y = f32(cpp_example["y"], s["y"])
    fitness, shaped = f32(cpp_example["fitness"]), f32(cpp_example["shaped"])
    g = f32(cpp_example["g"], s["g"])
    # The fitness is the example's own black box ("outputs close to 1"), not a library op.
    np.testing.assert_allclose(fitness, -np.square(y.astype(np.float64) - 1.0).sum(axis=1),
                               rtol=1e-6)
    py_shaped = eggroll.centered_rank(fitness)
    assert np.array_equal(shaped, py_shaped), (shaped, py_shaped)
    py_g = eggroll.es_gradient(shaped, tuple(s["W"]), members=range(shaped.size),
                               **es_key(cpp_example))
    assert py_g.shape == g.shape == (3, 5)
    assert np.array_equal(g, py_g), (g, py_g)


def test_error_is_caught_and_names_the_argument(cpp_example: dict[str, Any]) -> None:
    # The example passes sigma = -1 on purpose and catches eggroll::ValueError.
    assert cpp_example["error_demo"].startswith("sigma:"), cpp_example["error_demo"]
    x = np.zeros((4, 5), np.float32)
    with pytest.raises(ValueError, match="^sigma:"):
        eggroll.perturbed_matmul(x, np.zeros((3, 5), np.float32), members=range(4),
                                 **{**es_key(cpp_example), "sigma": -1.0})
