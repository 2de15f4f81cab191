"""Shared benchmark harness: timing (warm-up, median of >= 5 runs, interleaved baselines),
machine info, one JSON line per configuration, and a human table.

Used by the repository's bench/bench_*.py scripts and by `eggroll bench` (eggroll.bench.suite);
it ships inside the package so that an installed eggroll can benchmark itself. Plain Python +
NumPy, no pytest-benchmark. Conventions of the scripts:

* stdout carries JSON lines only (the first one is the machine record, kind "machine"),
  so `python bench/bench_X.py > results.jsonl` gives a clean file; the human-readable
  header, progress and the final tables go to stderr.
* Every time is a median of at least 5 runs after a warm-up; a baseline is always measured
  in the same run, interleaved with its candidate (see measure_interleaved), and reported
  as a same-run ratio. These machines are shared VMs: absolute times drift by 10-30 %
  between runs, same-run ratios much less.
* All work here is synchronous on the CPU (the C++ core and NumPy return when done); a
  `sync` hook is accepted so a future GPU backend can make its work complete inside a
  timed region.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Iterable, Sequence

import numpy as np

import eggroll

MIN_REPEAT = 5          # a median of fewer runs is not reported
MAX_SAMPLES = 2000      # cap on samples when min_time asks for more
NOISY_SPREAD = 1.25     # median > 1.25 x min: another process was competing for the cores
SETTLE_FACTOR = 3       # ... then take up to 3 x repeat runs before giving up

_jsonl_path: str | None = None


# ----------------------------------------------------------------------------- timing

def _summary(times: list[float]) -> dict[str, Any]:
    return {"median_s": statistics.median(times), "min_s": min(times),
            "max_s": max(times), "n": len(times), "times_s": times}


def measure(fn: Callable[[], Any], *, warmup: int = 2, repeat: int = 7, min_time: float = 0.0,
            sync: Callable[[], Any] | None = None) -> dict[str, Any]:
    """Time fn() alone: `warmup` untimed calls, then `repeat` (>= 5) timed calls, more while
    the timed total is under min_time seconds (for sub-millisecond calls).
    Returns {median_s, min_s, max_s, n, times_s: [per-call seconds]}."""
    return measure_interleaved({"fn": fn}, warmup=warmup, repeat=repeat, min_time=min_time,
                               sync=sync)["fn"]


# Seconds of idle time before switching candidates (see measure_interleaved).
COOLDOWN_S = 0.15
VISIT_CALLS = 4  # with a cool-down, each visit times this many consecutive calls
_cooldown = 0.0


def set_cooldown(seconds: float) -> None:
    """Idle seconds before each switch of candidate (COOLDOWN_S; 0 = strictly back to back)."""
    global _cooldown
    _cooldown = max(0.0, float(seconds))


def measure_interleaved(fns: dict[str, Callable[[], Any]], *, warmup: int = 2, repeat: int = 7,
                        min_time: float = 0.0, settle: float = NOISY_SPREAD,
                        max_rounds: int | None = None, settle_budget_s: float = 4.0,
                        before: dict[str, Callable[[], Any]] | None = None,
                        sync: Callable[[], Any] | None = None,
                        cooldown_after: Iterable[str] | None = None
                        ) -> dict[str, dict[str, Any]]:
    """Time several callables round-robin: one call of each per round, the order reversed
    every other round, so that drift (clock, thermal, noisy neighbours) hits candidate and
    baseline alike. before[name]() runs untimed right before each call of fns[name] (e.g.
    eggroll.set_isa / set_num_threads). Rounds go on past `repeat` while any callable's
    timed total is under min_time (at most MAX_SAMPLES rounds), and - to ride out a burst of
    load from another process - while some median is over `settle` x its minimum, for at
    most max_rounds (default SETTLE_FACTOR x repeat) rounds in all and while the timed
    rounds have taken under settle_budget_s seconds; pass max_rounds=repeat for slow
    callables. Each result carries noisy=True when its median still ends over settle x its
    minimum. cooldown_after names the candidates whose threads linger (NumPy's BLAS calls):
    the cool-down sleep then follows only a switch away from one of them (default: every
    switch); the untimed warm call on a switch stays.
    Returns {name: measure()-style dict}."""
    if repeat < MIN_REPEAT:
        raise ValueError(f"repeat: need >= {MIN_REPEAT} runs for a median, got {repeat}")
    before = before or {}
    names = list(fns)
    cooldown_after = None if cooldown_after is None else set(cooldown_after)
    max_rounds = SETTLE_FACTOR * repeat if max_rounds is None else max(repeat, max_rounds)

    last = [None]

    def call(name: str) -> float:
        if name in before:
            before[name]()
        if _cooldown > 0 and last[0] != name:
            # Switching candidates: let the previous one's threads go idle (NumPy's OpenBLAS
            # workers spin on a core for ~0.1 s after every call and would steal it from the
            # next candidate), then one untimed call to warm caches. --interleave disables it.
            if cooldown_after is None or last[0] in cooldown_after:
                time.sleep(_cooldown)
            fns[name]()
        last[0] = name
        t0 = time.perf_counter()
        result = fns[name]()
        if sync is not None:
            sync()
        t1 = time.perf_counter()
        del result          # freeing the output is not part of the timed call
        return t1 - t0

    for _ in range(warmup):
        for name in names:
            call(name)
    times: dict[str, list[float]] = {name: [] for name in names}
    rnd = 0
    start = time.perf_counter()
    while True:
        order = names if rnd % 2 == 0 else names[::-1]
        visit = VISIT_CALLS if _cooldown > 0 else 1  # calls per visit (after a cool-down)
        for name in order:
            for _ in range(visit):
                times[name].append(call(name))
        rnd += 1
        samples = rnd * visit
        if samples >= MAX_SAMPLES:
            break
        # min_time tops up sub-millisecond calls with more back-to-back samples; with a
        # cool-down every round costs ~0.15 s per candidate, so it is not applied there.
        if samples < repeat or (_cooldown <= 0 and any(sum(t) < min_time for t in times.values())):
            continue
        if samples >= max_rounds or time.perf_counter() - start > settle_budget_s or all(
                statistics.median(t) <= settle * min(t) for t in times.values()):
            break
    out = {name: _summary(t) for name, t in times.items()}
    for res in out.values():
        res["noisy"] = res["median_s"] > settle * res["min_s"]
    return out


def _busy_seconds() -> float | None:
    """CPU seconds all cores have spent busy since boot (/proc/stat), or None off Linux."""
    try:
        with open("/proc/stat") as fh:
            vals = [int(v) for v in fh.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    idle = vals[3] + vals[4]                            # idle + iowait
    return (sum(vals) - idle) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """How many cores' worth of CPU other processes used while a block ran:

        with harness.OtherLoad() as load: ...
        load.cores      # (all busy CPU time - this process's) / wall time; None if unknown

    A block shorter than min_wall_s (the counters tick every 10 ms) gives None. On a 2-core
    machine another process at 0.3 cores already slows a 2-thread GEMM by whole scheduler
    ticks (4 ms): a median that is consistently slow, which the spread test cannot see."""

    def __init__(self, min_wall_s: float = 0.25) -> None:
        self.min_wall_s = min_wall_s
        self.cores: float | None = None

    def __enter__(self) -> "OtherLoad":
        t = os.times()
        self._own0, self._busy0, self._t0 = t.user + t.system, _busy_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        t = os.times()
        wall = time.perf_counter() - self._t0
        busy1 = _busy_seconds()
        if self._busy0 is None or busy1 is None or wall < self.min_wall_s:
            return
        own = t.user + t.system - self._own0
        self.cores = max(0.0, (busy1 - self._busy0) - own) / wall


def gflops(flops: float, seconds: float) -> float:
    return flops / seconds / 1e9


# ----------------------------------------------------------------------------- machine

def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _numpy_blas() -> str:
    try:
        cfg = np.show_config(mode="dicts")  # NumPy >= 1.25: returns, does not print
        blas = cfg["Build Dependencies"]["blas"]
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:
        pass
    for attr in ("blas_ilp64_opt_info", "blas_opt_info", "openblas_info"):
        info = getattr(np.__config__, attr, None)
        if info:
            return f"{attr}: {','.join(info.get('libraries', []))}"
    return "unknown"


def _build_info() -> dict[str, Any]:
    """Which code was measured: the git commit (and whether the tree had local changes) and
    when the loaded extension was built."""
    info: dict[str, Any] = {}
    core = getattr(getattr(eggroll, "_core", None), "__file__", None)
    if core:
        mtime = os.path.getmtime(core)
        info["eggroll_core_built_utc"] = datetime.datetime.fromtimestamp(
            mtime, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    # python/eggroll/bench/harness.py -> the repository root, when run from a source tree
    # (an installed package has no .git beside it and reports no commit).
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
    if not (os.path.exists(os.path.join(root, ".git"))
            and os.path.exists(os.path.join(root, "pyproject.toml"))):
        return info
    try:
        import subprocess
        run = lambda *a: subprocess.run(["git", "-C", root, *a], capture_output=True,  # noqa: E731
                                        text=True, timeout=10).stdout.strip()
        commit = run("rev-parse", "--short", "HEAD")
        if commit:
            info["git_commit"] = commit
            info["git_dirty"] = bool(run("status", "--porcelain", "--untracked-files=no"))
    except Exception:
        pass
    return info


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)   # kB -> GiB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _gpus() -> list[str]:
    """NVIDIA GPUs as 'name, memory' (nvidia-smi), or [] when there is none or no driver."""
    import shutil
    import subprocess
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=10).stdout
    except Exception:
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on (the first JSON line of every script)."""
    return {
        "kind": "machine",
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "affinity_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": _memory_gib(),
        "gpus": _gpus(),
        "loadavg_1_5_15m": _loadavg(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numpy_blas": _numpy_blas(),
        "eggroll": eggroll.__version__,
        **_build_info(),
        "eggroll_threads": eggroll.get_num_threads(),
        "eggroll_isa": eggroll.get_isa(),
        "eggroll_best_isa": eggroll.best_isa(),
        "env_threads": {k: os.environ[k] for k in ("EGGROLL_NUM_THREADS", "OMP_NUM_THREADS",
                                                    "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
                        if k in os.environ},
    }


def print_machine(info: dict[str, Any], file: Any = sys.stderr) -> None:
    print("# machine", file=file)
    for k, v in info.items():
        if k != "kind":
            print(f"#   {k:17s} {v}", file=file)
    file.flush()


# ----------------------------------------------------------------------------- output

def emit(record: dict[str, Any]) -> None:
    """One JSON line on stdout (and appended to --jsonl when given)."""
    line = json.dumps(record, sort_keys=False, default=float)
    print(line, flush=True)
    if _jsonl_path:
        with open(_jsonl_path, "a") as fh:
            fh.write(line + "\n")


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v == 0.0 or math.isnan(v):
            return f"{v:g}"
        a = abs(v)
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 100:
            return f"{v:.1f}"
        if a >= 1:
            return f"{v:.3g}" if a < 10 else f"{v:.1f}"
        return f"{v:.3g}"
    return str(v)


def table(records: Iterable[dict[str, Any]], columns: Sequence[str | tuple[str, str]],
          *, title: str | None = None, file: Any = sys.stderr) -> None:
    """A fixed-width table of the given columns (a key, or (key, header)); missing -> '-'."""
    cols = [(c, c) if isinstance(c, str) else c for c in columns]
    rows = [[_fmt(r.get(k)) for k, _ in cols] for r in records]
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, (_, h) in enumerate(cols)]
    if title:
        print(f"\n## {title}", file=file)
    print("  ".join(h.rjust(w) for (_, h), w in zip(cols, widths)), file=file)
    print("  ".join("-" * w for w in widths), file=file)
    for row in rows:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths)), file=file)
    file.flush()


