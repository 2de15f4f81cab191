"""Smoke tests of the memory benchmark (eggroll.bench.memory) and the rank study
(eggroll.bench.rank_study): small configurations, seconds each.

The memory figures are measured in child processes (peak RSS), so the checks are about orders
of magnitude: a materialised full-rank step must hold its noise, (N/2) d^2 floats, and EGGROLL
must need a small fraction of that; the cannot-fit case must fail for the materialised method
and run for EGGROLL. The rank study is deterministic (eggroll's noise is a pure function of its
key, identical on every SIMD path and thread count), so its slope check does not flake.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from eggroll.bench import memory, rank_study

try:
    import matplotlib  # noqa: F401
    HAVE_MPL = True
except ImportError:
    HAVE_MPL = False

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(),
                                reason="needs Linux /proc for peak RSS")

MEMORY_KEYS = {"kind", "case", "method", "N", "d", "ok", "error", "peak_mib", "baseline_mib",
               "outputs_mib", "materialised_noise_mib", "required_mib", "mem_total_mib",
               "wall_s", "forward_s", "update_s", "plot"}
RANK_KEYS = {"kind", "method", "rank", "population", "rel_error", "exact_rel_error",
             "mc_noise_rel", "slope", "slope_exact", "seconds", "plot"}


@pytest.fixture(scope="module")
def memory_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("memory")
    return out, memory.run(out, quick=True, sizes=(128, 512), log=lambda s: None)


@pytest.fixture(scope="module")
def rank_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("rank")
    return out, rank_study.run(out, quick=True, population=1 << 17, log=lambda s: None)


def _check_plot(records, path: Path) -> None:
    if not HAVE_MPL:
        assert all(r["plot"] is None for r in records)
        pytest.importorskip("matplotlib")
    assert path.is_file() and 0 < path.stat().st_size < 200_000
    assert all(r["plot"] == str(path) for r in records)


# ------------------------------------------------------------------------------------------
# memory
# ------------------------------------------------------------------------------------------

def test_memory_records(memory_run):
    _, records = memory_run
    assert records and all(MEMORY_KEYS <= set(r) for r in records)
    assert all(r["kind"] == "memory" for r in records)
    sweep = [r for r in records if r["case"] == "sweep"]
    assert {(r["method"], r["d"]) for r in sweep} == {
        (m, d) for m in memory.METHODS for d in (128, 512)}
    for r in sweep:
        assert r["ok"], r
        assert r["peak_mib"] > 0, r


def test_memory_eggroll_far_below_materialised(memory_run):
    _, records = memory_run
    at = {r["method"]: r for r in records if r["case"] == "sweep" and r["d"] == 512}
    egg, mat, streamed = at["eggroll"], at["full_materialised"], at["full_streamed"]
    # the materialised step really holds its (N/2) d^2 floats: the measurement sees them
    assert mat["peak_mib"] >= 0.9 * mat["materialised_noise_mib"], mat
    # EGGROLL (and streamed full rank) need a small fraction of that
    assert egg["peak_mib"] * 10 < mat["peak_mib"], (egg["peak_mib"], mat["peak_mib"])
    assert streamed["peak_mib"] * 10 < mat["peak_mib"], (streamed["peak_mib"], mat["peak_mib"])
    # materialised and streamed full rank compute the same thing (same noise stream)
    for key in ("y_norm", "g_norm"):
        assert mat[key] == pytest.approx(streamed[key], rel=1e-4), key


def test_memory_cannot_fit_case(memory_run):
    _, records = memory_run
    cf = {r["method"]: r for r in records if r["case"] == "cannot_fit"}
    mat, egg = cf["full_materialised"], cf["eggroll"]
    assert mat["N"] == egg["N"] and mat["d"] == egg["d"]
    assert mat["materialised_noise_mib"] > mat["mem_total_mib"]
    assert not mat["ok"] and "MemoryError" in mat["error"], mat
    assert egg["ok"], egg
    assert 0 < egg["peak_mib"] < mat["required_mib"] / 100, egg
    assert egg["wall_s"] > 0


def test_memory_plot_and_summary(memory_run):
    out, records = memory_run
    text = memory.summary_markdown(records)
    assert "| d | EGGROLL MiB |" in text and "| 512 |" in text and "MemoryError" in text
    _check_plot(records, out / "memory.png")


def test_cannot_fit_config_exceeds_ram():
    N, d = memory.cannot_fit_config(24 << 30)
    assert (N, d) == (1024, 4096)
    assert memory.materialised_noise_bytes(N, d) == 32 << 30
    N, d = memory.cannot_fit_config(100 << 30)
    assert memory.materialised_noise_bytes(N, d) > 100 << 30


# ------------------------------------------------------------------------------------------
# rank study
# ------------------------------------------------------------------------------------------

def test_rank_study_records_and_slope(rank_run):
    _, records = rank_run
    assert all(RANK_KEYS <= set(r) for r in records)
    assert all(r["kind"] == "rank_study" for r in records)
    low = [r for r in records if r["method"] == "lowrank"]
    full = [r for r in records if r["method"] == "full_rank"]
    assert [r["rank"] for r in low] == list(rank_study.RANKS) and len(full) == 1
    slope = low[0]["slope"]
    assert -1.5 < slope < -0.6, (slope, [r["rel_error"] for r in low])
    assert -1.5 < low[0]["slope_exact"] < -0.6
    # the measurement sits on the exact curve, and the Monte-Carlo noise is far below it
    for r in low:
        assert r["mc_noise_rel"] < 0.3 * r["exact_rel_error"], r
    assert full[0]["rel_error"] < low[-1]["rel_error"] / 3, (full[0], low[-1])


def test_rank_study_plot_and_summary(rank_run):
    out, records = rank_run
    text = rank_study.summary_markdown(records)
    assert "| rank r |" in text and "slope" in text and "| 64 |" in text
    _check_plot(records, out / "rank_study.png")


def test_exact_lambda_matches_closed_moments():
    """The quadrature behind the exact curve integrates polynomials exactly: E[xi^2] = 1 and
    E[xi^4] = 3 + 6/r under the rank-r law (3 for the Gaussian)."""
    import numpy as np
    for rank in (None, 1, 3, 64):
        xi, w = rank_study._law(rank)
        assert float(np.sum(w * xi ** 2)) == pytest.approx(1.0, rel=1e-10)
        mu4 = 3.0 if rank is None else 3.0 + 6.0 / rank
        assert float(np.sum(w * xi ** 4)) == pytest.approx(mu4, rel=1e-9)
    assert rank_study.exact_lambda(64) < rank_study.exact_lambda(None)


@pytest.mark.parametrize("module", ["eggroll.bench.memory", "eggroll.bench.rank_study"])
def test_cli_help(module):
    env = dict(os.environ)
    import eggroll
    root = str(Path(eggroll.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-m", module, "--help"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "--quick" in proc.stdout and "--out" in proc.stdout
