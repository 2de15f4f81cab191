"""The ES peer benchmark (bench/bench_peers.py --backend es) in its smoke form: every
candidate whose libraries are installed runs the tiny task, its record carries the timing,
the accuracy check and same-run ratios that follow from the reported medians, and a missing
library is reported instead of failing the run. No timing assertions."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("sklearn", reason="the task is scikit-learn's digits")

from eggroll.bench import peers_es  # noqa: E402
from eggroll.bench.peers_es_candidates import NAMES  # noqa: E402


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("peers")
    jsonl = out / "peers.jsonl"
    assert peers_es.main(["--smoke", "--no-memory", "--jsonl", str(jsonl),
                          "--out", str(out)]) == 0
    recs = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert (out / "peers_es.md").is_file()
    return [r for r in recs if r.get("kind") == "peers_es"]


def test_every_installed_candidate_runs(smoke: list[dict]) -> None:
    assert {(r["candidate"], r["inputs"]) for r in smoke} == {
        (n, m) for n in NAMES for m in ("shared", "per-member")}
    for r in smoke:
        why = peers_es.missing(r["candidate"])
        if why:
            assert r["status"] == "missing" and r["error"] == why
            continue
        assert r["status"] == "ok", r
        assert r["n"] >= peers_es.MIN_STEPS and len(r["times_s"]) == r["n"]
        assert r["generations"] == r["n"] + peers_es.WARMUP
        assert 0.0 <= r["test_accuracy"] <= 1.0


def test_ratios_follow_from_the_medians(smoke: list[dict]) -> None:
    for mode in ("shared", "per-member"):
        ok = {r["candidate"]: r for r in smoke if r["inputs"] == mode and r["status"] == "ok"}
        peers = [ok[p]["median_s"] for p in peers_es.PEERS if p in ok]
        for r in ok.values():
            if peers:
                assert r["over_fastest_peer"] == pytest.approx(r["median_s"] / min(peers))
            assert r["over_eggroll_numpy"] == pytest.approx(
                r["median_s"] / ok["eggroll-numpy"]["median_s"])


def test_memory_child_reports_a_peak() -> None:
    task = peers_es.Task(width=16, shared=True, population=16, batch=8)
    res = peers_es.measure_memory("eggroll-numpy", task)
    assert "memory_error" not in res, res
    assert res["process_mib"] >= res["baseline_mib"] > 0 and res["train_mib"] >= 0


def test_bad_arguments_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        peers_es.main(["--only", "nevergrad"])
    assert "--only: unknown" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        peers_es.main(["--inputs", "both"])
    assert "--inputs" in capsys.readouterr().err
