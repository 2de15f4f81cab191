"""The micro-benchmark grid of `eggroll bench`: perturbed forward, ES update and noise over
population sizes, square matrix sizes, ranks, dtypes and backends, each against its baseline
measured in the same run (eggroll.bench.harness: warm-up, median of >= 5, interleaved rounds,
a cool-down between candidates).

What one record (one configuration) holds, as the CSV columns of CSV_COLUMNS:

  forward  perturbed_matmul(x [P, n], W [m, n], members=range(P), rank=r, antithetic) against
           plain inference x @ W.T in the backend's framework (baseline), the low-rank ES
           forward a user of that framework writes without eggroll (idiom, at the first
           rank; backends.py says which per framework) and perturbed_matmul_full (full-rank
           OpenES, streamed noise) where its (P/2)*m*n regenerated normals stay under the
           grid's cap. Throughput = members/s = P / time; eggroll_gflops = 2*P*m*n / time.
  update   es_gradient(f [N], (m, n), rank=r) against the GEMM of the same shape,
           (m x N*r) @ (N*r x n) (baseline), and es_gradient(full_rank=True) where cheap.
           Throughput = members/s = N / time; eggroll_gflops = 2*m*n*N*r / time.
  noise    eggroll.normal(count) per SIMD path and thread count against NumPy's Ziggurat
           (default_rng().standard_normal(dtype=float32), one thread). Throughput = normals/s.

  rel_throughput   eggroll throughput / baseline throughput (same run) = baseline time /
                   eggroll time: for the forward, the fraction of inference throughput.
  idiom_over_eggroll  idiom time / eggroll time (first rank; > 1: eggroll is faster).
  speedup_vs_full  full-rank time / eggroll time. The full-rank candidate is timed in its own
                   interleaved pair with the first rank's eggroll call; for the other ranks the
                   speed-up is that pair's ratio times the eggroll rank ratio of the main group.
  *_noisy          that candidate's median stayed > 1.25 x its min after the extra runs.
  other_load_cores cores' worth of CPU other processes used while the group ran
                   (harness.OtherLoad; None for groups under 0.25 s).
  noisy            any *_noisy, or other_load_cores > OTHER_LOAD_MAX ("contended": another
                   process can slow a 2-thread GEMM by whole scheduler ticks, consistently,
                   which the spread test cannot see).

Every candidate runs the way a user of its framework would run it (Backend.prepare: jitted
under JAX) and finishes inside its timed region (block_until_ready, a device sync).
A dtype the backend lacks gives one record per suite with status NOT_AVAILABLE instead of
timings (bfloat16 and int8 in this grid today; bench/bench_int8.py times the int8 path).
"""
from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

import eggroll

from . import harness
from .backends import ALL_DTYPES, NOT_AVAILABLE, Backend

SEED = 42
SIGMA = 0.01

CSV_COLUMNS = [
    "suite", "backend", "device", "dtype", "status", "P", "m", "n", "rank", "count", "isa",
    "threads", "unit", "baseline", "eggroll_median_s", "baseline_median_s", "full_median_s",
    "eggroll_per_s", "baseline_per_s", "full_per_s", "rel_throughput", "speedup_vs_full",
    "idiom_median_s", "idiom_min_s", "idiom_n", "idiom_per_s", "idiom_over_eggroll",
    "eggroll_gflops", "baseline_gflops", "eggroll_min_s", "baseline_min_s", "full_min_s",
    "eggroll_n", "baseline_n", "full_n", "noisy", "contended", "other_load_cores",
]
OTHER_LOAD_MAX = 0.25       # cores used by other processes during a group: flag it


@dataclass(frozen=True)
class Grid:
    """One mode's configurations. cartesian=False measures a cross instead of the product:
    every population at fixed_size, and every size at fixed_pop (the plots' two slices)."""

    name: str
    pops: tuple[int, ...]
    sizes: tuple[int, ...]
    ranks: tuple[int, ...]
    fixed_size: int
    fixed_pop: int
    cartesian: bool
    update_max_nr: int          # update: only ranks with N * r <= this (the GEMM grows as N r)
    full_cap: float             # full rank only where (P/2) * m * n normals <= this
    noise_counts: tuple[int, ...]
    repeat: int = harness.MIN_REPEAT
    cooldown: float = harness.COOLDOWN_S
    settle_budget_s: float = 4.0
    retries: int = 0            # re-measure a group that other processes contended
    # No minimum timed total: with a cool-down every visit already times VISIT_CALLS calls,
    # and topping tiny calls up to a total would cost a cool-down per few microseconds.
    min_time: float = 0.0

    def pairs(self) -> list[tuple[int, int]]:
        """(population, size) configurations, cheapest first."""
        if self.cartesian:
            ps = {(p, s) for p in self.pops for s in self.sizes}
        else:
            ps = {(p, self.fixed_size) for p in self.pops} | {(self.fixed_pop, s)
                                                               for s in self.sizes}
        return sorted(ps, key=lambda ps_: (ps_[0] * ps_[1] ** 2, ps_))


