"""bench/bench_gpu.py without a GPU: its records and table have every measurement (the int8
row included: int8 forward vs the float32 / half forwards, throughput ratio against the 2x
target), the ratios are computed from the right medians, and without CUDA it exits 2 with a
message instead of failing. The timings themselves need a GPU (tools/gpu_check.sh)."""
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


def _records(bench, half=True):
    q = bench.int8_summary({"int8": 1.25, "float32": 3.0, **({"half": 1.5} if half else {})},
                           "bfloat16" if half else None)
    return [
        dict(bench="forward", dtype="bfloat16", eggroll_ms=1.0, correction_ms=0.05, inference_ms=0.97,
             inference_tflops=700.0, fraction_of_inference=0.97),
        dict(bench="forward_full_rank", full_rank_ms=300.0, inference_ms=0.97,
             fraction_of_inference=0.003, eggroll_speedup_vs_full=300.0),
        dict(bench="es_gradient", es_gradient_ms=1.2, gemm_ms=1.0, factors_ms=0.05, rest_ms=0.15,
             ratio_to_gemm=1.2),
        dict(bench="noise", g_normals_per_s=100.0, write_bound_g_per_s=200.0, write_gb_per_s=800.0,
             of_bound=0.5),
        q,
    ]


def test_int8_summary_ratios(bench):
    q = bench.int8_summary({"int8": 1.25, "float32": 3.0, "half": 1.5}, "bfloat16")
    assert q["bench"] == "forward_int8" and q["target"] == 2.0
    assert q["int8_vs_float32"] == pytest.approx(3.0 / 1.25)     # same shape: time ratio
    assert q["int8_vs_half"] == pytest.approx(1.5 / 1.25) and q["half_dtype"] == "bfloat16"
    ops = 2.0 * bench.M_ROWS * bench.N_IN * bench.N_OUT
    assert q["int8_tops"] == pytest.approx(ops / 1.25e-3 / 1e12)
    assert q["float32_tflops"] == pytest.approx(ops / 3.0e-3 / 1e12)
    assert (q["m"], q["n"], q["members"], q["rank"]) == (8192, 8192, 1024, 1)   # the headline shape
    assert "half_ms" not in bench.int8_summary({"int8": 1.0, "float32": 2.0}, None)


@pytest.mark.parametrize("half", [True, False])
def test_table_has_every_row(bench, half):
    md = bench.render_md(_records(bench, half), dict(date="today", gpu="Test GPU"), 21)
    assert md[0].startswith("GPU benchmarks, today, Test GPU") and "median of 21" in md[0]
    rows = [line for line in md if line.startswith("| ") and not line.startswith("| measurement")]
    assert len(rows) == 5
    int8 = [r for r in rows if r.startswith("| int8 forward")]
    assert len(int8) == 1
    assert "int8/float32 throughput 2.40x" in int8[0] and ">= 2x float32" in int8[0]
    upd = [r for r in rows if r.startswith("| es_gradient")]
    assert len(upd) == 1 and "(factor kernel 0.050 ms, rest 0.150 ms)" in upd[0]
    assert ("int8/bfloat16 1.20x" in int8[0]) == half
    assert all(r.count("|") == 6 for r in rows)                  # five columns each


def test_main_without_cuda_exits_2(bench, capsys):
    if eggroll.cuda_available():
        pytest.skip("a GPU is visible: the script would run the benchmarks")
    assert bench.main(["--quick"]) == 2
    assert "needs a CUDA build of eggroll and a GPU" in capsys.readouterr().err
