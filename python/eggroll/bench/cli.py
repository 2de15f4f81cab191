"""`eggroll bench`: the micro-benchmark grid (suite.py) on every backend installed here (NumPy,
torch and JAX on the CPU; CuPy, torch and JAX on a GPU: backends.py), each against its own
framework's `x @ W.T` and low-rank idiom, then the memory comparison and, on request, the
rank study; writes results.jsonl, results.csv, machine.json and PNG plots into --out, prints
the tables, and can regenerate the marked region of docs/benchmarks.md (--update-docs).

    eggroll bench --quick              # <= 60 s on a 2-core machine with torch and JAX
    eggroll bench --rank-study --update-docs docs/benchmarks.md
                                       # full grid: ~3.5 min per CPU backend on 2 cores

The memory and rank-study parts are the modules eggroll.bench.memory and
eggroll.bench.rank_study, each with run(out_dir, quick) -> records and
summary_markdown(records); a part whose module is missing is reported and skipped.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import pathlib
import shlex
import shutil
import sys
import textwrap
import time
import traceback
from typing import Any

import eggroll

from . import harness, plots, report, suite
from .backends import BACKENDS, select

PLOTS_HINT = ('plots need matplotlib, the "bench" extra: pip install "eggroll-hyperscale[bench]"  '
              '(or: pip install matplotlib)')

# (flag name, module, title): the parts other than the grid, in the order they run.
PARTS = (("memory", "eggroll.bench.memory", "Memory: EGGROLL vs full-rank ES"),
         ("rank_study", "eggroll.bench.rank_study", "Rank study: low rank -> full rank"))


def _fill(text: str) -> str:
    return textwrap.fill(text, width=88)


def _help_backends() -> str:
    """Which backends --help can promise here, without importing any framework."""
    rows = []
    for b in BACKENDS:
        installed = b.module == "numpy" or importlib.util.find_spec(b.module) is not None
        gpu = "" if b.device == "cpu" else " and a GPU"
        rows.append(f"  {b.label:11s} {'installed' if installed else 'not installed'}"
                    f"{' (measured if eggroll can use it' + gpu + ')' if installed else ''}")
    return "\n".join(rows)


def _parse(argv: list[str], prog: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog=f"{prog} bench", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_fill("EGGROLL benchmarks on every backend installed here: the perturbed "
                    "forward against that framework's own x @ W.T, its idiomatic low-rank ES "
                    "forward and full-rank ES; the ES update against the same-shape GEMM; "
                    "the noise generator against NumPy's; then the peak memory of EGGROLL vs "
                    "full-rank ES (and, with --rank-study, the low-rank estimator's error "
                    "against rank)."),
        epilog="Backends (framework/device):\n" + _help_backends() + "\n\n" + _fill(
               "How long: --quick takes <= 60 s on a 2-core machine with NumPy, torch and "
               "JAX (about 15 s per backend plus 5 s of memory); the full grid about 3.5 "
               "minutes per CPU backend. Busy machines take longer: a measurement that other "
               "processes disturb is repeated, then flagged NOISY.") + "\n\n" + _fill(
               "Outputs in --out: results.jsonl, results.csv, machine.json, *.png. "
               "Times are medians of >= 5 runs; compare the same-run ratios. Plots draw "
               "NOISY points hollow, apart from the lines."))
    ap.add_argument("--quick", action="store_true",
                    help="a small grid and the memory part's quick form (<= 1 minute)")
    ap.add_argument("--out", default="eggroll-bench", metavar="DIR",
                    help="output directory (default ./eggroll-bench/)")
    ap.add_argument("--rank-study", action="store_true",
                    help="also run the rank study (error of the rank-r update vs rank)")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory part")
    ap.add_argument("--no-grid", action="store_true",
                    help="skip the timing grid (e.g. --no-grid --rank-study: only the study)")
    ap.add_argument("--threads", type=int, default=None, metavar="N",
                    help="eggroll.set_num_threads(N) and torch.set_num_threads(N) for the run "
                         "(NumPy's BLAS follows OPENBLAS_NUM_THREADS / OMP_NUM_THREADS, JAX "
                         "its XLA_FLAGS)")
    ap.add_argument("--backend", action="append", default=None, metavar="NAME",
                    help="only this backend (repeatable): numpy, torch, jax, cupy, or "
                         "name/device such as torch/cpu; default: every one available here")
    ap.add_argument("--update-docs", default=None, metavar="MD",
                    help="rewrite the generated region of this Markdown file (between "
                         f"{report.BEGIN} and {report.END}) and copy the plots and "
                         "results.csv into bench/ beside it")
    # The test suite's smoke run: a tiny grid, no cool-down, no memory or rank-study part.
    ap.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        ap.error(f"--threads: need >= 1, got {args.threads}")
    if args.update_docs and not pathlib.Path(args.update_docs).is_file():
        ap.error(f"--update-docs: no such file: {args.update_docs}")
    try:
        select(args.backend)
    except ValueError as e:
        ap.error(str(e))
    return args


class _Progress:
    """tqdm on stderr when it is installed, else one line per step."""

    def __init__(self, total: int, desc: str) -> None:
        self.total, self.i = total, 0
        try:
            from tqdm import tqdm
        except ImportError:
            self.bar = None
        else:
            self.bar = tqdm(total=total, desc=desc, unit="config", file=sys.stderr,
                            dynamic_ncols=True)

    def start(self, label: str) -> None:
        self.i += 1
        if self.bar is not None:
            self.bar.set_postfix_str(label, refresh=True)
        else:
            print(f"# [{self.i}/{self.total}] {label}", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_grid(grid: suite.Grid, backends: list[Any], threads: int | None
             ) -> list[dict[str, Any]]:
    tasks = suite.plan(grid, backends, threads)
    records = suite.unavailable_records(backends)
    bar = _Progress(len(tasks), f"grid ({grid.name})")
    try:
        for task in tasks:
            bar.start(task.label)
            records += task.run()
            bar.done()
    finally:
        bar.close()
    return records


def _versions(backends: list[Any]) -> dict[str, str]:
    """The version of each measured backend's framework."""
    out = {}
    for b in backends:
        mod = importlib.import_module(b.module)
        out[b.module] = str(getattr(mod, "__version__", "?"))
    return out