GRIDS = {
    # <= 35 s on the 2-core VM (the memory part's quick form takes the rest of the minute).
    "quick": Grid("quick", pops=(64, 256, 1024), sizes=(128, 256, 512, 1024), ranks=(1, 4, 16),
                  fixed_size=512, fixed_pop=256, cartesian=False, update_max_nr=1024,
                  full_cap=2.0**25, noise_counts=(1 << 22,), settle_budget_s=1.0),
    "full": Grid("full", pops=(64, 128, 256, 512, 1024, 2048),
                 sizes=(128, 256, 512, 1024, 2048), ranks=(1, 4, 16), fixed_size=1024,
                 fixed_pop=512, cartesian=True, update_max_nr=4096, full_cap=2.0**30,
                 noise_counts=(1 << 20, 1 << 24), retries=2),
    # The test suite's smoke run: tiny shapes, no cool-down; the numbers mean nothing.
    "smoke": Grid("smoke", pops=(8, 16), sizes=(16, 32), ranks=(1, 2), fixed_size=32,
                  fixed_pop=16, cartesian=False, update_max_nr=32, full_cap=2.0**14,
                  noise_counts=(1 << 12,), cooldown=0.0, settle_budget_s=0.0),
}


@dataclass
class Task:
    """One progress step: a measurement group that returns its records."""

    suite: str
    label: str
    run: Callable[[], list[dict[str, Any]]]


def _base(suite: str, b: Backend, dtype: str = "float32") -> dict[str, Any]:
    return {"suite": suite, "backend": b.name, "device": b.device, "dtype": dtype,
            "status": "ok", "threads": eggroll.get_num_threads(), "isa": eggroll.get_isa()}


def _timing(prefix: str, m: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}_median_s": m["median_s"], f"{prefix}_min_s": m["min_s"],
            f"{prefix}_n": m["n"], f"{prefix}_noisy": m["noisy"],
            f"{prefix}_times_s": [round(t, 9) for t in m["times_s"]]}


def _finish(rec: dict[str, Any]) -> dict[str, Any]:
    rec["noisy"] = any(v for k, v in rec.items() if k.endswith("_noisy"))
    return rec


def _matmul_t(x: Any, W: Any) -> Any:
    """Plain inference in the inputs' own framework: x [M, n] @ W [m, n].T -> [M, m]."""
    return x @ W.T


def _matmul(a: Any, bt: Any) -> Any:
    """a [m, k] @ bt [k, n] -> [m, n]: the update's same-shape GEMM baseline."""
    return a @ bt


def _measure(grid: Grid, fns: dict[str, Callable[[], Any]], b: Backend,
             **kw: Any) -> dict[str, dict[str, Any]]:
    # Only NumPy's BLAS leaves threads spinning after a call: cool down after it alone.
    kw.setdefault("cooldown_after", [k for k in fns if k.rstrip("0123456789") in b.lingering])
    kw.setdefault("warmup", 1)
    kw.setdefault("repeat", grid.repeat)
    kw.setdefault("min_time", grid.min_time)
    kw.setdefault("settle_budget_s", grid.settle_budget_s)
    return harness.measure_interleaved(fns, sync=b.sync, **kw)


def _measure_full(grid: Grid, eg: Callable[[], Any], full: Callable[[], Any],
                  b: Backend) -> dict[str, dict[str, Any]]:
    """The slow full-rank candidate against eggroll's first rank: the minimum runs, no
    warm-up round (each switch of candidate already makes one untimed call)."""
    return _measure(grid, {"eggroll": eg, "full": full}, b, warmup=0, cooldown_after=(),
                    repeat=harness.MIN_REPEAT, max_rounds=harness.MIN_REPEAT)


def _full_fields(rec: dict[str, Any], fres: dict[str, dict[str, Any]] | None,
                 res: dict[str, dict[str, Any]], r: int, r0: int, members: int) -> None:
    if fres is None:
        return
    rec.update(_timing("full", fres["full"]))
    rec["full_per_s"] = members / fres["full"]["median_s"]
    pair = fres["full"]["median_s"] / fres["eggroll"]["median_s"]
    rec["speedup_vs_full"] = pair * res[f"r{r0}"]["median_s"] / res[f"r{r}"]["median_s"]


