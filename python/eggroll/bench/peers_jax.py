"""eggroll's JAX FFI forward and update against the JAX idiom of the official EGGROLL code and
plain ``x @ W.T``, all jitted, same run.

Run:  PYTHONPATH=python python bench/bench_peers.py --backend jax [--quick] [--repeat R]
      [--threads N] [--jsonl out.jsonl]      (JSON lines on stdout, tables on stderr)

Headline: P = 512 members, x float32 [512, 1024] (one row per member),
W float32 [1024, 1024], rank 1, antithetic, sigma 0.01.

Candidates (each a jitted function; the timed call ends with block_until_ready):
  forward
    plain        x @ W.T                                      (the GEMM every population needs)
    eggroll      eggroll.perturbed_matmul(x, W, members=arange(P), epoch=e, ...) via XLA FFI
    idiom        the official code's way: per member i, key = fold_in(fold_in(key, epoch),
                 i // 2), factors = jax.random.normal(key, (m + n, r)) split into B [n, r] and
                 A [m, r], y_i = x_i @ W.T + s_i sigma/sqrt(r) (x_i @ B) @ A.T, under
                 jax.vmap over members, jitted
  update (fitness f [P] already shaped)
    gemm         (m x P) @ (P x n): the GEMM an update is at least
    eggroll      eggroll.es_gradient(f, (m, n), epoch=e, ...) via XLA FFI
    idiom        the same per-member factors regenerated with jax.random under vmap, then
                 jnp.einsum("i,imr,inr->mn", f s / (N sqrt r), A, B)
Ratios are same-run medians: idiom / eggroll > 1 means eggroll is faster.
XLA's CPU thread pool and eggroll's pool both use every core (--threads sets eggroll's).
"""
from __future__ import annotations

import math
import sys
from typing import Any, Callable

import numpy as np

from eggroll.bench import harness

SEED = 42
SIGMA = 0.01


def _jax() -> Any:
    import jax
    return jax


