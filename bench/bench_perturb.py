"""Benchmark of the perturbed forward: eggroll.perturbed_matmul against NumPy's plain GEMM,
the full-rank baseline and the NumPy idiom a user would write for low rank.

Run:  PYTHONPATH=python python bench/bench_perturb.py [--quick] [--threads N] [--isa PATH]
      [--repeat R] [--jsonl out.jsonl]     (JSON lines on stdout, tables on stderr)
      --isa all: every SIMD path this CPU has (avx512, avx2, scalar), one child process each,
      with NumPy's OpenBLAS and torch's MKL/oneDNN restricted to the matching kernels
      (bench/isa_paths.py); the scalar path runs the base GEMM rows at the headline shape only.

Base GEMM rows (kind "gemm"), first: the core's deterministic GEMM
(perturbed_matmul(x, W, members=None, out=)) against NumPy's x @ W.T (OpenBLAS,
np.matmul(out=)) and torch.matmul(out=) (MKL), at x [512, 1024] W [1024, 1024],
x [4096, 256] W [256, 256] and x [64, 4096] W [4096, 4096] (--quick: the first), with
eggroll, OpenBLAS (threadpoolctl) and torch all at 1 and at 2 threads; at the first shape
also the perturbed forward (members=range(512), r = 1, antithetic). Ratios eggroll/openblas,
eggroll/torch (target <= 1.10) and perturbed/openblas (target <= 1.15) of wall-time medians;
at one thread also of the calling thread's CPU time (*_cpu_median_s, *_cpu ratios), which a
busy machine barely moves.

Headline configuration: P = 512 members, x float32 [512, 1024] (one row per
member), W float32 [1024, 1024], rank 1, antithetic, sigma 0.01, members=range(512).
Every candidate is timed interleaved with its baseline in the same run (median of >= 5).

Ratios (same-run medians):
  perturbed/plain       perturbed_matmul(x, W, ...) / (x @ W.T): the whole price of the
                        per-member low-rank correction on top of the GEMM every population
                        needs anyway. Target <= 1.10.
  perturbed_out/plain_out  the same with a preallocated out= on both sides
                        (np.matmul(x, W.T, out=y)), which takes allocation out of both.
  perturbed_fw/plain    perturbed_matmul(..., base="framework"): the base product by NumPy's
                        own x @ W.T (OpenBLAS) plus eggroll's correction, instead of the
                        core's deterministic GEMM (docs/ops.md "The base product").
  full/perturbed        perturbed_matmul_full (full-rank OpenES, streams an m x n noise
                        matrix per pair) / perturbed_matmul. Target >= 100 (how much low
                        rank saves).
  idiom_rng/perturbed   the naive NumPy idiom (factors from np.random.default_rng, repeated
                        for antithetic pairs, corrections by np.einsum, plus x @ W.T) /
                        perturbed_matmul. > 1 means eggroll is faster.
  idiom_factors/perturbed  the same idiom on eggroll.lowrank_factors (bit-identical noise,
                        so its result is also checked against perturbed_matmul).

GFLOP/s use the base GEMM only: flops = 2 * M * b * m * n (M members, b rows each, W m x n);
the correction adds 2 * M * b * r * (m + n) and (m + n) * r normals per noise index, which
are not counted, so a perturbed GFLOP/s below plain's is the correction's overhead.
NumPy's BLAS picks its own thread count (OPENBLAS_NUM_THREADS); --threads sets eggroll's.
"""
from __future__ import annotations

import math
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np

import eggroll
import isa_paths                     # bench/isa_paths.py: one child process per SIMD path
from eggroll.bench import harness   # the shared harness ships in the package

SEED = 42
SIGMA = 0.01


