"""Benchmark of the noise generator: eggroll.normal rate per SIMD path and thread count,
against NumPy's Ziggurat and a memory-bandwidth reference.

Run:  PYTHONPATH=python python bench/bench_noise.py [--quick] [--threads N]
      [--repeat R] [--jsonl out.jsonl]     (JSON lines on stdout, tables on stderr)

For each count (2^20 and 2^24; --quick: 2^20 and 2^22), one interleaved group times, round
robin in the same run (median of >= 5):
  * eggroll.normal(count, seed=...) -> float32 [count] for every SIMD path this CPU has
    (eggroll.best_isa() and the narrower ones of 'avx512' > 'avx2' > 'scalar', forced with
    eggroll.set_isa) at 1 and 2 threads (eggroll.set_num_threads; also --threads N if given
    and all cores when there are more than 2);
  * np.random.default_rng().standard_normal(count, dtype=np.float32) (NumPy's Ziggurat,
    one thread);
  * torch.randn(count) (float32, one torch thread; when torch is installed; its CPU
    capability, ATEN_CPU_CAPABILITY, is in the records);
  * np.copyto(dst, src) of float32 [count] into a preallocated dst (one thread): the memory
    bandwidth reference, GB/s = 8 * count / time (4 B read + 4 B written per element); its
    "equivalent normals/s" = count / time (4 B written each), a ceiling for a generator
    that writes to memory;
  * src.copy() (allocates, like eggroll.normal and NumPy's generator do: at 2^24 the
    64 MiB output's first-touch page faults are part of every one of them).

Reported: rate in M normals/s = count / time / 1e6, per-core rate = rate / threads.
Ratios (same run): x_numpy = eggroll rate / Ziggurat rate (> 1: eggroll faster); x_torch
the same against torch.randn;
of_copy = eggroll rate / copyto's equivalent rate (1 = as fast as a plain copy).
Target: per-core rate >= 400 M normals/s on the widest path.
The thread count and ISA in force before the run are restored at the end.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Callable

import numpy as np

import eggroll
from eggroll.bench import harness   # the shared harness ships in the package

ISAS = ("avx512", "avx2", "scalar")   # widest first
TARGET_PER_CORE = 400.0               # M normals/s per core
SEED = 12345


def isa_paths() -> list[str]:
    """The SIMD paths this CPU supports: best_isa() and every narrower one."""
    return [i for i in ISAS if i in eggroll.isas()]


def thread_counts(requested: int | None) -> list[int]:
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    ncpu = ncpu or 1
    ts = {1, min(2, ncpu), ncpu}
    if requested:
        ts.add(requested)
    return sorted(ts)


def run_count(s: harness.Session, count: int, isas: list[str], threads: list[int],
              repeat: int) -> list[dict[str, Any]]:
    fns: dict[str, Callable[[], Any]] = {}
    before: dict[str, Callable[[], Any]] = {}
    for isa in isas:
        for th in threads:
            name = f"{isa}/{th}"
            fns[name] = lambda: eggroll.normal(count, seed=SEED)

            def setup(isa: str = isa, th: int = th) -> None:
                eggroll.set_isa(isa)
                eggroll.set_num_threads(th)
            before[name] = setup
    rng = np.random.default_rng(0)
    src = np.ones(count, dtype=np.float32)
    dst = np.empty_like(src)
    dst.fill(0.0)                                    # touch it once: copyto measures bandwidth
    fns["numpy_ziggurat"] = lambda: rng.standard_normal(count, dtype=np.float32)
    try:
        import torch
        torch_threads = torch.get_num_threads()
        fns["torch_randn"] = lambda: torch.randn(count)
        before["torch_randn"] = lambda: torch.set_num_threads(1)
    except ImportError:
        torch = None
    fns["copyto"] = lambda: np.copyto(dst, src)
    fns["copy_alloc"] = lambda: src.copy()
    # Big counts take ~1 s a round on 2 cores: allow fewer extra rounds when noisy.
    res = harness.measure_interleaved(fns, warmup=2, repeat=repeat, min_time=0.05,
                                      before=before, max_rounds=2 * repeat)
    if torch is not None:
        torch.set_num_threads(torch_threads)

    def rate(name: str) -> float:            # M normals (or float32 elements) per second
        return count / res[name]["median_s"] / 1e6

    zig, cpy = rate("numpy_ziggurat"), rate("copyto")
    recs = []
    for name in fns:
        isa, _, th = name.partition("/")
        rec: dict[str, Any] = {"kind": "noise" if th else "noise_ref", "count": count}
        if th:
            rec.update(what="eggroll.normal", isa=isa, threads=int(th))
        else:
            rec.update(what=name, isa=None, threads=1)
            if name == "torch_randn":
                rec["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        rec.update(harness.timing_fields("t", res[name]))
        rec["rate_M_per_s"] = rate(name)
        rec["per_core_M_per_s"] = rate(name) / rec["threads"]
        rec["x_numpy"] = rate(name) / zig
        if torch is not None:
            rec["x_torch"] = rate(name) / rate("torch_randn")
        rec["of_copy"] = rate(name) / cpy
        if name in ("copyto", "copy_alloc"):
            rec["GB_per_s"] = 8.0 * count / res[name]["median_s"] / 1e9   # 4 B read + 4 B write
        if th:
            rec["target_per_core_M_per_s"] = TARGET_PER_CORE
            rec["target_met"] = rec["per_core_M_per_s"] >= TARGET_PER_CORE
        recs.append(s.emit(rec))
    return recs


def main() -> int:
    args = harness.parser(__doc__).parse_args()
    with harness.Session(args) as s:
        isas, threads = isa_paths(), thread_counts(args.threads)
        counts = (1 << 20, 1 << 22) if args.quick else (1 << 20, 1 << 24)
        allrecs = []
        for count in counts:
            harness.log(f"count 2^{count.bit_length() - 1}: isas {isas}, threads {threads} ...")
            allrecs += run_count(s, count, isas, threads, args.repeat)
        rows = []
        for r in allrecs:
            label = (f"eggroll {r['isa']}" if r["kind"] == "noise" else
                     {"numpy_ziggurat": "numpy Ziggurat", "torch_randn": "torch.randn",
                      "copyto": "np.copyto (bandwidth)",
                      "copy_alloc": "src.copy() (alloc)"}[r["what"]])
            met = r.get("target_met")
            rows.append(dict(r, label=label, log2=f"2^{r['count'].bit_length() - 1}",
                             ms=r["t_median_s"] * 1e3,
                             met=None if met is None else ("yes" if met else "NO"),
                             flag="NOISY" if r["t_noisy"] else ""))
        harness.table(rows, [("log2", "count"), ("label", "what"), "threads",
                             ("ms", "median ms"), ("t_n", "runs"), ("rate_M_per_s", "M/s"),
                             ("per_core_M_per_s", "M/s/core"), ("x_numpy", "x numpy"),
                             ("x_torch", "x torch"),
                             ("of_copy", "of copy"), ("GB_per_s", "GB/s"),
                             ("met", f">={TARGET_PER_CORE:g}/core"), ("flag", "")],
                      title="eggroll.normal rate (M normals/s = count / median time); "
                            "'of copy' = rate / np.copyto's elements/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
