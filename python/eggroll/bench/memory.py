"""Peak memory of EGGROLL vs full-rank ES, measured (not computed).

One forward pass + one ES update at population N for a square weight W [d, d], by three
methods, each run in a FRESH Python process so that nothing one method allocated is still
resident when the next one is measured:

* ``eggroll``           -- ``eggroll.perturbed_matmul`` (rank 1) + ``eggroll.es_gradient``:
  low-rank factors regenerated on the fly, never stored;
* ``full_streamed``     -- ``eggroll.perturbed_matmul_full`` + ``es_gradient(full_rank=True)``:
  full-rank OpenES with each Z_k regenerated in small row blocks (bounded memory);
* ``full_materialised`` -- what a naive OpenES does: the N/2 antithetic noise matrices
  Z [N/2, d, d] built explicitly (``eggroll.normal`` per noise index, so the very same noise
  as ``full_streamed``), then ``y = x W^T + s sigma (x_i Z_k^T)`` as one batched matmul
  (``einsum('kjn,kmn->kjm')``) and ``g = tensordot(f_2k - f_2k+1, Z) / N``.

What is measured: in the child, after the imports, the input allocation (x [N, d] and W) and
a tiny warm-up call of the same method (thread pool, BLAS buffers), the kernel's peak-RSS
counter is reset (``echo 5 > /proc/self/clear_refs``) and the resident set read (the
baseline); after the forward + update the peak (VmHWM from /proc/self/status) is read. The
reported figure is ``peak - baseline``: the memory the step itself needed, outputs (y [N, d]
and g [d, d]) included. Where the counter cannot be reset, the peak since the process started
is used (``hwm_reset: false`` in the record).

The "cannot fit" case: N and d (N = 1024, d = 4096 on a 24 GiB machine: doubling N until it
holds) such that the materialised noise, (N/2) d^2 4 bytes, is larger than this machine's
RAM (MemTotal). The materialised method is attempted in a child whose address space is
limited to MemTotal (``RLIMIT_AS``) -- it fails with MemoryError at the allocation of Z,
instead of pushing the machine into swap or the OOM killer -- and EGGROLL runs the same step
(x [N, d], one forward + update) under the same limit, with its peak and wall time measured.
Nothing of that size is ever allocated by the parent.

Run: ``python -m eggroll.bench.memory [--quick] [--out DIR]`` (quick: <= 20 s, full: <= 2 min
on the 2-core VM).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["run", "summary_markdown", "measure", "mem_total_bytes", "cannot_fit_config",
           "METHODS"]

METHODS = ("eggroll", "full_streamed", "full_materialised")
LABELS = {"eggroll": "EGGROLL (rank 1)", "full_streamed": "full-rank ES, streamed",
          "full_materialised": "full-rank ES, materialised"}
MiB = float(1 << 20)
GiB = float(1 << 30)

SWEEP_FULL = dict(N=256, sizes=(128, 256, 512, 1024, 2048))
SWEEP_QUICK = dict(N=256, sizes=(128, 256, 512))
CANNOT_FIT_D = 4096
CANNOT_FIT_N = 1024
SIGMA = 0.01
SEED = 2024
CHILD_TIMEOUT_S = 600

def proc_status_bytes(key: str) -> int | None:
    """A /proc/self/status field in bytes (VmRSS, VmHWM, ...); None where it is missing."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return None


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current resident set (clear_refs 5); False where
    the kernel does not allow it (the peak then includes what came before)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------------------------
# The child: one method, one configuration, one fresh process. Only numpy + eggroll imported.
# --------------------------------------------------------------------------------------------

