"""Benchmark of the integer path: eggroll.perturbed_matmul_int8 against the float32
eggroll.perturbed_matmul on the same shapes, every int8 GEMM path, and a library int8 GEMM
(PyTorch's torch._int_mm on the CPU: oneDNN, if torch is installed).

Run:  PYTHONPATH=python python bench/bench_int8.py [--quick] [--threads N] [--repeat R]
      [--jsonl out.jsonl]     (JSON lines on stdout, tables on stderr)

Headline configuration (issue 7): P = 512 members, x [512, 1024] (one row per member),
W [1024, 1024], rank 1, antithetic, members=range(512); int8 with fixed_point 4,
sigma_shift 4; float32 with sigma 0.01. Every candidate is timed interleaved with the
others in the same run (median of >= 5).

Ratios (same-run medians):
  f32/int8            perturbed_matmul (float32) / perturbed_matmul_int8 (best path).
                      Target >= 2 (stretch 3).
  f32/int8 cpu         the same ratio of CPU time per call (process_time; robust to other
                      processes' load on a shared machine).
  f32/int8[isa]       the same for each int8 GEMM path, forced (eggroll's eggroll.set_isa).
  int8_base/int_mm    perturbed_matmul_int8(members=None) (W packing + GEMM + requantisation
                      to int8) / torch._int_mm (the bare int8 x int8 -> int32 GEMM, no
                      epilogue), timed as their own interleaved pair: how the core's own
                      kernel compares with the library's.
GOP/s count the base GEMM only: 2 * M * b * m * n.
"""
from __future__ import annotations

import statistics
import sys
import time
from typing import Any, Callable

import numpy as np

import eggroll
from eggroll import _core
from eggroll.bench import harness

SEED = 42


def make_inputs(P: int, b: int, m: int, n: int, seed: int = 0):
    """int8 x [P, n] / [P, b, n] in [-16, 16], W [m, n] in [-127, 127]; float32 copies
    (x / 16, W / (16 sqrt n)) of the same values for the float path."""
    rng = np.random.default_rng(seed)
    shape = (P, n) if b == 1 else (P, b, n)
    x = rng.integers(-16, 17, shape).astype(np.int8)
    W = rng.integers(-127, 128, (m, n)).astype(np.int8)
    xf = x.astype(np.float32) / 16
    Wf = W.astype(np.float32) / np.float32(16 * np.sqrt(n))
    return x, W, xf, Wf


def _torch_int_mm(x: np.ndarray, W: np.ndarray) -> Callable[[], Any] | None:
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(eggroll.get_num_threads())
    xt = torch.from_numpy(x.reshape(-1, x.shape[-1]))
    Wt = torch.from_numpy(W).t()          # [n, m] view: x @ W.T
    try:
        torch._int_mm(xt[:32], Wt)
    except RuntimeError:
        return None
    return lambda: torch._int_mm(xt, Wt)


def run_config(s: harness.Session, kind: str, P: int, b: int, m: int, n: int, r: int,
               *, all_isas: bool, repeat: int) -> dict[str, Any]:
    x, W, xf, Wf = make_inputs(P, b, m, n)
    best = eggroll.best_isa()
    kw8 = dict(members=range(P), epoch=0, seed=SEED, rank=r, sigma_shift=4)
    fns: dict[str, Callable[[], Any]] = {
        "f32": lambda: eggroll.perturbed_matmul(xf, Wf, members=range(P), epoch=0, seed=SEED,
                                                sigma=0.01, rank=r),
        "int8": lambda: eggroll.perturbed_matmul_int8(x, W, **kw8),
        "int8_base": lambda: eggroll.perturbed_matmul_int8(x, W, **{**kw8, "members": None}),
    }
    before = {"int8": lambda: eggroll.set_isa(best),
              "int8_base": lambda: eggroll.set_isa(best)}
    isas = [i for i in eggroll.isas() if i != "scalar"] if all_isas else []
    for isa in isas:
        fns[f"int8[{isa}]"] = fns["int8"]
        before[f"int8[{isa}]"] = lambda isa=isa: eggroll.set_isa(isa)
    try:
        res = harness.measure_interleaved(fns, warmup=2, repeat=repeat, min_time=0.05,
                                          before=before)
        # The library GEMM in its own group: PyTorch's OpenMP workers keep spinning after
        # each call and would slow whatever runs next (the cool-down follows it only).
        lib = _torch_int_mm(x, W)
        if lib is not None:
            lres = harness.measure_interleaved(
                {"int8_base_vs_lib": fns["int8_base"], "int_mm": lib}, warmup=2,
                repeat=repeat, min_time=0.05, before={"int8_base_vs_lib": before["int8_base"]},
                cooldown_after=["int_mm"])
            res.update(lres)
    finally:
        eggroll.set_isa(best)
    ops = 2.0 * P * b * m * n
    rec: dict[str, Any] = {"kind": kind, "P": P, "b": b, "m": m, "n": n, "rank": r,
                           "threads": eggroll.get_num_threads(), "int8_isa": best,
                           "gemm_ops": ops}
    for name, mres in res.items():
        rec.update(harness.timing_fields(name, mres))
        rec[f"{name}_gops"] = harness.gflops(ops, mres["median_s"])
    med = {name: mres["median_s"] for name, mres in res.items()}
    rec["f32_over_int8"] = med["f32"] / med["int8"]
    for isa in isas:
        rec[f"f32_over_int8[{isa}]"] = med["f32"] / med[f"int8[{isa}]"]
    if "int_mm" in med:
        rec["int8_base_over_int_mm"] = med["int8_base_vs_lib"] / med["int_mm"]
    # CPU time per call (all threads of the process), interleaved in rounds: on a shared VM
    # another process's load inflates wall time far more than the CPU time a call uses.
    cpu: dict[str, list[float]] = {"f32": [], "int8": []}
    eggroll.set_isa(best)
    for _ in range(7):
        for name in cpu:
            fns[name]()
            c0 = time.process_time()
            for _ in range(5):
                fns[name]()
            cpu[name].append((time.process_time() - c0) / 5)
    for name, v in cpu.items():
        rec[f"cpu_{name}_s"] = statistics.median(v)
    rec["f32_over_int8_cpu"] = rec["cpu_f32_s"] / rec["cpu_int8_s"]
    rec["noisy"] = any(v for k, v in rec.items() if k.endswith("_noisy"))
    return s.emit(rec)