def log(msg: str) -> None:
    print(f"# {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- CLI

def parser(description: str) -> argparse.ArgumentParser:
    """argparse with the flags every script shares: --quick, --threads, --repeat, --jsonl."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer and smaller configurations")
    p.add_argument("--threads", type=int, default=None,
                   help="eggroll.set_num_threads(N) for the run (NumPy's BLAS threads follow "
                        "OPENBLAS_NUM_THREADS / OMP_NUM_THREADS instead)")
    p.add_argument("--repeat", type=int, default=7,
                   help=f"timed runs per measurement (>= {MIN_REPEAT}; the median is reported)")
    p.add_argument("--jsonl", default=None, help="also append every JSON line to this file")
    p.add_argument("--interleave", action="store_true",
                   help="alternate candidates back to back with no cool-down: shows how each is "
                        "slowed by the other's idle threads (NumPy's OpenBLAS spins ~0.1 s)")
    return p


class Session:
    """Parses the shared flags, applies them, emits the machine record, and restores the
    eggroll thread count and ISA on exit:

        with harness.Session(parser.parse_args()) as s: ...
    """

    def __init__(self, args: argparse.Namespace) -> None:
        if args.repeat < MIN_REPEAT:
            raise SystemExit(f"--repeat: need >= {MIN_REPEAT} runs for a median, got {args.repeat}")
        if args.threads is not None and args.threads < 1:
            raise SystemExit(f"--threads: need >= 1, got {args.threads}")
        self.args = args
        self.records: list[dict[str, Any]] = []
        set_cooldown(0.0 if getattr(args, "interleave", False) else COOLDOWN_S)

    def __enter__(self) -> "Session":
        global _jsonl_path
        self._saved = (eggroll.get_num_threads(), eggroll.get_isa())
        _jsonl_path = self.args.jsonl
        if self.args.threads is not None:
            eggroll.set_num_threads(self.args.threads)
        self.t0 = time.perf_counter()
        info = machine_info()
        print_machine(info)
        emit(info)
        return self

    def __exit__(self, *exc: Any) -> None:
        eggroll.set_num_threads(self._saved[0])
        eggroll.set_isa(self._saved[1])
        log(f"total wall time {time.perf_counter() - self.t0:.1f} s")

    def emit(self, record: dict[str, Any]) -> dict[str, Any]:
        """Emit one configuration's record (times_s lists are kept in the JSON line)."""
        self.records.append(record)
        emit(record)
        return record


def timing_fields(prefix: str, m: dict[str, Any]) -> dict[str, Any]:
    """{prefix}_median_s, {prefix}_min_s, {prefix}_n and the raw samples, for a record."""
    return {f"{prefix}_median_s": m["median_s"], f"{prefix}_min_s": m["min_s"],
            f"{prefix}_n": m["n"], f"{prefix}_noisy": m["noisy"],
            f"{prefix}_times_s": [round(t, 9) for t in m["times_s"]]}
