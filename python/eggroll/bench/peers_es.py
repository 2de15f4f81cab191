"""The ES peer benchmark: one task, every eggroll trainer against the ES libraries a user
would otherwise pick, same settings, same data, same machine, one process.

Run:  PYTHONPATH=python python bench/bench_peers.py --backend es [--quick] [--budget S]
      [--widths 256,1024,4096] [--inputs shared,per-member] [--only NAME,...]
      [--out DIR] [--jsonl out.jsonl]      (JSON lines on stdout, tables on stderr)
Needs: pip install ".[peers]" (torch, jax, optax, evosax, evotorch, scikit-learn); a
missing library removes its rows (reported).

Task (the same for every candidate; peers_es_candidates.py lists them and how each is
written): MLP 64 -> width (tanh) -> 10 on scikit-learn's digits (1347 train / 450 test),
population 512, antithetic pairs, rank 1 where the method is low rank, sigma 0.05, Adam with
lr 0.02, centered-rank fitness shaping, fitness = minus the mean cross-entropy on the
member's minibatch of 256 rows; the same initial weights and minibatch sequence for all.
Inputs: `shared` (one minibatch [256, 64] for the whole population) or `per-member`
(x [512, 256, 64]: every member its own rows). Widths 256, 1024, 4096.

What is measured, per (width, inputs):
* time per generation: every candidate first runs 2 untimed generations (compilation,
  warm-up), then the candidates take turns, one generation each, the order reversed every
  round, until each has spent --budget seconds in timed generations (at least 5 of them):
  the median and minimum of its generation times. A turn's timer covers the whole generation
  (ask, forward, fitness, estimate, optimiser) and ends when the work is done
  (block_until_ready under JAX); converting the minibatch into the framework is not timed.
* test accuracy after the budget: the mean model's accuracy on the 450 test images after the
  2 warm-up generations and the budget's generations (the same NumPy evaluation for all).
* peak memory: in a fresh process per candidate (so nothing another framework allocated
  counts), the resident set once its libraries and the data are loaded is the baseline;
  the process's peak (VmHWM) over building the candidate and 4 generations (compilation
  included) minus the baseline is what training needs ("train MiB"; after a warm-up the
  peak cannot be measured alone: JAX's allocator keeps its buffers resident between steps,
  NumPy's returns them); "process MiB" is the whole peak, libraries included.
* other_load_cores: the CPU other processes used while the timing ran (the machine is
  shared: a config with other load is flagged NOISY, as in eggroll bench).
Ratios: time / the fastest peer's time (peers: jax-idiom, evosax, evotorch), and / eggroll-numpy.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import pathlib
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eggroll.bench import harness
from eggroll.bench.memory import proc_status_bytes
from eggroll.bench.peers_es_candidates import CLASSES, NAMES, NEEDS

PEERS = ("jax-idiom", "evosax", "evotorch")
EGGROLL = ("eggroll-numpy", "eggroll-torch", "eggroll-jax")
WARMUP = 2
MIN_STEPS = 5
CHILD_TIMEOUT_S = 900
OTHER_LOAD_MAX = 0.25       # cores other processes used during the timing: NOISY (suite.py)


@dataclass
class Task:
    """The task and settings every candidate gets (see the module docstring)."""

    width: int
    shared: bool
    population: int = 512
    batch: int = 256
    rank: int = 1
    sigma: float = 0.05
    lr: float = 0.02
    seed: int = 0
    n_in: int = 64
    n_out: int = 10
    data: tuple = field(default=(), repr=False)
    init: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
        X, y = load_digits(return_X_y=True)
        X = (X / 16.0).astype(np.float32)
        self.data = tuple(train_test_split(X, y, test_size=0.25, random_state=self.seed,
                                           stratify=y))          # Xtr, Xte, ytr, yte
        rng = np.random.default_rng(self.seed)
        w, n, o = self.width, self.n_in, self.n_out
        self.init = {"W1": (rng.standard_normal((w, n)) / math.sqrt(n)).astype(np.float32),
                     "b1": np.zeros(w, np.float32),
                     "W2": (rng.standard_normal((o, w)) / math.sqrt(w)).astype(np.float32),
                     "b2": np.zeros(o, np.float32)}

    @property
    def inputs(self) -> str:
        return "shared" if self.shared else "per-member"

    def minibatch(self, gen: int) -> tuple[np.ndarray, np.ndarray]:
        """Generation gen's data, the same for every candidate: shared x [b, 64], y [b];
        per-member x [P, b, 64], y [P, b]."""
        Xtr, _, ytr, _ = self.data
        rng = np.random.default_rng((self.seed, gen))
        if self.shared:
            idx = rng.choice(len(Xtr), size=self.batch, replace=False)
        else:
            idx = rng.integers(0, len(Xtr), size=(self.population, self.batch))
        return np.ascontiguousarray(Xtr[idx]), ytr[idx].astype(np.int64)

    def test_accuracy(self, p: dict[str, np.ndarray]) -> float:
        _, Xte, _, yte = self.data
        h = np.tanh(Xte @ p["W1"].T + p["b1"])
        return float(((h @ p["W2"].T + p["b2"]).argmax(axis=1) == yte).mean())


def missing(name: str) -> str | None:
    """Why a candidate cannot run here, or None."""
    for mod in NEEDS[name]:
        try:
            if importlib.util.find_spec(mod) is None:
                return f"{mod} is not installed"
        except (ImportError, ValueError):
            return f"{mod} is not installed"
    return None


# ----------------------------------------------------------------------------- timing

def time_config(task: Task, names: list[str], budget_s: float) -> list[dict[str, Any]]:
    """Build, warm up and time every candidate on one task, interleaved (module docstring)."""
    recs: dict[str, dict[str, Any]] = {}
    cands: dict[str, Any] = {}
    for name in names:
        rec = {"kind": "peers_es", "candidate": name, "width": task.width,
               "inputs": task.inputs, "population": task.population, "batch": task.batch,
               "rank": task.rank, "sigma": task.sigma, "lr": task.lr, "budget_s": budget_s}
        recs[name] = rec
        why = missing(name)
        if why:
            rec.update(status="missing", error=why)
            continue
        try:
            t0 = time.perf_counter()
            c = CLASSES[name](task)
            for g in range(WARMUP):
                c.step(c.batch(*task.minibatch(g)))
            rec["warmup_s"] = time.perf_counter() - t0
            rec["notes"] = c.notes
            cands[name] = c
        except Exception as e:                 # a peer that breaks must not lose the others
            rec.update(status="error", error=f"{type(e).__name__}: {e}"[:300])
    times: dict[str, list[float]] = {n: [] for n in cands}
    rnd = 0
    with harness.OtherLoad(min_wall_s=0.5) as load:
        while True:
            active = [n for n in cands if sum(times[n]) < budget_s or len(times[n]) < MIN_STEPS]
            if not active:
                break
            for name in (active if rnd % 2 == 0 else active[::-1]):
                c = cands[name]
                batch = c.batch(*task.minibatch(WARMUP + len(times[name])))
                t0 = time.perf_counter()
                c.step(batch)
                times[name].append(time.perf_counter() - t0)
            rnd += 1
    for name, c in cands.items():
        ts = times[name]
        rec = recs[name]
        rec.update(status="ok", median_s=statistics.median(ts), min_s=min(ts), n=len(ts),
                   generations=WARMUP + len(ts), timed_s=sum(ts),
                   times_s=[round(t, 6) for t in ts],
                   test_accuracy=task.test_accuracy(c.params()),
                   other_load_cores=None if load.cores is None else round(load.cores, 3))
        rec["spread_noisy"] = rec["median_s"] > harness.NOISY_SPREAD * rec["min_s"]
        rec["noisy"] = rec["time_noisy"] = (rec["spread_noisy"]
                                            or (load.cores or 0.0) > OTHER_LOAD_MAX)
    _ratios(list(recs.values()))
    return list(recs.values())


def _ratios(recs: list[dict[str, Any]]) -> None:
    ok = {r["candidate"]: r for r in recs if r.get("status") == "ok"}
    peers = [ok[p]["median_s"] for p in PEERS if p in ok]
    fastest = min(peers) if peers else None
    for r in ok.values():
        r["over_fastest_peer"] = r["median_s"] / fastest if fastest else None
        r["over_eggroll_numpy"] = (r["median_s"] / ok["eggroll-numpy"]["median_s"]
                                   if "eggroll-numpy" in ok else None)


# ----------------------------------------------------------------------------- memory

def child(name: str, width: int, shared: bool, **task_kw: Any) -> dict[str, Any]:
    """In a fresh process: load the candidate's libraries and the data (the baseline), then
    build it and run 2 warm-up and 2 timed-size generations; the peak over them."""
    import importlib
    for mod in NEEDS[name]:
        importlib.import_module(mod)
    task = Task(width=width, shared=shared, **task_kw)
    batches = [task.minibatch(g) for g in range(WARMUP + 2)]
    base = proc_status_bytes("VmRSS") or 0
    c = CLASSES[name](task)
    for b in batches:
        c.step(c.batch(*b))
    hwm = proc_status_bytes("VmHWM") or 0
    return {"train_mib": max(0, hwm - base) / 2**20, "process_mib": hwm / 2**20,
            "baseline_mib": base / 2**20}


def measure_memory(name: str, task: Task) -> dict[str, Any]:
    from eggroll.bench.memory import _child_env
    cmd = [sys.executable, "-m", "eggroll.bench.peers_es", "--child", name, "--widths",
           str(task.width), "--inputs", task.inputs, "--population", str(task.population),
           "--batch", str(task.batch)]
    try:
        proc = subprocess.run(cmd, env=_child_env(), capture_output=True, text=True,
                              timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"memory_error": f"timed out after {CHILD_TIMEOUT_S} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-2:])
    return {"memory_error": f"child exited {proc.returncode}: {tail}"[:300]}


# ----------------------------------------------------------------------------- report

COLUMNS = [("width", "width"), ("inputs", "inputs"), ("candidate", "candidate"),
           ("ms", "ms/gen"), ("min_ms", "min ms"), ("over_fastest_peer", "x fastest peer"),
           ("over_eggroll_numpy", "x eggroll-numpy"), ("train_mib", "train MiB"),
           ("process_mib", "process MiB"), ("generations", "gens"), ("acc", "test acc %"),
           ("flag", "")]


def _rows(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for r in recs:
        d = dict(r)
        if r.get("status") == "ok":
            d["ms"], d["min_ms"] = r["median_s"] * 1e3, r["min_s"] * 1e3
            d["acc"] = r["test_accuracy"] * 100
            d["flag"] = "NOISY" if r.get("noisy") else ""
        else:
            d["flag"] = f"{r.get('status')}: {r.get('error')}"
        rows.append(d)
    return rows


def markdown(recs: list[dict[str, Any]]) -> str:
    from eggroll.bench.report import markdown_table
    return markdown_table(_rows(recs), COLUMNS)


def plot(recs: list[dict[str, Any]], path: pathlib.Path) -> pathlib.Path | None:
    """Time per generation, step memory and test accuracy against width; one row per input
    mode; NOISY points hollow (eggroll.bench.plots)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    from eggroll.bench import plots
    modes = [m for m in ("shared", "per-member") if any(r.get("inputs") == m for r in recs)]
    ok = [r for r in recs if r.get("status") == "ok"]
    if not ok or not modes:
        return None
    fig = Figure(figsize=(plots.WIDTH, plots.ROW_HEIGHT * len(modes) + 0.5), dpi=plots.DPI,
                 layout="constrained")
    axes = fig.subplots(len(modes), 3, squeeze=False)
    colors = {n: f"C{i}" for i, n in enumerate(NAMES)}
    for row, mode in zip(axes, modes):
        for ax, key, label, log in ((row[0], "median_s", "ms / generation", True),
                                    (row[1], "train_mib", "peak MiB, training", True),
                                    (row[2], "test_accuracy", "test acc. after budget",
                                     False)):
            for name in NAMES:
                mine = [dict(r, median_s=r["median_s"] * 1e3) for r in ok
                        if r["candidate"] == name and r["inputs"] == mode]
                xs, ys, bad = plots._series(mine, "width", key,
                                            ("time",) if key == "median_s" else ())
                plots._draw(ax, xs, ys, bad, "o-" if name in EGGROLL else "s--", name,
                            colors[name])
            plots._log2_x(ax, sorted({r["width"] for r in ok}))
            if log:
                ax.set_yscale("log")
            plots._finish_axes(ax, log=log)
            ax.set_xlabel("hidden width")
            ax.set_title(f"{label}, {mode}", fontsize=9)
        row[0].legend(fontsize=6)
    fig.suptitle("ES peers on digits, MLP 64-width-10, population 512 (hollow: NOISY)",
                 fontsize=9)
    fig.savefig(path)
    return path