def run_part(key: str, module: str, title: str, out: pathlib.Path, quick: bool
             ) -> dict[str, Any]:
    """Import and run one of the other parts; never raises (a failure is reported)."""
    res: dict[str, Any] = {"part": key, "title": title, "records": [], "markdown": "",
                           "pngs": [], "seconds": 0.0, "status": "ok", "message": ""}
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        res["status"] = "missing"
        res["message"] = (f"{module} is not in this eggroll yet: skipping the {key} part"
                          if e.name == module else
                          f"the {key} part needs the package {e.name!r}: skipped ({e})")
        return res
    except Exception as e:           # a broken module must not lose the grid's results
        res["status"] = "error"
        res["message"] = f"{module} failed to import: {type(e).__name__}: {e}"
        return res
    # PNGs the part wrote: new files or changed mtimes. (Comparing mtimes with time.time()
    # missed fresh files: the kernel stamps files with a coarse clock that can trail it.)
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    t0 = time.perf_counter()
    try:
        recs = list(mod.run(out, quick))
        res["markdown"] = str(mod.summary_markdown(recs))
    except Exception as e:
        traceback.print_exc(file=sys.stderr)
        res["status"] = "error"
        res["message"] = f"the {key} part failed: {type(e).__name__}: {e}"
        recs = []
    res["seconds"] = time.perf_counter() - t0
    for r in recs:
        r.setdefault("suite", key)
    res["records"] = recs
    res["pngs"] = sorted(p.name for p in out.glob("*.png")
                         if before.get(p.name) != p.stat().st_mtime_ns)
    return res


