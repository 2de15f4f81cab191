"""Start the ranks of a distributed test as subprocesses (tests/dist_worker.py), each with one
thread and a hard timeout: on timeout every rank still running is killed and the test fails,
so a distributed test never hangs."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
PYTHON_DIR = HERE.parent / "python"
TIMEOUT = 150          # seconds for a whole launch (start-up, >= 5 generations, shut-down)


def one_thread_env(**extra: str) -> dict[str, str]:
    """The environment of a rank on a small machine: one thread everywhere, loopback only."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               GLOO_SOCKET_IFNAME="lo", JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_cpu_multi_thread_eigen=false",
               PYTHONWARNINGS="ignore::FutureWarning")
    if (PYTHON_DIR / "eggroll" / "__init__.py").exists() and any(
            (PYTHON_DIR / "eggroll").glob("_core*.so")):
        env["PYTHONPATH"] = os.pathsep.join([str(PYTHON_DIR), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the coordinator binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(engine: str, world: int, tmp: Path, timeout: float = TIMEOUT,
              env: dict[str, str] | None = None, **opts: Any) -> list[dict[str, Any]]:
    """Run `world` ranks (world 1: the single-process baseline) and return each rank's output:
    {name: array} of its final parameters and "_listening", or {"_error": {...}}."""
    tmp.mkdir(parents=True, exist_ok=True)
    rdzv = tmp / f"rdzv-{engine}-{world}-{os.getpid()}-{len(list(tmp.iterdir()))}"
    rdzv.mkdir()
    port = free_port()
    args = [f"--{k.replace('_', '-')}={v}" for k, v in opts.items()]
    procs, outs = [], []
    for r in range(world):
        out = rdzv / f"rank{r}.npz"
        outs.append(out)
        cmd = [sys.executable, str(HERE / "dist_worker.py"), engine, f"--rank={r}",
               f"--world={world}", f"--rdzv={rdzv}", f"--port={port}", f"--out={out}", *args]
        procs.append(subprocess.Popen(cmd, env=one_thread_env(**(env or {})),
                                      stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=timeout)[0])
    except subprocess.TimeoutExpired:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for p in procs:
            p.communicate()
        raise AssertionError(f"{engine} ranks did not finish within {timeout} s (killed)")
    results = []
    for r, (p, out) in enumerate(zip(procs, outs)):
        if not out.exists():
            raise AssertionError(f"rank {r} exited {p.returncode} without output:\n{logs[r]}")
        with np.load(out) as z:
            d = {k: z[k] for k in z.files}
        if "_error" in d:
            d["_error"] = json.loads(str(d["_error"]))
        elif p.returncode != 0:
            raise AssertionError(f"rank {r} exited {p.returncode}:\n{logs[r]}")
        d["_log"] = logs[r]
        results.append(d)
    return results


def is_loopback_all(addresses: Any) -> bool:
    from dist_worker import is_loopback
    return all(is_loopback(str(a)) for a in addresses)


def params_of(result: dict[str, Any]) -> dict[str, np.ndarray]:
    if "_error" in result:
        raise AssertionError(f"rank failed: {result['_error']['trace']}")
    return {k: v for k, v in result.items() if not k.startswith("_")}


def assert_bit_identical(a: dict[str, Any], b: dict[str, Any]) -> None:
    pa, pb = params_of(a), params_of(b)
    assert sorted(pa) == sorted(pb)
    for k in pa:
        assert pa[k].dtype == pb[k].dtype and pa[k].shape == pb[k].shape, k
        assert pa[k].tobytes() == pb[k].tobytes(), f"{k} differs"