_CHILD = r'''
import gc, json, os, resource, sys, time
cfg = json.loads(sys.argv[1])
if cfg.get("rlimit_as"):
    resource.setrlimit(resource.RLIMIT_AS, (cfg["rlimit_as"], cfg["rlimit_as"]))
import numpy as np
import eggroll

from eggroll.bench.memory import proc_status_bytes as status, reset_peak_rss as reset_hwm

N, d, method = cfg["N"], cfg["d"], cfg["method"]
sigma, seed = cfg["sigma"], cfg["seed"]
key = dict(epoch=0, seed=seed, sigma=sigma)

def fitness(y):
    return eggroll.centered_rank(-np.einsum("ij,ij->i", y, y))

def step(x, W):
    """One forward + one update; returns (y, g, forward seconds, update seconds)."""
    n_pop, dim = x.shape
    t0 = time.perf_counter()
    if method == "eggroll":
        y = eggroll.perturbed_matmul(x, W, members=range(n_pop), rank=1, **key)
        t1 = time.perf_counter()
        g = eggroll.es_gradient(fitness(y), W.shape, rank=1, **key)
    elif method == "full_streamed":
        y = eggroll.perturbed_matmul_full(x, W, members=range(n_pop), **key)
        t1 = time.perf_counter()
        g = eggroll.es_gradient(fitness(y), W.shape, full_rank=True, **key)
    elif method == "full_materialised":
        K = n_pop // 2
        Z = np.empty((K, dim, dim), np.float32)        # the explicit noise: (N/2) d^2 floats
        for k in range(K):
            Z[k] = eggroll.normal(dim * dim, seed=seed, noise_index=k).reshape(dim, dim)
        y = x @ W.T
        corr = np.matmul(x.reshape(K, 2, dim), Z.transpose(0, 2, 1))   # einsum kjn,kmn->kjm
        corr *= np.array([sigma, -sigma], np.float32)[None, :, None]   # s_i sigma, antithetic
        y += corr.reshape(n_pop, dim)
        del corr
        t1 = time.perf_counter()
        f = fitness(y)
        g = np.tensordot(f[0::2] - f[1::2], Z, axes=1) / np.float32(n_pop)
    else:
        raise SystemExit("unknown method " + method)
    t2 = time.perf_counter()
    return y, g, t1 - t0, t2 - t1

rng = np.random.default_rng(cfg["seed"])
x = rng.standard_normal((N, d), dtype=np.float32)
W = rng.standard_normal((d, d), dtype=np.float32)
W *= np.float32(1.0 / np.sqrt(d))

# warm-up on a tiny problem: thread pool, BLAS buffers, code pages
step(rng.standard_normal((4, 8), dtype=np.float32), np.zeros((8, 8), np.float32))
gc.collect()

out = {"ok": False, "error": None}
hwm_reset = reset_hwm()
out["hwm_reset"] = hwm_reset
baseline = status("VmRSS")
out["baseline_bytes"] = baseline
t0 = time.perf_counter()
try:
    y, g, tf, tu = step(x, W)
    out.update(ok=True, forward_s=tf, update_s=tu)
except MemoryError as exc:
    y = g = None
    out["error"] = "MemoryError: " + (str(exc) or "(no message)")
out["wall_s"] = time.perf_counter() - t0
hwm = status("VmHWM")
if not hwm_reset:
    hwm = max(hwm, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
out["hwm_bytes"] = hwm
out["peak_bytes"] = hwm - baseline
if y is not None:   # checksums, after the peak was read (they allocate float64 copies)
    out["y_norm"] = float(np.linalg.norm(y.astype(np.float64)))
    out["g_norm"] = float(np.linalg.norm(g.astype(np.float64)))
print("RESULT " + json.dumps(out))
'''