def headline_table(rec: dict[str, Any]) -> None:
    labels = {"f32": "eggroll.perturbed_matmul (float32)",
              "int8": f"eggroll.perturbed_matmul_int8 ({rec['int8_isa']})",
              "int8_base": "perturbed_matmul_int8(members=None)",
              "int8_base_vs_lib": "  the same, timed with torch._int_mm",
              "int_mm": "torch._int_mm (int8 GEMM only, -> int32)"}
    rows = []
    for key in [k[:-len("_median_s")] for k in rec if k.endswith("_median_s")]:
        med = rec[f"{key}_median_s"]
        label = labels.get(key, f"perturbed_matmul_int8, path {key[5:-1]}" if key.startswith("int8[") else key)
        rows.append({"what": label, "median_ms": med * 1e3, "min_ms": rec[f"{key}_min_s"] * 1e3,
                     "gops": rec[f"{key}_gops"], "f32_over": rec["f32_median_s"] / med,
                     "noisy": "NOISY" if rec[f"{key}_noisy"] else ""})
    harness.table(rows, ["what", ("median_ms", "median ms"), ("min_ms", "min ms"),
                         ("gops", "GOP/s"), ("f32_over", "f32 / this"), ("noisy", "")],
                  title=(f"P={rec['P']}, x [{rec['P']}, {rec['n']}], W [{rec['m']}, {rec['n']}], "
                         f"r={rec['rank']}, threads {rec['threads']}"))
    v = rec["f32_over_int8"]
    print(f"  f32 / int8 = {v:.2f} (target >= 2, stretch 3: {'met' if v >= 2 else 'NOT met'})",
          file=sys.stderr)
    print(f"  CPU time per call: f32 {rec['cpu_f32_s'] * 1e3:.2f} ms, int8 "
          f"{rec['cpu_int8_s'] * 1e3:.2f} ms: f32 / int8 = {rec['f32_over_int8_cpu']:.2f}",
          file=sys.stderr)
    if "int8_base_over_int_mm" in rec:
        print(f"  int8 base (GEMM + requantisation) / torch._int_mm = "
              f"{rec['int8_base_over_int_mm']:.2f}", file=sys.stderr)


def main() -> int:
    p = harness.parser(__doc__)
    args = p.parse_args()
    with harness.Session(args) as s:
        harness.log("headline ...")
        head = run_config(s, "int8_headline", 512, 1, 1024, 1024, 1, all_isas=True,
                          repeat=args.repeat)
        grid = []
        configs = [(512, 1, 256, 256, 1)] if args.quick else [
            (512, 1, 256, 256, 1), (512, 1, 1024, 1024, 4), (64, 8, 1024, 1024, 1),
            (512, 1, 4096, 1024, 1)]
        for P, b, m, n, r in configs:
            harness.log(f"grid P={P} b={b} m={m} n={n} r={r} ...")
            grid.append(run_config(s, "int8_grid", P, b, m, n, r, all_isas=False,
                                   repeat=args.repeat))
        headline_table(head)
        rows = [dict(g, f32_ms=g["f32_median_s"] * 1e3, int8_ms=g["int8_median_s"] * 1e3,
                     base_ms=g["int8_base_median_s"] * 1e3,
                     lib_ms=g["int_mm_median_s"] * 1e3 if "int_mm_median_s" in g else None,
                     flag="NOISY" if g["noisy"] else "") for g in grid]
        harness.table(rows, ["P", "b", "m", "n", ("rank", "r"), ("f32_ms", "f32 ms"),
                             ("int8_ms", "int8 ms"), ("base_ms", "int8 base ms"),
                             ("lib_ms", "_int_mm ms"), ("f32_over_int8", "f32/int8"),
                             ("f32_over_int8_cpu", "f32/int8 cpu"),
                             ("int8_base_over_int_mm", "base/_int_mm"), ("flag", "")],
                      title="grid (b rows per member)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