def make_fns(P: int, m: int, n: int, r: int) -> tuple[dict[str, Callable[[], Any]],
                                                         dict[str, Callable[[], Any]], dict]:
    """(forward candidates, update candidates, info) for one configuration; every callable
    runs its jitted function once and blocks until the result is ready."""
    jax = _jax()
    import jax.numpy as jnp

    import eggroll
    import eggroll.jax  # noqa: F401  (registers the FFI handlers; lowrank_factors below)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((P, n), dtype=np.float32))
    W = jnp.asarray(rng.standard_normal((m, n), dtype=np.float32) / np.float32(math.sqrt(n)))
    f = jnp.asarray(eggroll.centered_rank(rng.standard_normal(P).astype(np.float32)))
    members = jnp.arange(P)
    epoch = jnp.int32(3)
    base_key = jax.random.key(SEED)
    scale = SIGMA / math.sqrt(r)

    def factors(i: Any, epoch: Any) -> tuple[Any, Any]:
        # The official code's per-member noise: one jax.random draw per antithetic pair.
        k = jax.random.fold_in(jax.random.fold_in(base_key, epoch), i // 2)
        z = jax.random.normal(k, (m + n, r), dtype=jnp.float32)
        return z[n:], z[:n]                                          # A [m, r], B [n, r]

    def idiom_member(x_i: Any, i: Any, W: Any, epoch: Any) -> Any:
        A, B = factors(i, epoch)
        s = jnp.where(i % 2 == 0, 1.0, -1.0).astype(jnp.float32)
        return x_i @ W.T + (s * scale) * ((x_i @ B) @ A.T)

    plain = jax.jit(lambda x, W: x @ W.T)
    egg = jax.jit(lambda x, W, e: eggroll.perturbed_matmul(
        x, W, members=members, epoch=e, seed=SEED, sigma=SIGMA, rank=r))
    idiom = jax.jit(jax.vmap(idiom_member, in_axes=(0, 0, None, None)))

    def idiom_update(f: Any, epoch: Any) -> Any:
        A, B = jax.vmap(factors, in_axes=(0, None))(members, epoch)  # [P, m, r], [P, n, r]
        s = jnp.where(members % 2 == 0, 1.0, -1.0).astype(jnp.float32)
        return jnp.einsum("i,imr,inr->mn", f * s / (P * math.sqrt(r)), A, B)

    Ft = jnp.asarray(rng.standard_normal((m, P), dtype=np.float32))
    Fn = jnp.asarray(rng.standard_normal((P, n), dtype=np.float32))
    gemm = jax.jit(lambda a, b: a @ b)
    egg_upd = jax.jit(lambda f, e: eggroll.es_gradient(f, (m, n), epoch=e, seed=SEED,
                                                       sigma=SIGMA, rank=r))
    idiom_upd = jax.jit(idiom_update)

    fwd = {"plain": lambda: plain(x, W).block_until_ready(),
           "eggroll": lambda: egg(x, W, epoch).block_until_ready(),
           "idiom": lambda: idiom(x, members, W, epoch).block_until_ready()}
    upd = {"gemm": lambda: gemm(Ft, Fn).block_until_ready(),
           "eggroll": lambda: egg_upd(f, epoch).block_until_ready(),
           "idiom": lambda: idiom_upd(f, epoch).block_until_ready()}
    # Sanity: the idiom on eggroll's own factors must give eggroll's forward (same maths).
    A, B = eggroll.jax.lowrank_factors((m, n), members=range(P), epoch=3, seed=SEED,
                                       sigma=SIGMA, rank=r)
    y_idiom = x @ W.T + jnp.einsum("pr,pmr->pm", jnp.einsum("pn,pnr->pr", x, B), A)
    diff = float(jnp.max(jnp.abs(egg(x, W, epoch) - y_idiom)))
    return fwd, upd, {"check_max_abs_diff": diff}


def run_config(s: harness.Session, P: int, m: int, n: int, r: int, repeat: int) -> dict:
    fwd, upd, info = make_fns(P, m, n, r)
    rec: dict[str, Any] = {"kind": "peers_jax", "P": P, "m": m, "n": n, "rank": r,
                           "sigma": SIGMA, "antithetic": True, "jax": _jax().__version__,
                           **info}
    for group, fns, base in (("forward", fwd, "plain"), ("update", upd, "gemm")):
        res = harness.measure_interleaved(fns, warmup=2, repeat=repeat, min_time=0.05)
        for name, mres in res.items():
            rec.update(harness.timing_fields(f"{group}_{name}", mres))
        med = {k: v["median_s"] for k, v in res.items()}
        rec[f"{group}_idiom_over_eggroll"] = med["idiom"] / med["eggroll"]
        rec[f"{group}_eggroll_over_{base}"] = med["eggroll"] / med[base]
        rec[f"{group}_idiom_over_{base}"] = med["idiom"] / med[base]
    rec["noisy"] = any(v for k, v in rec.items() if k.endswith("_noisy"))
    return s.emit(rec)


def main(argv: list[str] | None = None) -> int:
    p = harness.parser(__doc__)
    args = p.parse_args(argv)
    with harness.Session(args) as s:
        configs = [(512, 1024, 1024, 1)] if args.quick else [
            (512, 1024, 1024, 1), (512, 1024, 1024, 4), (512, 256, 256, 1), (2048, 256, 256, 1)]
        recs = []
        for P, m, n, r in configs:
            harness.log(f"jax peers P={P} W [{m}, {n}] r={r} ...")
            recs.append(run_config(s, P, m, n, r, args.repeat))
        rows = []
        for rec in recs:
            for group, base in (("forward", "plain"), ("update", "gemm")):
                rows.append({
                    "config": f"P={rec['P']} {rec['m']}x{rec['n']} r={rec['rank']}",
                    "op": group, "base_ms": rec[f"{group}_{base}_median_s"] * 1e3,
                    "eggroll_ms": rec[f"{group}_eggroll_median_s"] * 1e3,
                    "idiom_ms": rec[f"{group}_idiom_median_s"] * 1e3,
                    "idiom_x": rec[f"{group}_idiom_over_eggroll"],
                    "egg_over_base": rec[f"{group}_eggroll_over_{base}"],
                    "flag": "NOISY" if rec["noisy"] else ""})
        harness.table(rows, ["config", "op", ("base_ms", "plain/gemm ms"),
                             ("eggroll_ms", "eggroll ms"), ("idiom_ms", "idiom ms"),
                             ("idiom_x", "idiom/eggroll"), ("egg_over_base", "eggroll/base"),
                             ("flag", "")],
                      title=f"eggroll (XLA FFI) vs the JAX idiom, jax {_jax().__version__} "
                            "(forward base: jitted x @ W.T; update base: (m x P) @ (P x n))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
