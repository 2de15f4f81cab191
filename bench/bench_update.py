"""Benchmark of the ES update: eggroll.es_gradient against a NumPy GEMM of the same shape,
the full-rank estimate and the NumPy einsum idiom over explicit factors.

Run:  PYTHONPATH=python python bench/bench_update.py [--quick] [--threads N]
      [--repeat R] [--jsonl out.jsonl]     (JSON lines on stdout, tables on stderr)

Headline configuration: es_gradient(fitness float32 [512], (1024, 1024),
epoch=0, seed, sigma=0.01), N = 512 members, rank 1, antithetic (256 folded pairs), fitness
already shaped by centered_rank. Every candidate is timed interleaved with its baseline in
the same run (median of >= 5).

Ratios (same-run medians):
  es_gradient/gemm      es_gradient / np.matmul of (m x N*r) @ (N*r x n) float32 - the one
                        GEMM the update is, over factors that eggroll regenerates (and,
                        antithetic, folds to N/2 columns first). Target <= 1.5.
  es_gradient/gemm_folded  the same against the folded GEMM (m x N*r/2) @ (N*r/2 x n) that
                        eggroll actually runs: what noise regeneration costs on top.
  full/es_gradient      es_gradient(full_rank=True) (regenerates N/2 full m x n noise
                        matrices) / the low-rank estimate: what low rank saves.
  einsum/es_gradient    the idiom a user writes: A, B = eggroll.lowrank_factors(...);
                        np.einsum('i,imr,inr->mn', f, A, B) / (N sigma) (plain einsum:
                        a C loop, no BLAS) / es_gradient. > 1 means eggroll is faster.
  einsum_opt/es_gradient   the same with einsum(..., optimize=True) (goes through BLAS).
Both idioms see the same noise as es_gradient, so their results are checked against it.

GFLOP/s use the unfolded GEMM: flops = 2 * m * n * N * r (folding antithetic pairs halves
the work eggroll really does; regenerating (m + n) * r * N/2 normals is not counted).
NumPy's BLAS picks its own thread count (OPENBLAS_NUM_THREADS); --threads sets eggroll's.
"""
from __future__ import annotations

import sys
from typing import Any, Callable

import numpy as np

import eggroll
from eggroll.bench import harness   # the shared harness ships in the package

SEED = 7
SIGMA = 0.01


