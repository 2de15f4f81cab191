"""What `eggroll bench` writes and prints: JSON lines, CSV, the tables (fixed-width text on
stdout, Markdown for the docs) and the generated region of docs/benchmarks.md.

The tables are built once as Sections (title, rows, columns) and rendered either way, so the
terminal and the docs show the same numbers.
"""
from __future__ import annotations

import csv
import io
import json
import pathlib
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from . import harness
from .backends import NOT_AVAILABLE
from .suite import CSV_COLUMNS, Grid

BEGIN = "<!-- BEGIN eggroll bench -->"
END = "<!-- END eggroll bench -->"

Column = tuple[str, str]        # (key, header)


@dataclass
class Section:
    title: str
    rows: list[dict[str, Any]]
    columns: list[Column]
    note: str = ""
    images: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- files

def write_jsonl(path: pathlib.Path, records: list[dict[str, Any]]) -> None:
    with open(path, "w") as fh:
        for rec in records:
            fh.write(json.dumps(rec, default=float) + "\n")


def write_csv(path: pathlib.Path, records: list[dict[str, Any]],
              first: Sequence[str] = CSV_COLUMNS) -> None:
    """The given columns first, then any other scalar field; lists (raw times) are left to
    the JSON lines."""
    cols = list(first)
    for rec in records:
        for k, v in rec.items():
            if k not in cols and not isinstance(v, (list, dict)):
                cols.append(k)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for rec in records:
            w.writerow({k: ("" if rec.get(k) is None else rec.get(k)) for k in cols})


# ----------------------------------------------------------------------------- tables

def _ms(rec: dict[str, Any], key: str) -> float | None:
    v = rec.get(f"{key}_median_s")
    return None if v is None else v * 1e3


def _display(rec: dict[str, Any]) -> dict[str, Any]:
    d = dict(rec)
    d["size"] = rec.get("m")
    d["eggroll_ms"], d["baseline_ms"], d["full_ms"], d["idiom_ms"] = (
        _ms(rec, k) for k in ("eggroll", "baseline", "full", "idiom"))
    d["flag"] = ("NOISY (load)" if rec.get("contended") else
                 "NOISY" if rec.get("noisy") else "")
    if rec.get("suite") == "noise":
        d["log2"] = f"2^{rec['count'].bit_length() - 1}"
        d["M_per_s"] = rec["eggroll_per_s"] / 1e6
        d["M_per_core"] = rec["per_core_per_s"] / 1e6
    else:
        d["k_per_s"] = rec.get("eggroll_per_s", 0.0) / 1e3
    return d


FWD_COLS: list[Column] = [
    ("P", "P"), ("size", "m=n"), ("rank", "r"), ("eggroll_ms", "EGGROLL ms"),
    ("baseline_ms", "x@W.T ms"), ("idiom_ms", "idiom ms"), ("full_ms", "full-rank ms"),
    ("k_per_s", "k members/s"), ("rel_throughput", "of inference"),
    ("idiom_over_eggroll", "x idiom"), ("speedup_vs_full", "x full-rank"),
    ("eggroll_gflops", "GFLOP/s"), ("flag", "")]
UPD_COLS: list[Column] = [
    ("P", "N"), ("size", "m=n"), ("rank", "r"), ("eggroll_ms", "es_gradient ms"),
    ("baseline_ms", "GEMM ms"), ("full_ms", "full-rank ms"), ("k_per_s", "k members/s"),
    ("rel_throughput", "of GEMM"), ("speedup_vs_full", "x full-rank"),
    ("eggroll_gflops", "GFLOP/s"), ("flag", "")]
NOISE_COLS: list[Column] = [
    ("log2", "count"), ("isa", "path"), ("threads", "threads"), ("eggroll_ms", "ms"),
    ("M_per_s", "M normals/s"), ("M_per_core", "per core"), ("rel_throughput", "x NumPy"),
    ("flag", "")]


def _pivot(rows: list[dict[str, Any]], key: str, label: str, pop: str) -> Section | None:
    """Population x size table of one value at the first rank (the Cartesian grid's overview);
    a NOISY row's value carries a '*'."""
    if not rows:
        return None
    r0 = min(r["rank"] for r in rows)
    rows = [r for r in rows if r["rank"] == r0]
    pops = sorted({r["P"] for r in rows})
    sizes = sorted({r["m"] for r in rows})
    if len(pops) < 2 or len(sizes) < 2:
        return None
    cell = {(r["P"], r["m"]): (harness._fmt(r.get(key)) + ("*" if r.get("noisy") else ""))
            for r in rows if r.get(key) is not None}
    out = [{"P": p, **{f"s{s}": cell.get((p, s)) for s in sizes}} for p in pops]
    return Section(f"{label}, rank {r0}: {pop} (rows) x m = n (columns)", out,
                   [("P", pop)] + [(f"s{s}", str(s)) for s in sizes],
                   note="(* NOISY; - not measured)")


