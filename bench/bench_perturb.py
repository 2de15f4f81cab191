"""Benchmark of the perturbed forward: eggroll.perturbed_matmul against NumPy's plain GEMM,
the full-rank baseline and the NumPy idiom a user would write for low rank.

Run:  PYTHONPATH=python python bench/bench_perturb.py [--quick] [--threads N]
      [--repeat R] [--jsonl out.jsonl]     (JSON lines on stdout, tables on stderr)

Headline configuration: P = 512 members, x float32 [512, 1024] (one row per
member), W float32 [1024, 1024], rank 1, antithetic, sigma 0.01, members=range(512).
Every candidate is timed interleaved with its baseline in the same run (median of >= 5).

Ratios (same-run medians):
  perturbed/plain       perturbed_matmul(x, W, ...) / (x @ W.T): the whole price of the
                        per-member low-rank correction on top of the GEMM every population
                        needs anyway. Target <= 1.10.
  perturbed_out/plain_out  the same with a preallocated out= on both sides
                        (np.matmul(x, W.T, out=y)), which takes allocation out of both.
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
import sys
from typing import Any, Callable

import numpy as np

import eggroll
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
                                                            "perturbed_out")},
                                      warmup=2, repeat=repeat, min_time=0.05)
    for name, mres in res.items():
        rec.update(harness.timing_fields(name, mres))
    med = {name: mres["median_s"] for name, mres in res.items()}
    rec["plain_gflops"] = harness.gflops(flops, med["plain"])
    rec["perturbed_gflops"] = harness.gflops(flops, med["perturbed"])
    rec["perturbed_out_gflops"] = harness.gflops(flops, med["perturbed_out"])
    rec["perturbed_over_plain"] = med["perturbed"] / med["plain"]
    rec["perturbed_out_over_plain_out"] = med["perturbed_out"] / med["plain_out"]
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


def headline_table(rec: dict[str, Any]) -> None:
    names = [("plain", "numpy x @ W.T  (baseline)"),
             ("plain_out", "numpy matmul(x, W.T, out=)"),
             ("perturbed", "eggroll.perturbed_matmul"),
             ("perturbed_out", "eggroll.perturbed_matmul(out=)"),
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
    args = p.parse_args()
    with harness.Session(args) as s:
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
                             ("idiom_factors_over_perturbed", "idiom/pert"),
                             ("full_over_perturbed", "full/pert"),
                             ("plain_gflops", "plain GF/s"), ("perturbed_gflops", "pert GF/s"),
                             ("flag", "")],
                      title="grid (P=512 members, W [m, n], b rows per member; idiom = "
                            "lowrank_factors + einsum)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
