"""bench/isa_paths.py: a per-path benchmark run really measures each SIMD path against the
peers' matching kernels - the child process forces the path (eggroll.set_isa) and NumPy's
OpenBLAS loads the core type named for it (OPENBLAS_CORETYPE, which only works when set
before NumPy loads, hence the child processes). The timings themselves are not tested."""
from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import sys

import pytest

import eggroll

BENCH = pathlib.Path(__file__).resolve().parents[1] / "bench"

# A stand-in for a benchmark script: in its child it reports what it runs on.
CHILD = """
import json, sys
sys.path.insert(0, {bench!r})
import isa_paths
isa = isa_paths.enter_child()
print("not json: ignored")
print(json.dumps(dict(kind="probe", isa=isa, get_isa=__import__("eggroll").get_isa(),
                      argv=sys.argv[1:], **isa_paths.peer_info())))
"""


@pytest.fixture(scope="module")
def isa_paths():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("isa_paths", BENCH / "isa_paths.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.path.remove(str(BENCH))


def _args(isa_paths, *argv):
    p = argparse.ArgumentParser()
    isa_paths.add_argument(p)
    return p.parse_args(list(argv))


def test_every_path_has_its_peer_kernels(isa_paths):
    assert set(isa_paths.PEER_ENV) == set(isa_paths.ISAS) == {"scalar", "avx2", "avx512"}
    assert isa_paths.PEER_ENV["avx2"]["OPENBLAS_CORETYPE"] == "Haswell"
    assert isa_paths.PEER_ENV["avx2"]["MKL_ENABLE_INSTRUCTIONS"] == "AVX2"
    assert isa_paths.PEER_ENV["avx512"]["OPENBLAS_CORETYPE"] == "SkylakeX"


def test_requested_paths(isa_paths, monkeypatch):
    monkeypatch.delenv(isa_paths.CHILD_ENV, raising=False)
    # 'best': the widest float path (eggroll.best_isa() may name a wider int8-only level)
    best = isa_paths.requested(_args(isa_paths))
    assert len(best) == 1 and best[0] in eggroll.isas()
    assert not [i for i in isa_paths.ISAS[:isa_paths.ISAS.index(best[0])] if i in eggroll.isas()]
    assert not isa_paths.needs_children(_args(isa_paths))
    assert isa_paths.requested(_args(isa_paths, "--isa", "all")) == isa_paths.supported()
    assert isa_paths.supported()[-1] == "scalar"
    assert isa_paths.needs_children(_args(isa_paths, "--isa", "scalar"))
    monkeypatch.setenv(isa_paths.CHILD_ENV, "scalar")       # inside a child: no grandchildren
    assert isa_paths.requested(_args(isa_paths, "--isa", "all")) == ["scalar"]
    assert not isa_paths.needs_children(_args(isa_paths, "--isa", "all"))


def test_children_run_each_path_on_the_matching_openblas(isa_paths, tmp_path, capsys):
    pytest.importorskip("threadpoolctl")
    script = tmp_path / "probe.py"
    script.write_text(CHILD.format(bench=str(BENCH)))
    isas = isa_paths.supported()
    recs = isa_paths.run_children(str(script), ["--quick"], isas)
    assert [r["isa_run"] for r in recs] == isas
    for r in recs:
        assert r["kind"] == "probe" and r["argv"] == ["--quick"]
        assert r["isa"] == r["get_isa"] == r["isa_run"]
        want = isa_paths.PEER_ENV[r["isa_run"]]["OPENBLAS_CORETYPE"]
        assert r["OPENBLAS_CORETYPE"] == want
        if r["isa_run"] != "scalar":   # OpenBLAS names its SSE3 kernel after another core
            assert r["openblas_core"].lower() == want.lower()
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines == recs                 # the children's JSON lines reach stdout, tagged


def test_unsupported_path_is_refused(isa_paths, monkeypatch):
    monkeypatch.delenv(isa_paths.CHILD_ENV, raising=False)
    missing = [i for i in isa_paths.ISAS if i not in isa_paths.supported()]
    if not missing:
        pytest.skip("this CPU has every path")
    with pytest.raises(SystemExit, match="does not support"):
        isa_paths.requested(_args(isa_paths, "--isa", missing[0]))