def _child_env() -> dict[str, str]:
    """The child imports the same eggroll as this process."""
    import eggroll
    env = dict(os.environ)
    pkg_root = str(Path(eggroll.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH")) if p)
    return env


def measure(method: str, N: int, d: int, *, rlimit_as: int | None = None,
            timeout: float = CHILD_TIMEOUT_S) -> dict[str, Any]:
    """Run one forward + update of `method` at (N, d) in a fresh process; the child's report
    (peak_bytes, baseline_bytes, wall_s, forward_s, update_s, ok, error, ...)."""
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    cfg = dict(method=method, N=int(N), d=int(d), sigma=SIGMA, seed=SEED, rlimit_as=rlimit_as)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(cfg)], env=_child_env(),
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return dict(ok=False, error=f"timed out after {timeout:.0f} s", process_s=timeout)
    elapsed = time.perf_counter() - t0
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            res = json.loads(line[len("RESULT "):])
            res["process_s"] = elapsed
            return res
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return dict(ok=False, error=f"child exited {proc.returncode}: " + " | ".join(tail),
                process_s=elapsed)


# --------------------------------------------------------------------------------------------
# Configurations
# --------------------------------------------------------------------------------------------

def mem_total_bytes() -> int:
    """This machine's RAM (MemTotal of /proc/meminfo), in bytes."""
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("MemTotal not found in /proc/meminfo")


def materialised_noise_bytes(N: int, d: int) -> int:
    """(N/2) d^2 float32 values: the antithetic noise a materialised full-rank ES stores."""
    return (N // 2) * d * d * 4


def cannot_fit_config(mem_total: int | None = None) -> tuple[int, int]:
    """(N, d): d = 4096 and N = 1024, doubled until the materialised noise exceeds RAM."""
    mem_total = mem_total_bytes() if mem_total is None else mem_total
    N, d = CANNOT_FIT_N, CANNOT_FIT_D
    while materialised_noise_bytes(N, d) <= mem_total:
        N *= 2
    return N, d


def _record(method: str, N: int, d: int, case: str, res: dict[str, Any],
            mem_total: int) -> dict[str, Any]:
    io_bytes = 4 * (N * d + d * d)              # inputs x, W (in the baseline)
    out_bytes = 4 * (N * d + d * d)             # outputs y, g (in the peak)
    noise = materialised_noise_bytes(N, d) if method == "full_materialised" else 0
    peak = res.get("peak_bytes") if res.get("ok") else None
    return {
        "kind": "memory", "case": case, "method": method, "N": N, "d": d,
        "rank": 1 if method == "eggroll" else None,
        "ok": bool(res.get("ok")), "error": res.get("error"),
        "peak_mib": None if peak is None else peak / MiB,
        "baseline_mib": (res["baseline_bytes"] / MiB) if res.get("baseline_bytes") else None,
        "outputs_mib": out_bytes / MiB, "inputs_mib": io_bytes / MiB,
        "materialised_noise_mib": noise / MiB if noise else None,
        "required_mib": (noise + out_bytes) / MiB if noise else None,
        "mem_total_mib": mem_total / MiB,
        "rlimit_as_mib": mem_total / MiB if case == "cannot_fit" else None,
        "wall_s": res.get("wall_s"), "forward_s": res.get("forward_s"),
        "update_s": res.get("update_s"), "process_s": res.get("process_s"),
        "y_norm": res.get("y_norm"), "g_norm": res.get("g_norm"),
        "hwm_reset": res.get("hwm_reset"),
    }


# --------------------------------------------------------------------------------------------
# run / plot / summary
# --------------------------------------------------------------------------------------------

def run(out_dir: Path, quick: bool, *, sizes: tuple[int, ...] | None = None,
        population: int | None = None, cannot_fit: bool = True,
        cannot_fit_streamed: bool | None = None, log: Any = None) -> list[dict[str, Any]]:
    """Measure the sweep (and the cannot-fit case), write out_dir/memory.png, return records.

    sizes / population override the sweep (tests use tiny ones); cannot_fit=False skips the
    cannot-fit case; cannot_fit_streamed (default: not quick) also runs the streamed full-rank
    step at the cannot-fit size (it fits in memory but takes ~20-30 s on 2 cores).
    log: a callable taking a progress line (default: print to stderr)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    say = log if log is not None else (lambda s: print(s, file=sys.stderr, flush=True))
    sweep = SWEEP_QUICK if quick else SWEEP_FULL
    N = int(population or sweep["N"])
    sizes = tuple(int(s) for s in (sizes or sweep["sizes"]))
    mem_total = mem_total_bytes()
    records: list[dict[str, Any]] = []
    for d in sizes:
        for method in METHODS:
            res = measure(method, N, d)
            rec = _record(method, N, d, "sweep", res, mem_total)
            records.append(rec)
            failed = "" if rec["ok"] else f"  FAILED: {rec['error']}"
            say(f"memory: {method:18s} N={N} d={d:5d}  peak {_fmt_mib(rec['peak_mib'])} MiB  "
                f"({_fmt_s(rec['wall_s'])} s){failed}")
    if cannot_fit:
        Ncf, dcf = cannot_fit_config(mem_total)
        if cannot_fit_streamed is None:
            cannot_fit_streamed = not quick
        cf_methods = ("full_materialised", "eggroll") + (
            ("full_streamed",) if cannot_fit_streamed else ())
        for method in cf_methods:
            res = measure(method, Ncf, dcf, rlimit_as=mem_total)
            rec = _record(method, Ncf, dcf, "cannot_fit", res, mem_total)
            records.append(rec)
            say(f"memory: cannot-fit {method:18s} N={Ncf} d={dcf}  "
                + (f"peak {_fmt_mib(rec['peak_mib'])} MiB ({_fmt_s(rec['wall_s'])} s)"
                   if rec["ok"] else f"failed: {rec['error']}"))
    plot = _plot(records, out_dir / "memory.png", mem_total)
    for rec in records:
        rec["plot"] = plot
    return records


def _fmt_mib(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:.2f}" if v < 10 else f"{v:.0f}"


def _fmt_s(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


def _plot(records: list[dict[str, Any]], path: Path, mem_total: int) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 5.0))
    colours = {"eggroll": "tab:green", "full_streamed": "tab:blue",
               "full_materialised": "tab:red"}
    markers = {"eggroll": "o", "full_streamed": "s", "full_materialised": "^"}
    sweep = [r for r in records if r["case"] == "sweep" and r["ok"]]
    N = sweep[0]["N"] if sweep else None
    for method in METHODS:
        pts = sorted((r["d"], max(r["peak_mib"], 1e-2)) for r in sweep if r["method"] == method)
        if pts:
            ax.plot(*zip(*pts), marker=markers[method], color=colours[method],
                    label=f"{LABELS[method]} (N = {N})")
    ax.axhline(mem_total / MiB, color="grey", ls="--", lw=1)
    ax.annotate(f"this machine's RAM ({mem_total / GiB:.1f} GiB)", (0.62, mem_total / MiB),
                xycoords=("axes fraction", "data"), xytext=(0, -3), textcoords="offset points",
                color="grey", fontsize=8, ha="center", va="top")
    cf = {r["method"]: r for r in records if r["case"] == "cannot_fit"}
    mat, egg = cf.get("full_materialised"), cf.get("eggroll")
    streamed = cf.get("full_streamed")
    if streamed is not None and streamed["ok"]:
        ax.plot([streamed["d"]], [streamed["peak_mib"]], marker="s", ms=9, color="tab:blue",
                ls="none", mfc="none", mew=2,
                label=f"streamed full rank, N = {streamed['N']}: {streamed['peak_mib']:.0f} MiB, "
                      f"{streamed['wall_s']:.1f} s")
    if mat is not None:
        need = mat["required_mib"]
        ax.plot([mat["d"]], [need], marker="X", ms=13, color="tab:red", ls="none",
                label=f"materialised, N = {mat['N']}: " + ("MemoryError" if not mat["ok"]
                                                          else "ran"))
        ax.annotate(f"needs {mat['materialised_noise_mib'] * MiB / GiB:.0f} GiB > "
                    f"{mem_total / GiB:.1f} GiB RAM\n"
                    + ("MemoryError (RLIMIT_AS = RAM)" if not mat["ok"] else "ran?!"),
                    (mat["d"], need), xytext=(-12, 4), textcoords="offset points",
                    fontsize=8, color="tab:red", ha="right", va="bottom")
    if egg is not None and egg["ok"]:
        ax.plot([egg["d"]], [egg["peak_mib"]], marker="*", ms=15, color="tab:green", ls="none",
                label=f"EGGROLL, N = {egg['N']}: {egg['peak_mib']:.0f} MiB, {egg['wall_s']:.2f} s")
        ax.annotate(f"EGGROLL, N = {egg['N']}, d = {egg['d']}\n"
                    f"{egg['peak_mib']:.0f} MiB (y, g: {egg['outputs_mib']:.0f}), "
                    f"{egg['wall_s']:.2f} s",
                    (egg["d"], egg["peak_mib"]), xytext=(-12, 8), textcoords="offset points",
                    fontsize=8, color="tab:green", ha="right", va="bottom")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    lo = min([r["peak_mib"] for r in sweep] + [1.0])
    ax.set_ylim(max(lo / 2, 1e-2), mem_total / MiB * 12)
    ax.set_xlabel("d  (W is d x d)")
    ax.set_ylabel("peak memory of one forward + update (MiB, measured)")
    ax.set_title("Peak memory: EGGROLL vs full-rank ES")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return str(path)


def summary_markdown(records: list[dict[str, Any]]) -> str:
    """A markdown table (MiB per method and size) and a one-paragraph conclusion."""
    recs = [r for r in records if r.get("kind") == "memory"]
    sweep = [r for r in recs if r["case"] == "sweep"]
    sizes = sorted({r["d"] for r in sweep})
    by = {(r["method"], r["d"]): r for r in sweep}
    lines = []
    if sweep:
        N = sweep[0]["N"]
        lines += [f"Peak memory of one forward + one update, N = {N}, W [d, d], measured in a "
                  "fresh process (peak RSS minus the RSS after inputs; outputs y, g included):",
                  "",
                  "| d | EGGROLL MiB | full-rank streamed MiB | full-rank materialised MiB "
                  "| y + g MiB | materialised / EGGROLL |",
                  "|---|---|---|---|---|---|"]
        for d in sizes:
            e, s, m = (by.get((k, d)) for k in METHODS)
            cells = [_fmt_mib(r["peak_mib"]) if r and r["ok"] else "failed" for r in (e, s, m)]
            ratio = (f"{m['peak_mib'] / e['peak_mib']:.0f} x" if e and m and e["ok"] and m["ok"]
                     and e["peak_mib"] > 0 else "—")
            out = e or s or m
            lines.append(f"| {d} | {cells[0]} | {cells[1]} | {cells[2]} | "
                         f"{_fmt_mib(out['outputs_mib'])} | {ratio} |")
    cf = {r["method"]: r for r in recs if r["case"] == "cannot_fit"}
    mat, egg = cf.get("full_materialised"), cf.get("eggroll")
    para = []
    if sweep:
        dmax = sizes[-1]
        e, s, m = (by.get((k, dmax)) for k in METHODS)
        if e and m and e["ok"] and m["ok"]:
            para.append(f"At d = {dmax} the materialised full-rank step peaks at "
                        f"{m['peak_mib']:.0f} MiB (its noise alone is "
                        f"{m['materialised_noise_mib']:.0f} MiB and grows as N d^2), EGGROLL at "
                        f"{e['peak_mib']:.1f} MiB and the streamed full-rank baseline at "
                        f"{s['peak_mib']:.1f} MiB: both stay close to the size of their outputs "
                        f"(y and g, {e['outputs_mib']:.1f} MiB), because neither stores noise.")
            if s and s["ok"] and e["wall_s"]:
                para.append(f"Streaming buys full rank its memory back at a price in time: "
                            f"{s['wall_s']:.2f} s against EGGROLL's {e['wall_s']:.3f} s "
                            f"for this step, because it regenerates (N/2) d^2 normals twice.")
    if mat is not None and egg is not None:
        para.append(f"At N = {mat['N']}, d = {mat['d']} the materialised noise needs "
                    f"{mat['materialised_noise_mib'] * MiB / GiB:.0f} GiB, more than this "
                    f"machine's {mat['mem_total_mib'] * MiB / GiB:.1f} GiB of RAM: "
                    + ("the attempt, under an address-space limit equal to RAM, fails with "
                       f"`{mat['error']}`" if not mat["ok"] else "it unexpectedly ran")
                    + "; EGGROLL runs the same step "
                    + (f"in {egg['wall_s']:.2f} s (forward {egg['forward_s']:.2f} s, update "
                       f"{egg['update_s']:.2f} s) with a measured peak of "
                       f"{egg['peak_mib']:.0f} MiB, of which {egg['outputs_mib']:.0f} MiB are "
                       f"its outputs y [{egg['N']}, {egg['d']}] and g [{egg['d']}, {egg['d']}]."
                       if egg["ok"] else f"-- but it failed: {egg['error']}."))
        st = cf.get("full_streamed")
        if st is not None:
            para.append(f"The streamed full-rank step fits too ({_fmt_mib(st['peak_mib'])} MiB) "
                        f"but takes {_fmt_s(st['wall_s'])} s." if st["ok"] else
                        f"The streamed full-rank step failed: {st['error']}.")
        lines += ["", f"Cannot-fit case (N = {mat['N']}, d = {mat['d']}, address space limited "
                  f"to RAM = {mat['mem_total_mib'] * MiB / GiB:.1f} GiB):", "",
                  "| method | result | needs (MiB) | measured peak (MiB) | wall s |",
                  "|---|---|---|---|---|"]
        for r in (mat, egg, st):
            if r is None:
                continue
            lines.append(f"| {LABELS[r['method']]} | "
                         f"{'ran' if r['ok'] else 'failed: ' + str(r['error']).split(':')[0]} | "
                         f"{_fmt_mib(r['required_mib'])} | {_fmt_mib(r['peak_mib'])} | "
                         f"{_fmt_s(r['wall_s']) if r['ok'] else '—'} |")
    if para:
        lines += ["", " ".join(para)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m eggroll.bench.memory", description=__doc__
                                 .split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer, smaller sizes (<= 20 s)")
    ap.add_argument("--out", type=Path, default=Path("eggroll-bench"),
                    help="directory for memory.png and memory.json (default: eggroll-bench)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    records = run(args.out, args.quick)
    (args.out / "memory.json").write_text(json.dumps(records, indent=1) + "\n")
    print(summary_markdown(records))
    plot = records[0]["plot"] if records else None
    print(f"plot: {plot or 'not written (matplotlib missing)'}; records: "
          f"{args.out / 'memory.json'}; {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
