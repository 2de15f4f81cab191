"""Fuzz: every public op x NumPy / torch / JAX x the classes of bad input of fuzz_cases.py, run
in child processes (a case that kills its process or hangs is named, and the rest still run).
Every outcome must be a ValueError / TypeError naming one of the call's arguments, or a result
equal to the reference: never a signal, a hang, another exception type, or a silent wrong
result. 941 cases per backend (2,823 in all), ~40 s on 2 cores.

The sanitizer run (tools/sanitize.sh, docs/backends.md "Sanitizers") sets
EGGROLL_FUZZ_PYTHONPATH, where the children find an ASan + UBSan build of the package, and
EGGROLL_FUZZ_PRELOAD, their LD_PRELOAD (the ASan runtime).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import eggroll

HERE = Path(__file__).resolve().parent
REPO_PYTHON = Path(eggroll.__file__).resolve().parents[1]
TIMEOUT_S = 600          # one child's whole run; a hang is reported with its last case


def run_backend(backend: str) -> tuple[list[str], int]:
    """(failures, cases run): children from case 0, restarted after a crash or a hang."""
    sys.path.insert(0, str(HERE))
    import fuzz_cases
    grid = fuzz_cases.cases()
    package = os.environ.get("EGGROLL_FUZZ_PYTHONPATH") or str(REPO_PYTHON)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (package, str(HERE), os.environ.get("PYTHONPATH")) if p))
    if os.environ.get("EGGROLL_FUZZ_PRELOAD"):
        env["LD_PRELOAD"] = os.environ["EGGROLL_FUZZ_PRELOAD"]
    failures: list[str] = []
    start, seen = 0, 0
    while start < len(grid):
        try:
            proc = subprocess.run([sys.executable, str(HERE / "fuzz_cases.py"), backend,
                                   str(start)], env=env, capture_output=True, text=True,
                                  timeout=TIMEOUT_S)
            out, code, hung = proc.stdout, proc.returncode, False
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            code, hung = None, True
        last = start - 1
        for line in out.splitlines():
            if line.startswith("START "):
                last = int(line.split()[1])
            elif line.startswith("["):
                i, status, exc, msg = json.loads(line)
                seen += 1
                if status != "ok" and status != "named":
                    op, what = grid[i][0], grid[i][1]
                    failures.append(f"case {i} {op} [{what}]: {status} {exc}: {msg}")
        if "DONE" in out.splitlines():
            break
        op, what = grid[last][0], grid[last][1]
        failures.append(f"case {last} {op} [{what}]: " +
                        ("hung" if hung else f"child died with exit code {code}"))
        start = last + 1
    return failures, seen


@pytest.mark.parametrize("backend", ["numpy", "torch", "jax"])
def test_fuzz(backend):
    if backend != "numpy":
        pytest.importorskip(backend)
    failures, seen = run_backend(backend)
    assert seen > 900, seen
    assert not failures, f"{len(failures)} of {seen} cases:\n" + "\n".join(failures[:40])