def _headline(records: list[dict[str, Any]], grid: suite.Grid) -> list[str]:
    """One sentence per suite at (fixed_pop, fixed_size, first rank), where measured."""
    lines = []
    for su, what, base in (("forward", "perturbed forward", "inference (x @ W.T)"),
                           ("update", "ES update", "its same-shape GEMM")):
        rows = [r for r in records if r.get("suite") == su and r.get("status") == "ok"
                and r["P"] == grid.fixed_pop and r["m"] == grid.fixed_size
                and r["rank"] == grid.ranks[0]]
        for r in rows:
            pop = "P" if su == "forward" else "N"
            s = (f"{what} ({r['backend']}/{r['device']}), {pop} = {r['P']}, m = n = {r['m']}, "
                 f"r = {r['rank']}: {r['eggroll_median_s'] * 1e3:.3g} ms, "
                 f"{r['rel_throughput']:.2f} x the throughput of {base}")
            if r.get("idiom_over_eggroll") is not None:
                s += (f", {r['idiom_over_eggroll']:.2f} x faster than the "
                      f"{r['backend']} idiom")
            if r.get("speedup_vs_full") is not None:
                s += f", speed-up over full-rank ES {r['speedup_vs_full']:.1f} x"
            lines.append(s + (" (NOISY)" if r.get("noisy") else ""))
    noise = [r for r in records if r.get("suite") == "noise" and r.get("status") == "ok"]
    if noise:
        best = max(noise, key=lambda r: (r["count"], r["eggroll_per_s"]))
        lines.append(f"noise: {best['eggroll_per_s'] / 1e6:.0f} M normals/s "
                     f"({best['isa']}, {best['threads']} thread{'s' * (best['threads'] > 1)}, 2^"
                     f"{best['count'].bit_length() - 1} values), {best['rel_throughput']:.1f}"
                     f" x NumPy's Ziggurat" + (" (NOISY)" if best.get("noisy") else ""))
    return lines


def _docs_body(args: argparse.Namespace, argv: list[str], info: dict[str, Any],
               grid: suite.Grid, records: list[dict[str, Any]], secs: list[report.Section],
               grid_pngs: list[str], parts: list[dict[str, Any]], link: str,
               timings: dict[str, float]) -> str:
    cmd = "eggroll bench " + shlex.join(argv)
    noisy = [r for r in records if r.get("noisy")]
    timed = [r for r in records if r.get("status") == "ok" and "eggroll_median_s" in r]
    took = ", ".join(f"{k} {v:.0f} s" for k, v in timings.items() if k != "total")
    out = [
        "## Generated by `eggroll bench`",
        "",
        f"_This section is written by `{cmd}` (the same as `python -m eggroll bench ...`); "
        "rerun it to refresh. The text above the section is written by hand._",
        "",
        f"Run on {info['date_utc']}; it took {timings['total']:.0f} s in all ({took}).",
        "",
        report.machine_markdown(info),
        "",
        "Other processes may have been running on this shared machine during the run: "
        f"{len(noisy)} of {len(timed)} timed rows are flagged NOISY (a median still over "
        f"{harness.NOISY_SPREAD} x its minimum after extra runs, or — `NOISY (load)` — "
        f"other processes using over {suite.OTHER_LOAD_MAX} of a core while the row was "
        "measured; `noisy`, `contended` and `other_load_cores` in the CSV). Compare the "
        "same-run ratios, not absolute times.",
        "",
    ]
    if timed:
        pops = ", ".join(map(str, grid.pops))
        sizes = ", ".join(map(str, grid.sizes))
        shape = ("every population x every size" if grid.cartesian else
                 f"populations at m = n = {grid.fixed_size} and sizes at P = {grid.fixed_pop}")
        out += [
            "### Micro-benchmark grid",
            "",
            f"Mode `{grid.name}`: populations {pops}; square sizes m = n = {sizes}; ranks "
            f"{', '.join(map(str, grid.ranks))} ({shape}); float32 "
            f"(the dtypes a backend lacks are listed as such). Full rank is timed where its "
            f"(P/2) m n regenerated normals are at most 2^{int(grid.full_cap).bit_length() - 1}"
            "; the update's ranks are those with N r <= "
            f"{grid.update_max_nr}. Every number is a median of >= 5 runs, each candidate "
            "interleaved with its baseline in the same run ([method](../bench/README.md)). "
            f"All rows: [results.csv]({link}/results.csv).",
            "",
            *[f"- {h}" for h in _headline(records, grid)],
            "",
            *[f"![{p[:-4].replace('_', ' ')}]({link}/{p})" for p in grid_pngs],
            "",
            report.sections_markdown(secs),
        ]
    for part in parts:
        out += [f"### {part['title']}", ""]
        if part["status"] != "ok":
            out += [f"_Not run: {part['message']}._", ""]
            continue
        md = part["markdown"]
        for p in part["pngs"]:
            if f"]({p})" in md:
                md = md.replace(f"]({p})", f"]({link}/{p})")
            else:
                md += f"\n\n![{p[:-4].replace('_', ' ')}]({link}/{p})"
        out += [f"_{part['seconds']:.0f} s._", "", md.strip(), ""]
    return "\n".join(out)


