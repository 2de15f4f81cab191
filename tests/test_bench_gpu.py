"""bench/bench_gpu.py without a GPU: its records and table have every measurement issue 18
names (forward at 1024 x 1 and x 16 rows, eager and graph-replayed; full rank; es_gradient
against its GEMM with the factor rows and host time split out; noise; int8 against bf16 and
fp32; JAX), the ratios come from the right medians, and without CUDA it exits 2 with a
message. The timings themselves need a GPU (tools/gpu_check.sh)."""
from __future__ import annotations

import importlib.util
import pathlib

import pytest

import eggroll

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "bench" / "bench_gpu.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("eggroll_bench_gpu", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _records(bench):
    fwd = dict(inference=0.95, eggroll=1.0, inference_graph=0.9, eggroll_graph=0.92)
    return [
        bench.forward_record(1, fwd, 40.0),
        bench.forward_record(16, {k: 16 * v for k, v in fwd.items()}, 40.0),
        dict(bench="forward_full_rank", full_rank_ms=300.0, inference_ms=0.97,
             fraction_of_inference=0.003, eggroll_speedup_vs_full=300.0),
        bench.update_record(dict(gemm=1.0, es_gradient=1.25, factors=0.1, gemm_graph=0.98,
                                 es_gradient_graph=1.1), 60.0),
        dict(bench="noise", g_normals_per_s=100.0, write_bound_g_per_s=200.0, write_gb_per_s=800.0,
             of_bound=0.5),
        bench.int8_record(dict(int8=0.5, bfloat16=1.0, float32=3.0)),
        dict(bench="jax_forward", inference_ms=1.0, eggroll_ms=1.1, fraction_of_inference=1 / 1.1),
    ]


def test_records_ratios(bench):
    f1, f16, _, u, _, q, _ = _records(bench)
    assert f1["fraction_of_inference"] == pytest.approx(0.95)
    assert f1["fraction_graph"] == pytest.approx(0.9 / 0.92)
    assert f16["rows_per_member"] == 16 and f16["fraction_of_inference"] == pytest.approx(0.95)
    flops = 2.0 * bench.M_ROWS * bench.N_IN * bench.N_OUT
    assert f1["inference_tflops"] == pytest.approx(flops / 0.95e-3 / 1e12)
    assert u["ratio_to_gemm"] == pytest.approx(1.25) and u["ratio_graph"] == pytest.approx(1.1 / 0.98)
    assert (u["rows"], u["target"]) == (512, 1.3)
    assert q["int8_vs_bfloat16"] == pytest.approx(2.0) and q["int8_vs_float32"] == pytest.approx(6.0)
    assert q["int8_tops"] == pytest.approx(flops / 0.5e-3 / 1e12) and q["target_vs_bfloat16"] == 1.5
    assert (q["m"], q["n"], q["members"], q["rank"]) == (8192, 8192, 1024, 1)   # the headline shape


def test_table_has_every_row(bench):
    md = bench.render_md(_records(bench), dict(date="today", gpu="Test GPU"), 21)
    assert md[0].startswith("GPU benchmarks, today, Test GPU") and "median of 21" in md[0]
    rows = [line for line in md if line.startswith("| ") and not line.startswith("| measurement")]
    assert len(rows) == 7
    assert all(r.count("|") == 6 for r in rows)                  # five columns each
    fwd = [r for r in rows if r.startswith("| forward bf16")]
    assert len(fwd) == 2 and "1024 x 16 rows" in fwd[1] and "0.950 / 0.978 of inference" in fwd[0]
    upd = [r for r in rows if r.startswith("| es_gradient")][0]
    assert "factor rows 0.100 ms; host 60 us/call" in upd and "1.25x / 1.12x" in upd
    int8 = [r for r in rows if r.startswith("| int8 forward")][0]
    assert "2.00x bf16, 6.00x fp32" in int8 and ">= 1.5x bf16" in int8
    assert any(r.startswith("| JAX forward") for r in rows)


def test_main_without_cuda_exits_2(bench, capsys):
    if eggroll.cuda_available():
        pytest.skip("a GPU is visible: the script would run the benchmarks")
    assert bench.main(["--quick"]) == 2
    assert "needs torch with CUDA, a CUDA build of eggroll and a GPU" in capsys.readouterr().err


def test_failures_are_rows_not_crashes(bench):
    # a graph that could not be captured: eager figures stand, the graph ratio is n/a
    rec = bench.forward_record(1, dict(inference=0.95, eggroll=1.0), 40.0)
    assert rec["fraction_graph"] is None
    rec["eggroll_graph_error"] = "RuntimeError: operation not permitted when stream is capturing"
    upd = bench.update_record(dict(gemm=1.0, es_gradient=1.25, factors=0.1), 60.0)
    assert upd["ratio_graph"] is None
    md = bench.render_md([rec, upd, dict(bench="forward_int8", error="RuntimeError: boom")],
                         dict(date="today", gpu="Test GPU"), 5)
    rows = [line for line in md if line.startswith("| ") and not line.startswith("| measurement")]
    assert "0.950 / n/a of inference" in rows[0]
    assert rows[1] == ("| forward: eggroll_graph | capture FAILED: RuntimeError: operation not "
                       "permitted when stream is capturing | | | |")
    assert "1.25x / n/a |" in rows[2]
    assert rows[3] == "| forward_int8 | FAILED: RuntimeError: boom | | | |"
    assert all(r.count("|") == 6 for r in rows)
