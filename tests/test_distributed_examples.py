"""The distributed examples (examples/distributed/) run in smoke mode, each engine's launch on
127.0.0.1 only, as process groups with a hard timeout (killed whole on expiry)."""
from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys

import pytest

from dist_launch import HERE, one_thread_env  # noqa: E402

EXAMPLES = HERE.parent / "examples" / "distributed"
TIMEOUT = 150


def _start(args, env):
    return subprocess.Popen([sys.executable, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _finish(procs):
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=TIMEOUT)[0])
    except subprocess.TimeoutExpired:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
        raise AssertionError(f"an example did not finish within {TIMEOUT} s (killed)")
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    return logs


def test_torch_example_two_ranks(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    procs = [_start([str(EXAMPLES / "torch_digits.py"), "--smoke",
                     f"--init-method=file://{tmp_path}/store",
                     f"--fitness-log={tmp_path}/f.fitlog"],
                    one_thread_env(RANK=str(r), WORLD_SIZE="2")) for r in range(2)]
    logs = _finish(procs)
    assert "2 ranks, population 32, members per rank [16, 16]" in logs[0]
    assert "(4 generations)" in logs[0]


def test_jax_example_two_processes(tmp_path):
    pytest.importorskip("jax")
    pytest.importorskip("sklearn")
    pytest.importorskip("eggroll._xla_ffi")
    log = _finish([_start([str(EXAMPLES / "jax_digits.py"), "--processes", "2", "--smoke"],
                          one_thread_env())])[0]
    assert "2 processes, population 32, members per process [16, 16]" in log


def test_ray_example_pool(tmp_path):
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed (pip install 'eggroll-hyperscale[ray]')")
    pytest.importorskip("sklearn")
    env = one_thread_env(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0")
    log = _finish([_start([str(EXAMPLES / "ray_digits.py"), "--smoke", "--actors", "2",
                           f"--fitness-log={tmp_path}/f.fitlog"], env)])[0]
    assert "Ray pool: 2 actors, population 32 in chunks [16, 16]" in log
    assert os.path.getsize(tmp_path / "f.fitlog") == 32 + 4 * (12 + 4 * 32)