# ----------------------------------------------------------------------------- CLI

def _csv_ints(s: str) -> list[int]:
    return [int(v) for v in s.split(",") if v]


def main(argv: list[str] | None = None) -> int:
    p = harness.parser(__doc__)
    p.add_argument("--budget", type=float, default=None,
                   help="timed seconds per candidate and configuration (default 10; 3 quick)")
    p.add_argument("--widths", default=None, help="comma-separated (default 256,1024,4096; "
                                                  "quick: 256)")
    p.add_argument("--inputs", default="shared,per-member", help="shared and/or per-member")
    p.add_argument("--only", default=",".join(NAMES), help="candidates to run")
    p.add_argument("--no-memory", action="store_true", help="skip the memory children")
    p.add_argument("--out", default=None, help="write peers_es.png (and .md) here")
    p.add_argument("--population", type=int, default=512, help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=256, help=argparse.SUPPRESS)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    # The tests' run: a tiny task, the minimum of timed generations.
    p.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.smoke:
        args.widths, args.population, args.batch = args.widths or "16", 16, 8
        args.budget = 0.0 if args.budget is None else args.budget
    task_kw = dict(population=args.population, batch=args.batch)
    widths = _csv_ints(args.widths) if args.widths else ([256] if args.quick else
                                                         [256, 1024, 4096])
    modes = [m for m in args.inputs.split(",") if m]
    bad = [m for m in modes if m not in ("shared", "per-member")]
    if bad:
        p.error(f"--inputs: expected shared and/or per-member, got {bad}")
    if args.child:
        print("RESULT " + json.dumps(child(args.child, widths[0], modes[0] == "shared",
                                           **task_kw)), flush=True)
        return 0
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in CLASSES]
    if unknown:
        p.error(f"--only: unknown {unknown}; known: {list(NAMES)}")
    budget = args.budget if args.budget is not None else (3.0 if args.quick else 10.0)
    recs: list[dict[str, Any]] = []
    with harness.Session(args) as s:
        for width in widths:
            for mode in modes:
                harness.log(f"width {width}, {mode} inputs: timing {', '.join(names)} "
                            f"({budget:g} s each) ...")
                task = Task(width=width, shared=mode == "shared", **task_kw)
                cfg = time_config(task, names, budget)
                if not args.no_memory:
                    for r in cfg:
                        if r.get("status") == "ok":
                            harness.log(f"  memory: {r['candidate']} ...")
                            r.update(measure_memory(r["candidate"], task))
                for r in cfg:
                    s.emit(r)
                recs += cfg
        harness.table(_rows(recs), COLUMNS, title="ES peers: digits MLP, population 512 "
                      "(same-run medians; ratios < 1: faster than the fastest peer)")
        if args.out:
            out = pathlib.Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            (out / "peers_es.md").write_text(markdown(recs))
            png = plot(recs, out / "peers_es.png")
            harness.log(f"wrote {out / 'peers_es.md'}" + (f", {png}" if png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
