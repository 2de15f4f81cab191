"""`eggroll bench`: the smoke grid measures every installed backend against its own baselines
and writes its files with the documented columns, plots draw NOISY points apart, the
generated docs region replaces only itself, and the memory / rank-study parts are wired in by
module name (a missing one is reported, not fatal). No timing assertions."""
from __future__ import annotations

import csv
import importlib.util
import json
import pathlib
import shutil
import subprocess
import sys
import types
from typing import Any

import pytest

import eggroll
from eggroll.__main__ import main as cli_main
from eggroll.bench import backends, cli, plots, report, suite

EXPECTED_PNGS = ("throughput_vs_population.png", "fraction_of_inference_vs_size.png",
                 "speedup_vs_fullrank.png")


def _have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def smoke_out(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("eggroll-bench")
    saved = (eggroll.get_num_threads(), eggroll.get_isa())
    rc = cli_main(["bench", "--smoke", "--out", str(out)])
    assert rc == 0
    assert (eggroll.get_num_threads(), eggroll.get_isa()) == saved, "threads / ISA not restored"
    return out


def _expected_cpu_backends() -> set[str]:
    """The CPU backends this environment has: numpy always, torch and JAX when installed."""
    want = {"numpy"}
    if importlib.util.find_spec("torch"):
        want.add("torch")
    if importlib.util.find_spec("jax") and importlib.util.find_spec("eggroll._xla_ffi"):
        want.add("jax")
    return want


def test_smoke_measures_every_installed_backend(smoke_out: pathlib.Path) -> None:
    recs = [json.loads(line) for line in (smoke_out / "results.jsonl").read_text().splitlines()]
    ok = [r for r in recs if r["status"] == "ok"]
    measured = {r["backend"] for r in ok if r["device"] == "cpu"}
    assert measured == _expected_cpu_backends()
    for be in measured:
        for su in ("forward", "update"):
            assert any(r["backend"] == be and r["suite"] == su for r in ok), (be, su)
        # Each framework against its own idiom, at the first rank, with the ratio of the
        # medians it reports.
        first = [r for r in ok if r["backend"] == be and r["suite"] == "forward"
                 and r["rank"] == suite.GRIDS["smoke"].ranks[0]]
        assert first and all(r["idiom_median_s"] > 0 for r in first)
        for r in first:
            assert r["idiom_over_eggroll"] == pytest.approx(r["idiom_median_s"]
                                                            / r["eggroll_median_s"])
    machine = json.loads((smoke_out / "machine.json").read_text())
    listed = {(b["backend"], b["device"]): b for b in machine["backends"]}
    assert set(listed) == {(b.name, b.device) for b in backends.BACKENDS}
    for b in listed.values():       # a backend that was not measured says why
        assert b["available"] or b["why_not"], b


def test_unknown_backend_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli_main(["bench", "--backend", "tensorflow"])
    assert exc.value.code == 2 and "--backend: unknown ['tensorflow']" in capsys.readouterr().err


def test_help_says_what_and_how_long(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli_main(["bench", "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    for b in backends.BACKENDS:
        assert b.label in out
    assert "--quick takes <= 60 s" in out and "NOISY" in out


def test_plots_draw_noisy_points_apart() -> None:
    """A NOISY point is not on the line (the line has a gap there) and is drawn hollow; a
    spike far above the clean points does not set the axis' scale."""
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure
    ax = Figure().subplots()
    plots._draw(ax, [1, 2, 3, 4], [1.0, 50.0, 1.2, 1.1], [False, True, False, False], "o-",
                "r=1", "tab:blue")
    plots._finish_axes(ax, floor=1.0)
    line = ax.lines[0]
    ys = list(line.get_ydata())
    assert ys[0] == 1.0 and ys[2] == 1.2 and ys[1] != ys[1]          # NaN: a gap
    hollow = [ln for ln in ax.lines[1:] if ln.get_markerfacecolor() == "none"]
    assert len(hollow) == 1 and hollow[0].get_marker() == "^"       # off scale: at the top
    assert ax.get_ylim()[1] < 2.0


def test_plots_keep_low_noisy_points_on_a_log_axis() -> None:
    """On a log axis a NOISY point below every clean one (a spread flag, not a spike) is
    drawn hollow inside the axis, not dropped: the peer plot once lost a whole width."""
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure
    ax = Figure().subplots()
    ax.set_yscale("log")
    plots._draw(ax, [256, 4096], [120.0, 1100.0], [True, False], "o-", "numpy", "C0")
    plots._finish_axes(ax, log=True)
    hollow = [ln for ln in ax.lines[1:] if ln.get_markerfacecolor() == "none"]
    assert len(hollow) == 1 and list(hollow[0].get_ydata()) == [120.0]
    lo, hi = ax.get_ylim()
    assert lo < 120.0 < 1100.0 < hi


def test_smoke_writes_jsonl_csv_machine(smoke_out: pathlib.Path) -> None:
    out = smoke_out
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    suites = {r["suite"] for r in recs}
    assert {"forward", "update", "noise"} <= suites
    ok = [r for r in recs if r["status"] == "ok"]
    for r in ok:
        assert r["eggroll_median_s"] > 0 and r["baseline_median_s"] > 0
        assert r["rel_throughput"] == pytest.approx(r["baseline_median_s"]
                                                    / r["eggroll_median_s"])
        assert len(r["eggroll_times_s"]) == r["eggroll_n"] >= 5
    # Full rank is measured where the smoke grid's cap allows, with its speed-up.
    assert any(r.get("speedup_vs_full") for r in ok if r["suite"] == "forward")
    assert any(r.get("speedup_vs_full") for r in ok if r["suite"] == "update")
    # The dtypes the NumPy backend lacks are listed, not dropped.
    missing = {(r["suite"], r["dtype"]) for r in recs if r["status"] != "ok"}
    assert {("forward", "bfloat16"), ("forward", "int8"), ("update", "int8")} <= missing
    assert all(r["status"] == "not available on this backend" for r in recs
               if r["status"] != "ok")

    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(recs)
    header = list(rows[0])
    assert header[:len(suite.CSV_COLUMNS)] == suite.CSV_COLUMNS
    assert not any(h.endswith("_times_s") for h in header)      # raw times stay in JSON
    fwd = [r for r in rows if r["suite"] == "forward" and r["status"] == "ok"]
    assert fwd and all(float(r["eggroll_per_s"]) > 0 for r in fwd)

    machine = json.loads((out / "machine.json").read_text())
    for key in ("cpu", "logical_cores", "gpus", "memory_gib", "numpy", "eggroll_isa",
                "timings_s", "mode", "backends"):
        assert key in machine, key
    assert machine["mode"] == "smoke"


def test_smoke_plots(smoke_out: pathlib.Path) -> None:
    if not _have_matplotlib():
        pytest.skip("matplotlib is not installed (the bench extra): no plots")
    out = smoke_out
    for name in EXPECTED_PNGS:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
        assert len(data) < 200_000, f"{name}: {len(data)} bytes"


def test_plots_skipped_without_matplotlib(tmp_path: pathlib.Path,
                                          monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli.plots, "have_matplotlib", lambda: False)
    assert cli_main(["bench", "--smoke", "--backend", "numpy", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "results.csv").exists() and not list(tmp_path.glob("*.png"))
    assert "eggroll-hyperscale[bench]" in capsys.readouterr().out


def _fake_part(records: list[dict[str, Any]], png: str | None) -> types.ModuleType:
    mod = types.ModuleType("fake_part")

    def run(out_dir: pathlib.Path, quick: bool) -> list[dict[str, Any]]:
        assert isinstance(out_dir, pathlib.Path) and quick is True
        if png:
            (out_dir / png).write_bytes(b"\x89PNG\r\n\x1a\n")
        return [dict(r) for r in records]

    mod.run = run  # type: ignore[attr-defined]
    mod.summary_markdown = lambda recs: f"| rows |\n|---|\n| {len(recs)} |"  # type: ignore
    return mod


def test_parts_wired_by_module_name(tmp_path: pathlib.Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """--quick runs the memory part's quick form; --rank-study adds the study; their records
    land in results.jsonl and their own CSVs, their PNGs in the docs region."""
    monkeypatch.setitem(sys.modules, "eggroll.bench.memory",
                        _fake_part([{"what": "peak", "bytes": 1}], "memory.png"))
    monkeypatch.setitem(sys.modules, "eggroll.bench.rank_study",
                        _fake_part([{"rank": 1, "error": 0.5}], "rank_study.png"))
    res = cli.run_part("memory", "eggroll.bench.memory", "Memory", tmp_path, quick=True)
    assert res["status"] == "ok" and res["pngs"] == ["memory.png"]
    assert res["records"] == [{"what": "peak", "bytes": 1, "suite": "memory"}]

    doc = tmp_path / "doc.md"
    doc.write_text("# hand-written\n\nanalysis\n")
    out = tmp_path / "out"
    # --no-grid keeps this fast; the grid's own docs output is covered below.
    assert cli_main(["bench", "--quick", "--no-grid", "--rank-study", "--out", str(out),
                     "--update-docs", str(doc)]) == 0
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["suite"] for r in recs} == {"memory", "rank_study"}
    assert (out / "memory.csv").exists() and (out / "rank_study.csv").exists()
    text = doc.read_text()
    assert text.startswith("# hand-written\n\nanalysis\n")
    assert "](bench/memory.png)" in text and "](bench/rank_study.png)" in text
    assert (tmp_path / "bench" / "memory.png").exists()


def test_missing_part_is_reported(tmp_path: pathlib.Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "eggroll.bench.rank_study", None)   # import fails
    res = cli.run_part("rank_study", "eggroll.bench.rank_study", "Rank", tmp_path, quick=True)
    assert res["status"] == "missing" and "skipping" in res["message"]


def test_update_docs_rewrites_only_the_region(tmp_path: pathlib.Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Benchmarks\n\nhand-written\n\n{report.BEGIN}\nold\n{report.END}\n"
                   "after\n")
    out = tmp_path / "out"
    assert cli_main(["bench", "--smoke", "--backend", "numpy", "--out", str(out),
                     "--update-docs", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nhand-written\n\n" + report.BEGIN)
    assert text.endswith(report.END + "\nafter\n") and "\nold\n" not in text
    assert "eggroll bench --smoke" in text and "NOISY" in text
    assert "results.csv" in text and (tmp_path / "bench" / "results.csv").exists()
    if _have_matplotlib():
        for name in EXPECTED_PNGS:
            assert f"](bench/{name})" in text and (tmp_path / "bench" / name).exists()
    # Idempotent apart from the numbers: one region, markers kept.
    assert text.count(report.BEGIN) == text.count(report.END) == 1
    with pytest.raises(ValueError, match="markers"):
        report.replace_region(f"{report.BEGIN} only", "x")


def test_bench_rejects_bad_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli_main(["bench", "--threads", "0"])
    assert exc.value.code == 2 and "--threads" in capsys.readouterr().err


def test_console_script() -> None:
    """The installed `eggroll` command (pyproject [project.scripts]); skipped in a source
    tree that was not pip-installed."""
    exe = shutil.which("eggroll")
    if exe is None:
        pytest.skip("no `eggroll` console script on PATH (package not pip-installed)")
    res = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "bench" in res.stdout and "demo" in res.stdout
    assert res.stdout.startswith("usage: eggroll ")