def make_inputs(P: int, b: int, m: int, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """x float32 [P, n] (b == 1) or [P, b, n]; W float32 [m, n] scaled ~ 1/sqrt(n)."""
    rng = np.random.default_rng(seed)
    shape = (P, n) if b == 1 else (P, b, n)
    x = rng.standard_normal(shape, dtype=np.float32)
    W = (rng.standard_normal((m, n), dtype=np.float32) / np.float32(math.sqrt(n)))
    return x, W


def candidates(x: np.ndarray, W: np.ndarray, P: int, b: int, r: int,
               idiom_rng: bool = True) -> tuple[dict[str, Callable[[], Any]], dict[str, np.ndarray]]:
    """The callables to time for one configuration, and the preallocated outputs."""
    m, n = W.shape
    members = range(P)
    x2 = x.reshape(P * b, n)                 # [P*b, n] view: one GEMM for the population
    x3 = x.reshape(P, b, n)                  # [P, b, n] view for the per-member einsums
    y_plain = np.empty((P * b, m), dtype=np.float32)
    y_pert = np.empty(x.shape[:-1] + (m,), dtype=np.float32)
    kw = dict(members=members, epoch=0, seed=SEED, sigma=SIGMA, rank=r)
    scale = np.float32(SIGMA / math.sqrt(r))
    sign = np.tile(np.array([1.0, -1.0], dtype=np.float32), P // 2)    # [P] antithetic s_i
    rng = np.random.default_rng(1)

    def idiom_np_random() -> np.ndarray:
        # What a user writes without eggroll: draw P/2 factor pairs, share them within each
        # antithetic pair, correct every member with two einsums.
        A = rng.standard_normal((P // 2, m, r), dtype=np.float32)          # [P/2, m, r]
        B = rng.standard_normal((P // 2, n, r), dtype=np.float32)          # [P/2, n, r]
        A = np.repeat(A, 2, axis=0) * (scale * sign)[:, None, None]        # [P, m, r]
        B = np.repeat(B, 2, axis=0)                                        # [P, n, r]
        xb = np.einsum("pbn,pnr->pbr", x3, B)                              # [P, b, r]
        return (x2 @ W.T).reshape(P, b, m) + np.einsum("pbr,pmr->pbm", xb, A)

    def idiom_factors() -> np.ndarray:
        A, B = eggroll.lowrank_factors((m, n), **kw)                       # [P,m,r], [P,n,r]
        xb = np.einsum("pbn,pnr->pbr", x3, B)
        return (x2 @ W.T).reshape(P, b, m) + np.einsum("pbr,pmr->pbm", xb, A)

    fns: dict[str, Callable[[], Any]] = {
        "plain": lambda: x2 @ W.T,
        "plain_out": lambda: np.matmul(x2, W.T, out=y_plain),
        "perturbed": lambda: eggroll.perturbed_matmul(x, W, **kw),
        "perturbed_out": lambda: eggroll.perturbed_matmul(x, W, out=y_pert, **kw),
        "perturbed_fw": lambda: eggroll.perturbed_matmul(x, W, base="framework", **kw),
        "idiom_factors": idiom_factors,
    }
    if idiom_rng:
        fns["idiom_rng"] = idiom_np_random
    return fns, {"y_pert": y_pert}


def full_fn(x: np.ndarray, W: np.ndarray, P: int) -> Callable[[], Any]:
    return lambda: eggroll.perturbed_matmul_full(x, W, members=range(P), epoch=0, seed=SEED,
                                                 sigma=SIGMA)


def check_idiom(x: np.ndarray, W: np.ndarray, P: int, b: int, r: int,
                fns: dict[str, Callable[[], Any]]) -> float:
    """max |perturbed_matmul - idiom on eggroll.lowrank_factors| (same noise; ~1e-6)."""
    y = eggroll.perturbed_matmul(x, W, members=range(P), epoch=0, seed=SEED, sigma=SIGMA,
                                 rank=r)
    return float(np.max(np.abs(y.reshape(P, b, -1) - fns["idiom_factors"]())))


def run_config(s: harness.Session, kind: str, P: int, b: int, m: int, n: int, r: int,
               *, with_full: bool, idiom_rng: bool, repeat: int) -> dict[str, Any]:
    x, W = make_inputs(P, b, m, n)
    fns, _ = candidates(x, W, P, b, r, idiom_rng=idiom_rng)
    diff = check_idiom(x, W, P, b, r, fns)
    flops = 2.0 * P * b * m * n                       # base GEMM: 2 * M * b * m * n
    rec: dict[str, Any] = {
        "kind": kind, "P": P, "b": b, "m": m, "n": n, "rank": r, "sigma": SIGMA,
        "antithetic": True, "threads": eggroll.get_num_threads(), "isa": eggroll.get_isa(),
        "gemm_flops": flops, "idiom_max_abs_diff": diff,
    }
    # Group 1: the GEMM-overhead ratios, each candidate interleaved with its own baseline
    # and nothing else (so the idioms' allocations do not disturb the pair).
    res = harness.measure_interleaved({k: fns[k] for k in ("plain", "perturbed", "plain_out",
                                                            "perturbed_out", "perturbed_fw")},
                                      warmup=2, repeat=repeat, min_time=0.05)
    for name, mres in res.items():
        rec.update(harness.timing_fields(name, mres))
    med = {name: mres["median_s"] for name, mres in res.items()}
    rec["plain_gflops"] = harness.gflops(flops, med["plain"])
    rec["perturbed_gflops"] = harness.gflops(flops, med["perturbed"])
    rec["perturbed_out_gflops"] = harness.gflops(flops, med["perturbed_out"])
    rec["perturbed_over_plain"] = med["perturbed"] / med["plain"]
    rec["perturbed_out_over_plain_out"] = med["perturbed_out"] / med["plain_out"]
    rec["perturbed_fw_over_plain"] = med["perturbed_fw"] / med["plain"]
    # Group 2: the NumPy idioms against perturbed_matmul.
    idioms = [k for k in ("idiom_rng", "idiom_factors") if k in fns]
    ires = harness.measure_interleaved({"perturbed": fns["perturbed"],
                                        **{k: fns[k] for k in idioms}},
                                       warmup=2, repeat=repeat, min_time=0.05)
    for k in idioms:
        rec.update(harness.timing_fields(k, ires[k]))
        rec[f"{k}_over_perturbed"] = ires[k]["median_s"] / ires["perturbed"]["median_s"]
    if with_full:
        # Group 3: full rank is ~50x slower: its own interleaved pair, fewer runs.
        fres = harness.measure_interleaved(
            {"perturbed": fns["perturbed"], "full": full_fn(x, W, P)},
            warmup=1, repeat=harness.MIN_REPEAT, max_rounds=harness.MIN_REPEAT)
        rec.update(harness.timing_fields("full", fres["full"]))
        rec["full_gflops"] = harness.gflops(flops, fres["full"]["median_s"])
        rec["full_over_perturbed"] = fres["full"]["median_s"] / fres["perturbed"]["median_s"]
    rec["noisy"] = any(v for k, v in rec.items() if k.endswith("_noisy"))
    return s.emit(rec)


GEMM_SHAPES = [(512, 1024, 1024), (4096, 256, 256), (64, 4096, 4096)]   # x [R, n], W [m, n]
GEMM_TARGET, PERTURBED_TARGET = 1.10, 1.15


def gemm_rows(s: harness.Session, shapes: list[tuple[int, int, int]], threads: list[int],
              repeat: int, slow: bool) -> list[dict[str, Any]]:
    """The base product y = x W^T: eggroll's GEMM vs OpenBLAS vs torch (MKL), all at the same
    thread count, interleaved; plus the perturbed forward at the headline shape."""
    try:
        import torch
    except ImportError:
        torch = None
    torch_threads = torch.get_num_threads() if torch is not None else None
    recs = []
    for R, m, n in shapes:
        x, W = make_inputs(R, 1, m, n)
        y, y_blas = np.empty((R, m), np.float32), np.empty((R, m), np.float32)
        fns: dict[str, Callable[[], Any]] = {
            "eggroll": lambda: eggroll.perturbed_matmul(x, W, members=None, epoch=0, seed=0,
                                                        sigma=1.0, out=y),
            "openblas": lambda: np.matmul(x, W.T, out=y_blas),
        }
        if torch is not None:
            xt, Wt, yt = torch.from_numpy(x), torch.from_numpy(W), torch.empty(R, m)
            fns["torch"] = lambda: torch.matmul(xt, Wt.T, out=yt)
        if (R, m, n) == GEMM_SHAPES[0] and not slow:
            fns["perturbed"] = lambda: eggroll.perturbed_matmul(
                x, W, members=range(R), epoch=0, seed=SEED, sigma=SIGMA, out=y)
        fns["eggroll"](); fns["openblas"]()
        rel = float(np.max(np.abs(y - y_blas)) / np.max(np.abs(y_blas)))
        for th in threads:
            harness.log(f"gemm x [{R}, {n}] W [{m}, {n}], {th} thread(s) ...")
            eggroll.set_num_threads(th)
            if torch is not None:
                torch.set_num_threads(th)
            with isa_paths.blas_threads(th) as limited:
                res = harness.measure_interleaved(
                    fns, warmup=1 if slow else 2, repeat=repeat, min_time=0.05,
                    max_rounds=harness.MIN_REPEAT if slow else None)
                # One thread: every candidate computes on this thread, so its CPU time counts
                # the work and not the time another process held the core.
                cpu = thread_cpu_medians(fns, repeat) if th == 1 and limited else None
            flops = 2.0 * R * m * n
            rec: dict[str, Any] = {"kind": "gemm", "R": R, "m": m, "n": n, "threads": th,
                                   "isa": eggroll.get_isa(), "blas_threads_limited": limited,
                                   "gemm_flops": flops, "max_rel_diff_vs_openblas": rel,
                                   **isa_paths.peer_info()}
            for name, mres in res.items():
                rec.update(harness.timing_fields(name, mres))
                rec[f"{name}_gflops"] = harness.gflops(flops, mres["median_s"])
            if cpu is not None:
                for name, t in cpu.items():
                    rec[f"{name}_cpu_median_s"] = t
                rec["eggroll_over_openblas_cpu"] = cpu["eggroll"] / cpu["openblas"]
                if "perturbed" in cpu:
                    rec["perturbed_over_openblas_cpu"] = cpu["perturbed"] / cpu["openblas"]
            med = {name: mres["median_s"] for name, mres in res.items()}
            rec["eggroll_over_openblas"] = med["eggroll"] / med["openblas"]
            if "torch" in med:
                rec["eggroll_over_torch"] = med["eggroll"] / med["torch"]
            if "perturbed" in med:
                rec["perturbed_over_openblas"] = med["perturbed"] / med["openblas"]
            rec["noisy"] = any(v for k, v in rec.items() if k.endswith("_noisy"))
            recs.append(s.emit(rec))
    if torch is not None:
        torch.set_num_threads(torch_threads)
    return recs


def thread_cpu_medians(fns: dict[str, Callable[[], Any]], repeat: int) -> dict[str, float]:
    """Median CPU time of this thread per call, round robin (order reversed every other round).
    At one thread every candidate computes on the calling thread, so this counts its work
    and not the time another process held the core: the figure to compare on a loaded
    machine."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for rnd in range(max(repeat, harness.MIN_REPEAT)):
        for name in (list(fns) if rnd % 2 == 0 else list(fns)[::-1]):
            t0 = time.thread_time()
            fns[name]()
            times[name].append(time.thread_time() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def gemm_table(recs: list[dict[str, Any]], title: str) -> None:
    rows = [dict(r, shape=f"{r['R']}x{r['n']} . {r['m']}x{r['n']}",
                 egg_ms=r["eggroll_median_s"] * 1e3, blas_ms=r["openblas_median_s"] * 1e3,
                 torch_ms=r["torch_median_s"] * 1e3 if "torch_median_s" in r else None,
                 pert_ms=r["perturbed_median_s"] * 1e3 if "perturbed_median_s" in r else None,
                 met="yes" if r["eggroll_over_openblas"] <= GEMM_TARGET else "NO",
                 flag="NOISY" if r["noisy"] else "")
            for r in recs]
    harness.table(rows, [("isa", "path"), ("shape", "x . W"), "threads",
                         ("egg_ms", "eggroll ms"), ("blas_ms", "OpenBLAS ms"),
                         ("openblas_core", "core"), ("torch_ms", "torch ms"),
                         ("eggroll_gflops", "eggroll GF/s"),
                         ("eggroll_over_openblas", "/OpenBLAS"),
                         ("met", f"<={GEMM_TARGET}"), ("eggroll_over_torch", "/torch"),
                         ("pert_ms", "perturbed ms"),
                         ("perturbed_over_openblas", f"pert/plain (<={PERTURBED_TARGET})"),
                         ("eggroll_over_openblas_cpu", "/OpenBLAS (CPU)"),
                         ("perturbed_over_openblas_cpu", "pert/plain (CPU)"),
                         ("flag", "")], title=title)
    print("  (CPU): medians of this thread's CPU time per call, one-thread rows only: the "
          "ratios to trust on a loaded machine", file=sys.stderr)


def headline_table(rec: dict[str, Any]) -> None:
    names = [("plain", "numpy x @ W.T  (baseline)"),
             ("plain_out", "numpy matmul(x, W.T, out=)"),
             ("perturbed", "eggroll.perturbed_matmul"),
             ("perturbed_out", "eggroll.perturbed_matmul(out=)"),
             ("perturbed_fw", "eggroll.perturbed_matmul(base='framework')"),
             ("full", "eggroll.perturbed_matmul_full"),
             ("idiom_rng", "idiom: np.random + einsum"),
             ("idiom_factors", "idiom: lowrank_factors + einsum")]
    rows = []
    for key, label in names:
        if f"{key}_median_s" not in rec:
            continue
        med = rec[f"{key}_median_s"]
        # Ratios to perturbed come from the group each was interleaved in (same run).
        ratio = rec.get(f"{key}_over_perturbed", med / rec["perturbed_median_s"])
        rows.append({"what": label, "median_ms": med * 1e3, "min_ms": rec[f"{key}_min_s"] * 1e3,
                     "runs": rec[f"{key}_n"], "gemm_gflops": harness.gflops(rec["gemm_flops"], med),
                     "x_perturbed": ratio, "noisy": "NOISY" if rec[f"{key}_noisy"] else ""})
    harness.table(rows, ["what", ("median_ms", "median ms"), ("min_ms", "min ms"), "runs",
                         ("gemm_gflops", "GFLOP/s*"), ("x_perturbed", "/perturbed"),
                         ("noisy", "")],
                  title=(f"headline: P={rec['P']}, x [{rec['P']}, {rec['n']}], W [{rec['m']}, "
                         f"{rec['n']}], r={rec['rank']}, antithetic, sigma {rec['sigma']}, "
                         f"eggroll threads {rec['threads']}, isa {rec['isa']}"))
    print("  * GFLOP/s = 2*M*b*m*n / time (base GEMM only). NOISY: median > "
          f"{harness.NOISY_SPREAD} x min after {harness.SETTLE_FACTOR} x the runs "
          "(another process was using the cores)", file=sys.stderr)
    ratios = [
        ("perturbed / plain", rec["perturbed_over_plain"], "<= 1.10"),
        ("perturbed_out / plain_out", rec["perturbed_out_over_plain_out"], "<= 1.10"),
        ("perturbed_fw / plain (base='framework')", rec["perturbed_fw_over_plain"], "<= 1.10"),
        ("full / perturbed", rec.get("full_over_perturbed"), ">= 100"),
        ("idiom_rng / perturbed", rec.get("idiom_rng_over_perturbed"), "> 1"),
        ("idiom_factors / perturbed", rec["idiom_factors_over_perturbed"], "> 1"),
    ]
    rows = []
    for label, v, target in ratios:
        op, thr = target.split()
        ok = None if v is None else (v <= float(thr) if op == "<=" else
                                     v >= float(thr) if op == ">=" else v > float(thr))
        rows.append({"ratio": label, "value": v, "target": target,
                     "met": None if ok is None else ("yes" if ok else "NO")})
    harness.table(rows, ["ratio", "value", "target", "met"], title="headline ratios (same run)")


def main() -> int:
    p = harness.parser(__doc__)
    isa_paths.add_argument(p)
    args = p.parse_args()
    isas = isa_paths.requested(args)
    if isa_paths.needs_children(args):
        recs = isa_paths.run_children(__file__, sys.argv[1:], isas)
        gemm_table([r for r in recs if r.get("kind") == "gemm"],
                   "base GEMM y = x W^T per SIMD path, each against OpenBLAS on the matching "
                   "kernel and torch (MKL) at the same thread count")
        return 0
    with harness.Session(args) as s:
        isa_paths.enter_child()
        run_threads = eggroll.get_num_threads()  # --threads, or the default
        slow = eggroll.get_isa() == "scalar"     # ~0.6 GFLOP/s: the GEMM rows' headline only
        shapes = GEMM_SHAPES[:1] if args.quick or slow else GEMM_SHAPES
        gemm = gemm_rows(s, shapes, sorted({1, 2} | ({args.threads} if args.threads else set())),
                         harness.MIN_REPEAT if slow else args.repeat, slow)
        if slow:
            gemm_table(gemm, "base GEMM (scalar path)")
            return 0
        eggroll.set_num_threads(run_threads)
        harness.log("headline ...")
        head = run_config(s, "perturb_headline", 512, 1, 1024, 1024, 1, with_full=True,
                          idiom_rng=True, repeat=args.repeat)
        sizes = (256,) if args.quick else (256, 1024)
        grid = []
        for size in sizes:
            for b in (1, 8):
                for r in (1, 4):
                    harness.log(f"grid P=512 b={b} m=n={size} r={r} ...")
                    # Full rank only where it stays cheap (m*n <= 256*256).
                    grid.append(run_config(s, "perturb_grid", 512, b, size, size, r,
                                           with_full=size <= 256, idiom_rng=False,
                                           repeat=args.repeat))
        gemm_table(gemm, f"base GEMM y = x W^T ({eggroll.get_isa()} path)")
        headline_table(head)
        rows = [dict(g, plain_ms=g["plain_median_s"] * 1e3, pert_ms=g["perturbed_median_s"] * 1e3,
                     pert_out_ms=g["perturbed_out_median_s"] * 1e3,
                     idiom_ms=g["idiom_factors_median_s"] * 1e3,
                     full_ms=g["full_median_s"] * 1e3 if "full_median_s" in g else None,
                     flag="NOISY" if g["noisy"] else "")
                for g in grid]
        harness.table(rows, ["P", "b", "m", "n", ("rank", "r"), ("plain_ms", "plain ms"),
                             ("pert_ms", "pert ms"), ("pert_out_ms", "pert(out) ms"),
                             ("idiom_ms", "idiom ms"), ("full_ms", "full ms"),
                             ("perturbed_over_plain", "pert/plain"),
                             ("perturbed_out_over_plain_out", "out/out"),
                             ("perturbed_fw_over_plain", "fw/plain"),
                             ("idiom_factors_over_perturbed", "idiom/pert"),
                             ("full_over_perturbed", "full/pert"),
                             ("plain_gflops", "plain GF/s"), ("perturbed_gflops", "pert GF/s"),
                             ("flag", "")],
                      title="grid (P=512 members, W [m, n], b rows per member; idiom = "
                            "lowrank_factors + einsum)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
