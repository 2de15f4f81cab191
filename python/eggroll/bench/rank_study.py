"""Rank study: the low-rank ES update converges to the full-rank (Gaussian) one like 1/r.

EGGROLL perturbs a matrix by E = sigma A B^T / sqrt(r) instead of sigma Z (Z Gaussian). The
paper shows that the low-rank ES gradient converges to the full-rank one at rate O(1/r). This
study measures it with ``eggroll.perturbed_matmul`` + ``eggroll.es_gradient`` for
r = 1, 2, 4, ..., 64 and plots the relative error against r on log-log axes, with the fitted
line, a 1/r reference and a 1/sqrt(r) one for contrast.

The construction (the same ideas as ``tests/test_update.py``'s rank test, written out here as
a reusable study):

* Objective, fixed and bounded, of the normalised perturbation Z = E / sigma of a W [m, n]:
  ``F(Z) = tanh(alpha <C, Z>) + gamma cos(<D, Z>)`` with C = u v^T (|C|_F = 1) and
  D = w v^T (w orthogonal to u). Its value for each member comes from a real forward pass:
  every member sees the input x_i = v and W = 0, so ``y_i = perturbed_matmul(x, W)_i = E_i v``
  and <C, Z_i> = u . y_i / sigma, <D, Z_i> = w . y_i / sigma.
* Target: what es_gradient estimates, G = E[F(Z) Z] (it returns (1/(N sigma)) sum f_i E_i =
  (1/N) sum f_i Z_i). The even cos term cancels exactly in antithetic pairs. For the tanh term,
  both noise laws are invariant under Z -> U Z V^T (U, V orthogonal), so G = lam C with
  lam = E[tanh(alpha xi) xi], xi = <C, Z>: a standard normal under the Gaussian (full-rank) law,
  and xi_r = r^-1/2 sum_l a_l b_l under the rank-r law, which given B is N(0, s) with
  s ~ chi^2_r / r. Both lam_inf and lam_r are computed to ~1e-12 by Gauss-Hermite x generalised
  Gauss-Laguerre quadrature (no SciPy needed): the "exact" curve of the plot. Since xi_r has
  vanishing odd cumulants and fourth cumulant 6/r, lam_r - lam_inf = O(1/r), not the CLT's
  O(1/sqrt(r)).
* Measured error: |G_hat_r - G_inf|_F / |G_inf|_F, G_inf = lam_inf C, with G_hat_r the
  Monte-Carlo estimate from es_gradient at population N (2^18 quick, 2^21 full, evaluated in
  chunks of 2^18 members of ONE population, as a population split over calls).
* Variance reduction (control variates): es_gradient is linear in the fitness and, for every
  law with unit covariance and invariance, E[xi Z] = C and E[xi^3 Z] = E[xi^4] C with
  E[xi_r^4] = 3 + 6/r (3 for the Gaussian) exactly. So es_gradient(F - b1 xi - b3 xi^3)
  + (b1 + b3 E[xi^4]) C is an unbiased estimate of G with a much smaller variance
  (b1, b3: least squares of tanh(alpha xi) on (xi, xi^3) under that rank's law). The full-rank
  estimate with the same N gives the remaining Monte-Carlo noise level (the "noise floor").

Run: ``python -m eggroll.bench.rank_study [--quick] [--out DIR]`` (quick <= 15 s, full <= 90 s
on the 2-core VM); ``eggroll bench --rank-study`` runs it through the bench CLI.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import eggroll

__all__ = ["run", "summary_markdown", "exact_lambda", "estimate", "RANKS"]

RANKS = (1, 2, 4, 8, 16, 32, 64)
M, N_IN = 3, 4                  # W [M, N_IN]
SIGMA = 0.1
ALPHA = 0.5                     # tanh(alpha <C, Z>): the odd, rank-sensitive part
GAMMA = 0.5                     # gamma cos(<D, Z>): an even part (cancels in antithetic pairs)
SEED = 2025
CHUNK = 1 << 18                 # members per call
POP_QUICK = 1 << 18
POP_FULL = 1 << 21

_HERMITE = np.polynomial.hermite_e.hermegauss(201)
LAGUERRE_NODES = 96             # lam_r to ~1e-11 for r = 1..64 (checked against 200 nodes)


# --------------------------------------------------------------------------------------------
# The exact values (quadrature)
# --------------------------------------------------------------------------------------------

def _gen_laguerre(a: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and normalised weights of generalised Gauss-Laguerre quadrature (weight
    t^a e^-t on [0, inf)), by Golub-Welsch."""
    k = np.arange(n, dtype=np.float64)
    off = np.sqrt(np.arange(1, n) * (np.arange(1, n) + a))
    J = np.diag(2 * k + a + 1) + np.diag(off, 1) + np.diag(off, -1)
    t, V = np.linalg.eigh(J)
    w = V[0] ** 2
    return t, w / w.sum()


