"""Per-call overhead of the ops at a tiny shape, where the call costs more than the arithmetic:
eggroll.perturbed_matmul against the framework's own x @ W.T, on NumPy, torch (CPU) and JAX
(CPU; eager against eager, jitted against jitted).

Run:  PYTHONPATH=python python bench/bench_overhead.py [--repeat R] [--number N] [--jsonl out]
      (JSON lines on stdout, the table on stderr; ~20 s)

The framework modules' functions are called (eggroll.torch.perturbed_matmul,
eggroll.jax.perturbed_matmul: the names every version has), so the script also measures
an older checkout: PYTHONPATH=<old checkout>/python python bench/bench_overhead.py.

Configuration: P = 8 members, x float32 [8, 64], W float32 [64, 64], rank 1, antithetic,
members=range(8), epoch 0, sigma 0.01 - one call at a time, results used (JAX: blocked on).
Every candidate is timed in the same run, interleaved: each of `repeat` rounds times `number`
back-to-back calls of every candidate in turn; a candidate's figure is its best round's mean
per call (the minimum is the least disturbed by other work on a shared machine).
--clock cpu times with the calling thread's CPU time instead of the wall clock: on a loaded
machine it leaves out the time the thread waits for a core (it also leaves out work on other
threads: fine at this size, where every candidate runs on the calling thread).

Ratio: eggroll / framework = perturbed_matmul's time per call / x @ W.T's. Target <= 1.5 on
every framework (the arithmetic of the correction is ~1/3 of the product's at this size).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import timeit
from typing import Any, Callable

import numpy as np

import eggroll
from eggroll.bench import harness

P, N_IN, M_OUT = 8, 64, 64
KEY = dict(members=range(P), epoch=0, seed=42, sigma=0.01)


def candidates() -> dict[str, dict[str, Callable[[], Any]]]:
    """framework -> {"framework": its x @ W.T, "eggroll": eggroll.perturbed_matmul}."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((P, N_IN)).astype(np.float32)
    W = (rng.standard_normal((M_OUT, N_IN)) / 8).astype(np.float32)
    out = {"numpy": {"framework": lambda: x @ W.T,
                     "eggroll": lambda: eggroll.perturbed_matmul(x, W, **KEY)}}
    try:
        import torch
        xt, Wt = torch.from_numpy(x), torch.from_numpy(W)
        import eggroll.torch as et
        out["torch"] = {"framework": lambda: xt @ Wt.T,
                        "eggroll": lambda: et.perturbed_matmul(xt, Wt, **KEY)}
    except ImportError:
        harness.log("torch not installed: skipped")
    try:
        import jax
        import jax.numpy as jnp
        import eggroll.jax as ej
        cpu = jax.devices("cpu")[0]
        xj, Wj = jax.device_put(x, cpu), jax.device_put(W, cpu)
        mm = jax.jit(lambda x, W: x @ W.T)
        eg = jax.jit(lambda x, W: ej.perturbed_matmul(x, W, **KEY))
        out["jax-eager"] = {
            "framework": lambda: (xj @ Wj.T).block_until_ready(),
            "eggroll": lambda: ej.perturbed_matmul(xj, Wj, **KEY).block_until_ready()}
        out["jax-jit"] = {"framework": lambda: mm(xj, Wj).block_until_ready(),
                          "eggroll": lambda: eg(xj, Wj).block_until_ready()}
        del jnp
    except ImportError:
        harness.log("jax not installed: skipped")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7, help="rounds (default 7)")
    ap.add_argument("--number", type=int, default=2000, help="calls per round (default 2000; "
                    "JAX candidates make a tenth)")
    ap.add_argument("--jsonl", default=None, help="also append the JSON lines to this file")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall clock (default) or the calling thread's CPU time")
    args = ap.parse_args(argv)
    info = harness.machine_info()
    harness.print_machine(info)
    groups = candidates()
    timer = time.perf_counter if args.clock == "wall" else time.thread_time
    best: dict[tuple[str, str], float] = {}
    for fw, fns in groups.items():            # warm-up: first calls compile / allocate
        for fn in fns.values():
            for _ in range(20):
                fn()
    for _ in range(args.repeat):
        for fw, fns in groups.items():
            n = max(1, args.number // (10 if fw.startswith("jax") else 1))
            for name, fn in fns.items():
                t = timeit.Timer(fn, timer=timer).timeit(number=n) / n
                best[fw, name] = min(best.get((fw, name), float("inf")), t)
    records = []
    for fw in groups:
        rec = {"bench": "overhead", "framework": fw, "P": P, "n": N_IN, "m": M_OUT, "rank": 1,
               "framework_us": best[fw, "framework"] * 1e6, "eggroll_us": best[fw, "eggroll"] * 1e6,
               "ratio": best[fw, "eggroll"] / best[fw, "framework"], "target": 1.5,
               "clock": args.clock, "loadavg": info.get("loadavg")}
        records.append(rec)
        line = json.dumps(rec)
        print(line)
        if args.jsonl:
            with open(args.jsonl, "a") as f:
                f.write(line + "\n")
    harness.table(records, [("framework", "framework"), ("framework_us", "x @ W.T us"),
                            ("eggroll_us", "eggroll us"), ("ratio", "eggroll / x@W.T"),
                            ("target", "target")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