def forward_task(grid: Grid, b: Backend, P: int, size: int) -> list[dict[str, Any]]:
    m = n = size
    rng = np.random.default_rng(P * 7919 + size)
    x = b.asarray(rng.standard_normal((P, n), dtype=np.float32))                 # [P, n]
    W = b.asarray(rng.standard_normal((m, n), dtype=np.float32)
                  / np.float32(math.sqrt(n)))                                       # [m, n]
    kw = dict(members=range(P), epoch=0, seed=SEED, sigma=SIGMA)
    r0 = grid.ranks[0]
    fns: dict[str, Callable[[], Any]] = {"inference": b.prepare(_matmul_t, x, W)}
    for r in grid.ranks:
        fns[f"r{r}"] = b.prepare(functools.partial(eggroll.perturbed_matmul, rank=r, **kw),
                                 x, W)
    fns["idiom"] = b.prepare(b.idiom(P, m, n, r0, SIGMA), x, W)
    res = _measure(grid, fns, b)
    fres = None
    if (P // 2) * m * n <= grid.full_cap:       # antithetic: one noise matrix per pair
        fres = _measure_full(grid, fns[f"r{r0}"], b.prepare(
            functools.partial(eggroll.perturbed_matmul_full, **kw), x, W), b)
    flops = 2.0 * P * m * n                      # base GEMM
    recs = []
    for r in grid.ranks:
        eg, inf = res[f"r{r}"], res["inference"]
        rec = _base("forward", b)
        rec.update(P=P, m=m, n=n, rank=r, unit="members/s", baseline="x @ W.T",
                   **_timing("eggroll", eg), **_timing("baseline", inf))
        rec["eggroll_per_s"] = P / eg["median_s"]
        rec["baseline_per_s"] = P / inf["median_s"]
        rec["rel_throughput"] = inf["median_s"] / eg["median_s"]
        rec["eggroll_gflops"] = harness.gflops(flops, eg["median_s"])
        rec["baseline_gflops"] = harness.gflops(flops, inf["median_s"])
        if r == r0:
            rec.update(_timing("idiom", res["idiom"]))
            rec["idiom_per_s"] = P / res["idiom"]["median_s"]
            rec["idiom_over_eggroll"] = res["idiom"]["median_s"] / eg["median_s"]
        _full_fields(rec, fres, res, r, r0, P)
        recs.append(_finish(rec))
    return recs


def update_task(grid: Grid, b: Backend, N: int, size: int) -> list[dict[str, Any]]:
    m = n = size
    rng = np.random.default_rng(N * 7919 + size + 1)
    f = b.asarray(eggroll.centered_rank(rng.standard_normal(N)))                   # [N]
    ranks = [r for r in grid.ranks if N * r <= grid.update_max_nr] or [grid.ranks[0]]
    fns: dict[str, Callable[[], Any]] = {}
    for r in ranks:
        a = b.asarray(rng.standard_normal((m, N * r), dtype=np.float32))           # [m, N r]
        bt = b.asarray(rng.standard_normal((N * r, n), dtype=np.float32))          # [N r, n]
        fns[f"gemm{r}"] = b.prepare(_matmul, a, bt)
        fns[f"r{r}"] = b.prepare(functools.partial(eggroll.es_gradient, shape=(m, n), epoch=0,
                                                   seed=SEED, sigma=SIGMA, rank=r), f)
    res = _measure(grid, fns, b)
    r0 = ranks[0]
    fres = None
    if (N // 2) * m * n <= grid.full_cap:
        fres = _measure_full(grid, fns[f"r{r0}"], b.prepare(functools.partial(
            eggroll.es_gradient, shape=(m, n), epoch=0, seed=SEED, sigma=SIGMA,
            full_rank=True), f), b)
    recs = []
    for r in ranks:
        eg, gemm = res[f"r{r}"], res[f"gemm{r}"]
        flops = 2.0 * m * n * N * r              # the unfolded GEMM (m x N r) @ (N r x n)
        rec = _base("update", b)
        rec.update(P=N, m=m, n=n, rank=r, unit="members/s",
                   baseline="GEMM (m x N r) @ (N r x n)",
                   **_timing("eggroll", eg), **_timing("baseline", gemm))
        rec["eggroll_per_s"] = N / eg["median_s"]
        rec["baseline_per_s"] = N / gemm["median_s"]
        rec["rel_throughput"] = gemm["median_s"] / eg["median_s"]
        rec["eggroll_gflops"] = harness.gflops(flops, eg["median_s"])
        rec["baseline_gflops"] = harness.gflops(flops, gemm["median_s"])
        _full_fields(rec, fres, res, r, r0, N)
        recs.append(_finish(rec))
    return recs


def noise_task(grid: Grid, b: Backend, count: int, threads: int | None
               ) -> list[dict[str, Any]]:
    saved = (eggroll.get_num_threads(), eggroll.get_isa())
    fns: dict[str, Callable[[], Any]] = {}
    before: dict[str, Callable[[], Any]] = {}
    for isa in b.isa_paths():
        for th in b.thread_counts(threads):
            name = f"{isa}/{th}"
            fns[name] = lambda: b.normal(count, SEED)

            def setup(isa: str = isa, th: int = th) -> None:
                eggroll.set_isa(isa)
                eggroll.set_num_threads(th)
            before[name] = setup
    rng = np.random.default_rng(0)
    fns["numpy"] = lambda: rng.standard_normal(count, dtype=np.float32)
    try:
        # NumPy's Ziggurat is one thread and no BLAS: no cool-down needed anywhere.
        res = _measure(grid, fns, b, before=before, max_rounds=2 * grid.repeat,
                       cooldown_after=())
    finally:
        eggroll.set_num_threads(saved[0])
        eggroll.set_isa(saved[1])
    zig = res["numpy"]
    recs = []
    for name in fns:
        if name == "numpy":
            continue
        isa, _, th = name.partition("/")
        eg = res[name]
        rec = _base("noise", b)
        rec.update(count=count, isa=isa, threads=int(th), unit="normals/s",
                   baseline="numpy Ziggurat (1 thread)",
                   **_timing("eggroll", eg), **_timing("baseline", zig))
        rec["eggroll_per_s"] = count / eg["median_s"]
        rec["baseline_per_s"] = count / zig["median_s"]
        rec["rel_throughput"] = zig["median_s"] / eg["median_s"]
        rec["per_core_per_s"] = rec["eggroll_per_s"] / int(th)
        recs.append(_finish(rec))
    return recs


def unavailable_records(backends: list[Backend]) -> list[dict[str, Any]]:
    """One record per (suite, backend, dtype) the backend cannot run."""
    out = []
    for b in backends:
        for dtype in ALL_DTYPES:
            if dtype in b.dtypes:
                continue
            for suite in ("forward", "update"):
                rec = _base(suite, b, dtype)
                rec["status"] = NOT_AVAILABLE
                out.append(rec)
    return out


def _monitored(fn: Callable[[], list[dict[str, Any]]], retries: int
               ) -> Callable[[], list[dict[str, Any]]]:
    """fn with the CPU time other processes took while it ran recorded in its records; a
    contended group is measured again up to `retries` times, keeping the least loaded try."""
    def run() -> list[dict[str, Any]]:
        best: tuple[float, list[dict[str, Any]]] | None = None
        for attempt in range(retries + 1):
            t0 = time.perf_counter()
            with harness.OtherLoad() as load:
                recs = fn()
            group_s = time.perf_counter() - t0
            cores = load.cores
            contended = cores is not None and cores > OTHER_LOAD_MAX
            for r in recs:
                r["other_load_cores"] = None if cores is None else round(cores, 3)
                r["contended"] = contended
                r["noisy"] = bool(r.get("noisy")) or contended
                r["attempts"] = attempt + 1
                r["group_s"] = round(group_s, 3)     # wall time of the whole group
            if best is None or (cores or 0.0) < best[0]:
                best = (cores or 0.0, recs)
            if not contended or attempt == retries:
                break
            time.sleep(1.0)          # let a burst of someone else's work pass
        assert best is not None
        return best[1]
    return run


def plan(grid: Grid, backends: list[Backend], threads: int | None = None) -> list[Task]:
    """Every measurement group of the grid, in the order they run."""
    tasks: list[Task] = []

    def add(suite: str, label: str, fn: Callable[[], list[dict[str, Any]]]) -> None:
        tasks.append(Task(suite, label, _monitored(fn, grid.retries)))

    for b in backends:
        tag = f"{b.name}/{b.device}"
        for P, size in grid.pairs():
            add("forward", f"{tag} forward P={P} m=n={size}",
                lambda b=b, P=P, s=size: forward_task(grid, b, P, s))
        for N, size in grid.pairs():
            add("update", f"{tag} update N={N} m=n={size}",
                lambda b=b, N=N, s=size: update_task(grid, b, N, s))
        for count in grid.noise_counts if b.isa_paths() else ():
            add("noise", f"{tag} noise 2^{count.bit_length() - 1}",
                lambda b=b, c=count: noise_task(grid, b, c, threads))
    return tasks