def main(argv: list[str] | None = None, prog: str = "eggroll") -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parse(argv, prog)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    grid = suite.GRIDS[mode]
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    asked = select(args.backend)
    status = {b.label: b.available() for b in asked}
    backends = [b for b in asked if status[b.label][0]]
    if not backends:
        why = "; ".join(f"{k}: {v[1]}" for k, v in status.items())
        print(f"{prog} bench: no backend available ({why})", file=sys.stderr)
        return 2
    saved = (eggroll.get_num_threads(), eggroll.get_isa())
    t_start = time.perf_counter()
    try:
        if args.threads is not None:
            eggroll.set_num_threads(args.threads)
        for b in backends:
            b.setup(args.threads)
        harness.set_cooldown(grid.cooldown)
        info = harness.machine_info()
        info.update(mode=mode, command=f"{prog} bench {shlex.join(argv)}".strip(),
                    backends=[b.describe() for b in asked], framework_versions=_versions(backends))
        harness.print_machine(info)
        harness.log("measuring: " + ", ".join(b.label for b in backends))
        for label, (ok, why) in status.items():
            if not ok:
                harness.log(f"not measured: {label}: {why}")
        load = info.get("loadavg_1_5_15m")
        if load and load[0] > 0.5:
            harness.log(f"the machine is busy (load average {load[0]} over the last minute): "
                        "rows measured while other processes use the CPUs are flagged NOISY")
        timings: dict[str, float] = {}
        records: list[dict[str, Any]] = []
        grid_pngs: list[str] = []
        if not args.no_grid:
            t0 = time.perf_counter()
            records = run_grid(grid, backends, args.threads)
            timings["grid"] = time.perf_counter() - t0
            report.write_csv(out / "results.csv", records)
            if plots.have_matplotlib():
                grid_pngs = [p.name for p in plots.grid_plots(records, out, grid.fixed_size,
                                                                grid.fixed_pop)]
            else:
                harness.log(f"no plots: {PLOTS_HINT}")
        parts = []
        wanted = {"memory": not args.no_memory and not args.smoke,
                  "rank_study": args.rank_study and not args.smoke}
        for key, module, title in PARTS:
            if not wanted[key]:
                continue
            harness.log(f"{key} ...")
            part = run_part(key, module, title, out, quick=mode != "full")
            if part["message"]:
                harness.log(part["message"])
            timings[key] = part["seconds"]
            parts.append(part)
            if part["records"]:
                report.write_csv(out / f"{key}.csv", part["records"], first=())
        timings["total"] = time.perf_counter() - t_start
        info["timings_s"] = {k: round(v, 2) for k, v in timings.items()}
        report.write_jsonl(out / "results.jsonl",
                           records + [r for p in parts for r in p["records"]])
        (out / "machine.json").write_text(json.dumps(info, indent=2, default=str) + "\n")

        secs = report.sections(records, grid) if records else []
        print(f"\n# eggroll bench ({mode}): {info['cpu']}, {info['logical_cores']} cores, "
              f"GPU: {', '.join(info['gpus']) or 'none detected'}")
        report.print_sections(secs, sys.stdout)
        for line in _headline(records, grid):
            print(f"  {line}")
        for part in parts:
            print(f"\n## {part['title']}")
            print(part["markdown"].strip() if part["status"] == "ok" else part["message"])
        made = sorted(p.name for p in out.glob("*.png")
                      if p.name in grid_pngs or any(p.name in q["pngs"] for q in parts))
        print(f"\nwrote {out}/: results.jsonl, results.csv, machine.json"
              + (", " + ", ".join(made) if made else "")
              + ("" if plots.have_matplotlib() else f"  ({PLOTS_HINT})"))
        print(f"total {timings['total']:.1f} s ("
              + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items() if k != "total") + ")")

        if args.update_docs:
            doc = pathlib.Path(args.update_docs)
            dest = doc.parent / "bench"
            dest.mkdir(exist_ok=True)
            for name in made + (["results.csv"] if records else []):
                shutil.copyfile(out / name, dest / name)
            link = os.path.relpath(dest, doc.parent).replace(os.sep, "/")
            body = _docs_body(args, argv, info, grid, records, secs, grid_pngs, parts, link,
                              timings)
            report.update_docs(doc, body)
            print(f"updated {doc} (region {report.BEGIN} ... {report.END}) and {dest}/")
        return 0
    finally:
        eggroll.set_num_threads(saved[0])
        eggroll.set_isa(saved[1])


if __name__ == "__main__":
    sys.exit(main())