def sections(records: list[dict[str, Any]], grid: Grid) -> list[Section]:
    """The grid's tables: for each backend, the forward and update slices (populations at
    grid.fixed_size, sizes at grid.fixed_pop), their pivots when the grid is Cartesian, the
    noise rates, and the dtypes the backend lacks."""
    out: list[Section] = []
    backends = list(dict.fromkeys((r["backend"], r["device"]) for r in records))
    for be, dev in backends:
        mine = [r for r in records if (r["backend"], r["device"]) == (be, dev)]
        ok = [r for r in mine if r.get("status") == "ok"]
        tag = f"{be}/{dev}"
        for suite, cols, name in (("forward", FWD_COLS, "perturbed forward"),
                                  ("update", UPD_COLS, "ES update")):
            rows = [r for r in ok if r["suite"] == suite]
            if not rows:
                continue
            key = lambda r: (r["P"], r["m"], r["rank"])  # noqa: E731
            pop_slice = sorted((r for r in rows if r["m"] == grid.fixed_size), key=key)
            size_slice = sorted((r for r in rows if r["P"] == grid.fixed_pop), key=key)
            what = "P" if suite == "forward" else "N"
            out.append(Section(f"{name} ({tag}, float32): populations at m = n = "
                               f"{grid.fixed_size}", [_display(r) for r in pop_slice], cols))
            out.append(Section(f"{name} ({tag}, float32): sizes at {what} = {grid.fixed_pop}",
                               [_display(r) for r in size_slice], cols))
            if grid.cartesian:
                for k, label in (("rel_throughput", "of inference" if suite == "forward"
                                  else "of GEMM"), ("speedup_vs_full", "x full-rank")):
                    p = _pivot(rows, k, f"{name} ({tag}): {label}", what)
                    if p:
                        out.append(p)
        isa_order = {isa: i for i, isa in enumerate(("avx512", "avx2", "scalar"))}
        noise = sorted((r for r in ok if r["suite"] == "noise"),
                       key=lambda r: (r["count"], isa_order.get(r["isa"], 9), r["threads"]))
        if noise:
            out.append(Section(f"noise ({tag}): eggroll.normal, against NumPy's Ziggurat "
                               "(1 thread)", [_display(r) for r in noise], NOISE_COLS))
        missing: dict[str, list[str]] = {}
        for r in mine:
            if r.get("status") == NOT_AVAILABLE:
                missing.setdefault(r["dtype"], []).append(r["suite"])
        if missing:
            out.append(Section(f"dtypes ({tag})",
                               [{"dtype": d, "suites": ", ".join(s), "status": NOT_AVAILABLE}
                                for d, s in missing.items()],
                               [("dtype", "dtype"), ("suites", "suites"), ("status", "status")]))
    return out


def print_sections(secs: list[Section], file: Any) -> None:
    for s in secs:
        harness.table(s.rows, s.columns, title=s.title, file=file)
        if s.note:
            print(s.note, file=file)


def markdown_table(rows: list[dict[str, Any]], columns: list[Column]) -> str:
    buf = io.StringIO()
    buf.write("| " + " | ".join(h or " " for _, h in columns) + " |\n")
    buf.write("|" + "|".join("---" for _ in columns) + "|\n")
    for r in rows:
        buf.write("| " + " | ".join(harness._fmt(r.get(k)) for k, _ in columns) + " |\n")
    return buf.getvalue()


def sections_markdown(secs: list[Section]) -> str:
    parts = []
    for s in secs:
        parts.append(f"**{s.title}**\n\n" + markdown_table(s.rows, s.columns)
                     + (f"\n{s.note}\n" if s.note else ""))
    return "\n".join(parts)


# ----------------------------------------------------------------------------- docs

def machine_markdown(info: dict[str, Any]) -> str:
    gpus = ", ".join(info.get("gpus") or []) or "none detected"
    commit = info.get("git_commit")
    code = (f"commit `{commit}`{' with local changes' if info.get('git_dirty') else ''}"
            if commit else "an installed package")
    load = info.get("loadavg_1_5_15m")
    return (f"**Machine:** {info.get('cpu')}, {info.get('logical_cores')} logical cores "
            f"({info.get('affinity_cores')} usable), {info.get('memory_gib')} GiB memory; "
            f"GPU: {gpus}. {info.get('platform')}; Python {info.get('python')}, NumPy "
            f"{info.get('numpy')} ({info.get('numpy_blas')}). eggroll {info.get('eggroll')} "
            f"at {code}, {info.get('eggroll_threads')} threads, {info.get('eggroll_isa')} "
            f"noise path. Load average when the run started (1, 5, 15 min): "
            f"{', '.join(str(v) for v in load) if load else 'unknown'}.")


def replace_region(text: str, body: str) -> str:
    """text with the region between BEGIN and END replaced by body (markers kept); the
    markers are appended when text has none."""
    region = f"{BEGIN}\n{body.rstrip()}\n{END}"
    if BEGIN in text and END in text:
        pat = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
        return pat.sub(lambda _: region, text, count=1)
    if BEGIN in text or END in text:
        raise ValueError(f"found only one of the markers {BEGIN!r} / {END!r}")
    return text.rstrip() + "\n\n" + region + "\n"


def update_docs(doc: pathlib.Path, body: str) -> None:
    doc.write_text(replace_region(doc.read_text(), body))