@functools.lru_cache(maxsize=None)
def _law(rank: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Quadrature nodes and weights for xi = <C, Z>: Gaussian (rank None) or the rank-r law
    xi = sqrt(s) * g, g ~ N(0, 1), s ~ chi^2_r / r = Gamma(r/2, scale 2/r)."""
    x, w = _HERMITE
    w = w / w.sum()
    if rank is not None:
        t, wt = _gen_laguerre(rank / 2 - 1, LAGUERRE_NODES)
        s = t * (2.0 / rank)
        x = (np.sqrt(s)[:, None] * x[None, :]).ravel()
        w = (wt[:, None] * w[None, :]).ravel()
    x, w = x.copy(), w.copy()
    x.setflags(write=False)             # cached: shared by every caller
    w.setflags(write=False)
    return x, w


def exact_lambda(rank: int | None, alpha: float = ALPHA) -> float:
    """lam = E[tanh(alpha xi) xi] under the rank-r law (rank None: Gaussian), G = lam C."""
    xi, w = _law(rank)
    return float(np.sum(w * np.tanh(alpha * xi) * xi))


def _control_coefficients(rank: int | None, alpha: float) -> tuple[float, float, float]:
    """(b1, b3, E[xi^4]): least squares of tanh(alpha xi) on (xi, xi^3) under the law."""
    xi, w = _law(rank)
    Phi = np.stack([xi, xi ** 3], axis=1)
    b = np.linalg.solve(Phi.T @ (Phi * w[:, None]), Phi.T @ (w * np.tanh(alpha * xi)))
    mu4 = 3.0 if rank is None else 3.0 + 6.0 / rank
    return float(b[0]), float(b[1]), mu4


# --------------------------------------------------------------------------------------------
# The Monte-Carlo estimate through eggroll
# --------------------------------------------------------------------------------------------

def _directions() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fixed unit vectors u [M], v [N_IN], w [M] (w orthogonal to u)."""
    rng = np.random.default_rng(1234)
    u = rng.standard_normal(M)
    u /= np.linalg.norm(u)
    v = rng.standard_normal(N_IN)
    v /= np.linalg.norm(v)
    w = rng.standard_normal(M)
    w -= (w @ u) * u
    w /= np.linalg.norm(w)
    return u, v, w


def estimate(rank: int | None, population: int, *, alpha: float = ALPHA, gamma: float = GAMMA,
             seed: int = SEED, chunk: int = CHUNK) -> np.ndarray:
    """The control-variate ES gradient estimate [M, N_IN] (float64) of E[F(Z) Z] at this rank
    (None: full rank), from perturbed_matmul(_full) + es_gradient over `population` members
    evaluated in chunks (one population split over calls; es_gradient is a mean, so the
    population's estimate is the mean of the equal-size chunks' estimates)."""
    if population % chunk:
        chunk = population
    u, v, w = _directions()
    C = np.outer(u, v)
    b1, b3, mu4 = _control_coefficients(rank, alpha)
    x = np.broadcast_to(v.astype(np.float32), (chunk, N_IN)).copy()
    W = np.zeros((M, N_IN), np.float32)
    key = dict(epoch=0, seed=seed, sigma=SIGMA)
    total = np.zeros((M, N_IN))
    for start in range(0, population, chunk):
        members = range(start, start + chunk)
        if rank is None:
            y = eggroll.perturbed_matmul_full(x, W, members=members, **key)
        else:
            y = eggroll.perturbed_matmul(x, W, members=members, rank=rank, **key)
        Zv = y.astype(np.float64) / SIGMA                      # Z_i v, [chunk, M]
        xi = Zv @ u                                            # <C, Z_i>
        F = np.tanh(alpha * xi) + gamma * np.cos(Zv @ w)       # the objective
        f = (F - b1 * xi - b3 * xi ** 3).astype(np.float32)    # minus the control variates
        g = eggroll.es_gradient(f, (M, N_IN), members=members, rank=rank or 1,
                                full_rank=rank is None, **key)
        total += g.astype(np.float64)
    return total / (population // chunk) + (b1 + b3 * mu4) * C


# --------------------------------------------------------------------------------------------
# run / plot / summary
# --------------------------------------------------------------------------------------------

def run(out_dir: Path, quick: bool, *, ranks: tuple[int, ...] = RANKS,
        population: int | None = None, log: Any = None) -> list[dict[str, Any]]:
    """Measure the relative error per rank, write out_dir/rank_study.png, return records
    (one per rank, plus one for the full-rank estimate: the Monte-Carlo noise floor)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    say = log if log is not None else (lambda s: print(s, file=sys.stderr, flush=True))
    N = int(population or (POP_QUICK if quick else POP_FULL))
    u, v, _ = _directions()
    C = np.outer(u, v)
    lam_inf = exact_lambda(None)
    G_inf = lam_inf * C
    norm = float(np.linalg.norm(G_inf))
    records: list[dict[str, Any]] = []
    for rank in tuple(ranks) + (None,):
        t0 = time.perf_counter()
        G = estimate(rank, N)
        secs = time.perf_counter() - t0
        lam_r = exact_lambda(rank)
        rec = {
            "kind": "rank_study", "method": "full_rank" if rank is None else "lowrank",
            "rank": rank, "population": N, "m": M, "n": N_IN, "sigma": SIGMA,
            "alpha": ALPHA, "gamma": GAMMA,
            "rel_error": float(np.linalg.norm(G - G_inf)) / norm,
            "exact_rel_error": abs(lam_r - lam_inf) / norm,
            "mc_noise_rel": float(np.linalg.norm(G - lam_r * C)) / norm,
            "seconds": secs,
        }
        records.append(rec)
        say(f"rank_study: {'full' if rank is None else f'r = {rank}':>7s}  rel. error "
            f"{rec['rel_error']:.3e}  (exact {rec['exact_rel_error']:.3e})  {secs:.1f} s")
    low = [r for r in records if r["method"] == "lowrank"]
    lr = np.log([r["rank"] for r in low])
    slope, intercept = np.polyfit(lr, np.log([r["rel_error"] for r in low]), 1)
    slope_exact = np.polyfit(lr, np.log([r["exact_rel_error"] for r in low]), 1)[0]
    for rec in records:
        rec.update(slope=float(slope), intercept=float(intercept),
                   slope_exact=float(slope_exact))
    plot = _plot(records, out_dir / "rank_study.png")
    for rec in records:
        rec["plot"] = plot
    return records


def _plot(records: list[dict[str, Any]], path: Path) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    low = [r for r in records if r["method"] == "lowrank"]
    full = [r for r in records if r["method"] == "full_rank"]
    r = np.array([x["rank"] for x in low], dtype=float)
    err = np.array([x["rel_error"] for x in low])
    slope, intercept = low[0]["slope"], low[0]["intercept"]
    fig, ax = plt.subplots(figsize=(7.0, 4.8))
    rr = np.geomspace(r.min(), r.max(), 50)
    ax.plot(rr, err[0] / rr, color="black", ls="--", lw=1,
            label="O(1/r) reference (paper), through r = 1")
    ax.plot(rr, err[0] / np.sqrt(rr), color="grey", ls=":", lw=1.2,
            label="O(1/sqrt(r)) for contrast")
    ax.plot(rr, np.exp(intercept) * rr ** slope, color="tab:orange", lw=1.5,
            label=f"fit: slope {slope:.2f}")
    ax.plot(r, [x["exact_rel_error"] for x in low], color="tab:blue", lw=0, marker="_", ms=14,
            mew=2, label="exact bias (quadrature)")
    ax.plot(r, err, "o", color="tab:green", ms=7,
            label=f"measured: eggroll.es_gradient, N = 2^{int(math.log2(low[0]['population']))}")
    if full:
        ax.axhline(full[0]["rel_error"], color="tab:red", lw=1, ls="-.",
                   label="full-rank estimate, same N (Monte-Carlo noise)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("rank r")
    ax.set_ylabel("|G_r - G_full|_F / |G_full|_F")
    ax.set_title("Low-rank ES gradient -> full-rank gradient as the rank grows")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return str(path)


def summary_markdown(records: list[dict[str, Any]]) -> str:
    """A markdown table (error per rank) and a one-paragraph conclusion."""
    recs = [r for r in records if r.get("kind") == "rank_study"]
    low = [r for r in recs if r["method"] == "lowrank"]
    full = [r for r in recs if r["method"] == "full_rank"]
    if not low:
        return "(no rank-study records)\n"
    N = low[0]["population"]
    lines = [f"Relative error of the low-rank ES gradient against the full-rank (Gaussian) one, "
             f"W [{low[0]['m']}, {low[0]['n']}], N = {N} members, bounded objective "
             "(measured with eggroll; exact values by quadrature):", "",
             "| rank r | measured error | exact bias | error x r |", "|---|---|---|---|"]
    for r in low:
        lines.append(f"| {r['rank']} | {r['rel_error']:.2e} | {r['exact_rel_error']:.2e} | "
                     f"{r['rel_error'] * r['rank']:.3f} |")
    if full:
        lines.append(f"| full rank | {full[0]['rel_error']:.2e} | 0 | — |")
    s, se = low[0]["slope"], low[0]["slope_exact"]
    floor = (f" The full-rank estimate with the same population misses its target by "
             f"{full[0]['rel_error']:.1e}, the Monte-Carlo noise left after the control "
             f"variates, {low[-1]['rel_error'] / full[0]['rel_error']:.0f} x below the smallest "
             "low-rank error measured." if full else "")
    lines += ["", f"The error falls with a fitted log-log slope of **{s:.2f}** over r = "
              f"{low[0]['rank']}..{low[-1]['rank']} (the exact bias: {se:.2f}), i.e. like the "
              f"paper's O(1/r), not the O(1/sqrt(r)) (slope -0.5) a central-limit argument "
              f"would suggest: the rank-r perturbation's projection is a sum of r symmetric "
              f"terms, so its third cumulant vanishes and the first departure from the "
              f"Gaussian is the fourth cumulant, 6/r."
              + (" The slope is a little shallower than -1 because at small r the O(1/r^2) "
                 "terms still count (error x r still grows from r = 1 to 8)." if se > -1 else "")
              + floor]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m eggroll.bench.rank_study",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"N = {POP_QUICK} (<= 15 s)")
    ap.add_argument("--out", type=Path, default=Path("eggroll-bench"),
                    help="directory for rank_study.png and rank_study.json")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    records = run(args.out, args.quick)
    (args.out / "rank_study.json").write_text(json.dumps(records, indent=1) + "\n")
    print(summary_markdown(records))
    plot = records[0]["plot"] if records else None
    print(f"plot: {plot or 'not written (matplotlib missing)'}; records: "
          f"{args.out / 'rank_study.json'}; {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