def candidates(N: int, m: int, n: int, r: int, *, naive_einsum: bool
               ) -> tuple[dict[str, Callable[[], Any]], float]:
    """The callables for one configuration, and max |idiom - es_gradient| (a sanity check)."""
    rng = np.random.default_rng(N * 1000 + r)
    f = eggroll.centered_rank(rng.standard_normal(N))                     # float32 [N]
    a = rng.standard_normal((m, N * r), dtype=np.float32)                 # [m, N*r]
    bt = rng.standard_normal((N * r, n), dtype=np.float32)                # [N*r, n]
    af, btf = a[:, : N * r // 2].copy(), bt[: N * r // 2].copy()          # folded shapes
    kw = dict(epoch=0, seed=SEED, sigma=SIGMA, rank=r)
    inv = np.float32(1.0 / (N * SIGMA))

    def factors() -> tuple[np.ndarray, np.ndarray]:
        # A float32 [N, m, r] (scaled by s_i sigma / sqrt(r)), B float32 [N, n, r]
        return eggroll.lowrank_factors((m, n), members=range(N), **kw)

    def einsum_naive() -> np.ndarray:
        A, B = factors()
        return np.einsum("i,imr,inr->mn", f, A, B) * inv

    def einsum_opt() -> np.ndarray:
        A, B = factors()
        return np.einsum("i,imr,inr->mn", f, A, B, optimize=True) * inv

    fns: dict[str, Callable[[], Any]] = {
        "es_gradient": lambda: eggroll.es_gradient(f, (m, n), **kw),
        "gemm": lambda: a @ bt,
        "gemm_folded": lambda: af @ btf,
        "full": lambda: eggroll.es_gradient(f, (m, n), full_rank=True, epoch=0, seed=SEED,
                                            sigma=SIGMA),
        "einsum_opt": einsum_opt,
    }
    if naive_einsum:
        fns["einsum"] = einsum_naive
    g = fns["es_gradient"]()
    diff = float(np.max(np.abs(g - einsum_opt())))
    return fns, diff


def run_config(s: harness.Session, kind: str, N: int, m: int, n: int, r: int, *,
               with_full: bool, naive_einsum: bool, repeat: int) -> dict[str, Any]:
    fns, diff = candidates(N, m, n, r, naive_einsum=naive_einsum)
    flops = 2.0 * m * n * N * r                  # unfolded GEMM (m x N*r) @ (N*r x n)
    rec: dict[str, Any] = {"kind": kind, "N": N, "m": m, "n": n, "rank": r, "sigma": SIGMA,
                           "antithetic": True, "threads": eggroll.get_num_threads(),
                           "isa": eggroll.get_isa(), "gemm_flops": flops,
                           "einsum_opt_max_abs_diff": diff}
    # Group 1: es_gradient interleaved with the GEMMs of its shape, and the BLAS idiom.
    res = harness.measure_interleaved({k: fns[k] for k in ("es_gradient", "gemm", "gemm_folded",
                                                            "einsum_opt")},
                                      warmup=2, repeat=repeat, min_time=0.05)
    for name, mres in res.items():
        rec.update(harness.timing_fields(name, mres))
    eg = res["es_gradient"]["median_s"]
    rec["es_gradient_gflops"] = harness.gflops(flops, eg)
    rec["gemm_gflops"] = harness.gflops(flops, res["gemm"]["median_s"])
    rec["es_gradient_over_gemm"] = eg / res["gemm"]["median_s"]
    rec["es_gradient_over_gemm_folded"] = eg / res["gemm_folded"]["median_s"]
    rec["einsum_opt_over_es_gradient"] = res["einsum_opt"]["median_s"] / eg
    # Group 2: the slow ones (full rank, plain einsum), each paired with es_gradient, 5 runs.
    for slow in ("full",) * with_full + ("einsum",) * naive_einsum:
        sres = harness.measure_interleaved({"es_gradient": fns["es_gradient"], slow: fns[slow]},
                                           warmup=1, repeat=harness.MIN_REPEAT,
                                           max_rounds=harness.MIN_REPEAT)
        rec.update(harness.timing_fields(slow, sres[slow]))
        rec[f"{slow}_over_es_gradient"] = (sres[slow]["median_s"]
                                           / sres["es_gradient"]["median_s"])
    if naive_einsum:
        g_idiom = fns["einsum"]()
        rec["einsum_max_abs_diff"] = float(np.max(np.abs(g_idiom - fns["es_gradient"]())))
    rec["noisy"] = any(v for k, v in rec.items() if k.endswith("_noisy"))
    return s.emit(rec)


def headline_table(rec: dict[str, Any]) -> None:
    names = [("gemm", "numpy (m x N r) @ (N r x n)  (baseline)"),
             ("gemm_folded", "numpy folded (m x N r/2) @ (N r/2 x n)"),
             ("es_gradient", "eggroll.es_gradient"),
             ("full", "eggroll.es_gradient(full_rank=True)"),
             ("einsum", "idiom: lowrank_factors + einsum"),
             ("einsum_opt", "idiom: lowrank_factors + einsum(optimize)")]
    rows = []
    for key, label in names:
        if f"{key}_median_s" not in rec:
            continue
        med = rec[f"{key}_median_s"]
        ratio = rec.get(f"{key}_over_es_gradient", med / rec["es_gradient_median_s"])
        rows.append({"what": label, "median_ms": med * 1e3, "min_ms": rec[f"{key}_min_s"] * 1e3,
                     "runs": rec[f"{key}_n"], "gf": harness.gflops(rec["gemm_flops"], med),
                     "ratio": ratio, "noisy": "NOISY" if rec[f"{key}_noisy"] else ""})
    harness.table(rows, ["what", ("median_ms", "median ms"), ("min_ms", "min ms"), "runs",
                         ("gf", "GFLOP/s*"), ("ratio", "/es_gradient"), ("noisy", "")],
                  title=(f"headline: es_gradient(f [{rec['N']}], ({rec['m']}, {rec['n']})), "
                         f"N={rec['N']}, r={rec['rank']}, antithetic ({rec['N'] // 2} folded "
                         f"pairs), eggroll threads {rec['threads']}, isa {rec['isa']}"))
    print("  * GFLOP/s = 2*m*n*N*r / time (the unfolded GEMM). NOISY: median > "
          f"{harness.NOISY_SPREAD} x min after {harness.SETTLE_FACTOR} x the runs",
          file=sys.stderr)
    ratios = [("es_gradient / gemm", rec["es_gradient_over_gemm"], "<=", 1.5),
              ("es_gradient / gemm_folded", rec["es_gradient_over_gemm_folded"], None, None),
              ("full / es_gradient", rec.get("full_over_es_gradient"), ">", 1.0),
              ("einsum / es_gradient", rec.get("einsum_over_es_gradient"), ">", 1.0),
              ("einsum_opt / es_gradient", rec["einsum_opt_over_es_gradient"], ">", 1.0)]
    rows = []
    for label, v, op, thr in ratios:
        met = None
        if v is not None and op is not None:
            met = "yes" if (v <= thr if op == "<=" else v > thr) else "NO"
        rows.append({"ratio": label, "value": v,
                     "target": f"{op} {thr:g}" if op else "(info)", "met": met})
    harness.table(rows, ["ratio", "value", "target", "met"], title="headline ratios (same run)")


def main() -> int:
    args = harness.parser(__doc__).parse_args()
    with harness.Session(args) as s:
        harness.log("headline ...")
        head = run_config(s, "update_headline", 512, 1024, 1024, 1, with_full=True,
                          naive_einsum=True, repeat=args.repeat)
        # (N, r) pairs with N * r <= 2048 (N=2048, r=4 alone would take ~20 s here).
        pairs = ([(128, 1), (128, 4), (512, 1), (512, 4)] if args.quick else
                 [(128, 1), (128, 4), (512, 1), (512, 4), (2048, 1)])
        size = 256 if args.quick else 1024
        grid = []
        for N, r in pairs:
            harness.log(f"grid N={N} r={r} shape=({size}, {size}) ...")
            grid.append(run_config(s, "update_grid", N, size, size, r, with_full=False,
                                   naive_einsum=False, repeat=args.repeat))
        headline_table(head)
        rows = [dict(g, eg_ms=g["es_gradient_median_s"] * 1e3, gemm_ms=g["gemm_median_s"] * 1e3,
                     fold_ms=g["gemm_folded_median_s"] * 1e3,
                     opt_ms=g["einsum_opt_median_s"] * 1e3, flag="NOISY" if g["noisy"] else "")
                for g in grid]
        harness.table(rows, ["N", "m", "n", ("rank", "r"), ("eg_ms", "es_grad ms"),
                             ("gemm_ms", "gemm ms"), ("fold_ms", "folded ms"),
                             ("opt_ms", "einsum_opt ms"), ("es_gradient_over_gemm", "eg/gemm"),
                             ("es_gradient_over_gemm_folded", "eg/folded"),
                             ("einsum_opt_over_es_gradient", "opt/eg"),
                             ("es_gradient_gflops", "eg GF/s"), ("gemm_gflops", "gemm GF/s"),
                             ("flag", "")],
                      title="grid (fitness [N], gradient [m, n]; gemm = (m x N r) @ (N r x n))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
