"""Every example in examples/ runs in its smoke mode (a few steps) as its own process and writes
its learning-curve PNG, so none of them rots; plus the Pendulum example's vectorised dynamics
checked against gymnasium's Pendulum-v1.

The children import the same eggroll as this process (the installed package in CI, the working
tree under PYTHONPATH=python in development). examples/cpp is covered by test_cpp_example.py.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import eggroll

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
REPO_PYTHON = Path(eggroll.__file__).resolve().parents[1]
TIMEOUT_S = 120.0

# script -> (smoke arguments, PNG it writes under --out or None, modules it needs)
SMOKE = {
    "digits.py": (["--quick", "--population", "32", "--baseline-steps", "1"], None,
                  ("sklearn", "tqdm")),
    "digits_curve.py": (["--smoke"], "digits.png", ("sklearn", "tqdm")),
    "pendulum.py": (["--smoke"], "pendulum.png", ("gymnasium", "tqdm")),
    "int8_lm.py": (["--smoke"], "int8_lm.png", ()),
    "torch_cartpole.py": (["--smoke"], "torch_cartpole.png", ("torch", "gymnasium", "tqdm")),
    "torch_digits.py": (["--smoke"], "torch_digits.png", ("torch", "sklearn", "tqdm")),
    "jax_digits.py": (["--smoke"], None, ("jax", "optax", "sklearn", "eggroll._xla_ffi")),
    "llm_addition.py": (["--smoke"], "llm_addition.png", ("torch", "transformers", "tqdm")),
}


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _run(script: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_PYTHON)] + (
        [env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("MPLBACKEND", "Agg")
    return subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)


def test_every_example_has_a_smoke_run():
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py"))
    assert scripts, f"no examples found in {EXAMPLES}"
    assert sorted(SMOKE) == scripts, "add each example in examples/ to SMOKE in this file"


@pytest.mark.parametrize("script", sorted(SMOKE))
def test_example_smoke(script, tmp_path):
    args, png, needs = SMOKE[script]
    for module in needs:
        pytest.importorskip(module)
    if png is not None:
        args = [*args, "--out", str(tmp_path / png)]
    r = _run(script, args, tmp_path)
    assert r.returncode == 0, (f"{script} exited {r.returncode}\n{r.stdout[-3000:]}\n"
                               f"{r.stderr[-3000:]}")
    if png is not None:
        if not _has("matplotlib"):
            assert "matplotlib is not installed" in r.stderr
            return
        out = tmp_path / png
        assert out.is_file() and out.stat().st_size > 1000, f"{script} wrote no PNG at {out}"
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _load_pendulum():
    spec = importlib.util.spec_from_file_location("eggroll_example_pendulum",
                                                  EXAMPLES / "pendulum.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_pendulum_dynamics_match_gymnasium():
    pytest.importorskip("gymnasium")
    pendulum = _load_pendulum()
    worst = pendulum.check_dynamics(n=200, seed=3)      # raises AssertionError on a mismatch
    assert worst <= 1e-9


def test_pendulum_batch_step_equals_single_steps():
    """One step of many pendulums at once equals each stepped alone (no cross-talk between
    members, shapes [N, E] as in training). Up to the last bits of NumPy's SIMD sin/cos,
    which may round differently for different array lengths."""
    import numpy as np
    pendulum = _load_pendulum()
    rng = np.random.default_rng(0)
    th, thdot = rng.uniform(-4, 4, (6, 3)), rng.uniform(-8, 8, (6, 3))
    u = rng.uniform(-3, 3, (6, 3)).astype(np.float32)
    batch = pendulum.VecPendulum(th, thdot)
    r = batch.step(u)
    for i in range(6):
        for j in range(3):
            one = pendulum.VecPendulum(th[i, j:j + 1], thdot[i, j:j + 1])
            assert abs(one.step(u[i, j:j + 1])[0] - r[i, j]) <= 1e-12
            np.testing.assert_allclose(one.obs()[0], batch.obs()[i, j], rtol=0, atol=1e-6)


def test_pendulum_names_the_extra_when_missing(monkeypatch, capsys):
    pendulum = _load_pendulum()
    monkeypatch.setitem(sys.modules, "gymnasium", None)     # import gymnasium -> ImportError
    assert pendulum.main(["--smoke"]) == 2
    assert "eggroll-hyperscale[examples]" in capsys.readouterr().err
