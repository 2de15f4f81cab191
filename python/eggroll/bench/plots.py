"""The grid's three figures (PNG, matplotlib's Agg canvas, no pyplot state): throughput vs
population, fraction of inference throughput vs matrix size, speed-up over full rank vs size.

Each figure takes the grid's records (suite.py) and the two slices the grid is built around:
populations at grid.fixed_size, and sizes at grid.fixed_pop. Small on purpose (~90 dpi,
a few tens of KB) so that docs/bench/ can carry them.
"""
from __future__ import annotations

import pathlib
from typing import Any

DPI = 90
FIGSIZE = (9.0, 3.6)        # inches: 810 x 324 pixels


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _figure(ncols: int) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _ok(records: list[dict[str, Any]], suite: str, **eq: Any) -> list[dict[str, Any]]:
    return [r for r in records if r.get("suite") == suite and r.get("status") == "ok"
            and r.get("dtype") == "float32" and all(r.get(k) == v for k, v in eq.items())]


def _series(rows: list[dict[str, Any]], xkey: str, ykey: str) -> tuple[list, list]:
    pts = sorted((r[xkey], r[ykey]) for r in rows if r.get(ykey) is not None)
    return [p[0] for p in pts], [p[1] for p in pts]


def _backends(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    seen: dict[tuple[str, str], None] = {}
    for r in records:
        if r.get("status") == "ok" and r.get("suite") in ("forward", "update"):
            seen[(r["backend"], r["device"])] = None
    return list(seen)


def _log2_x(ax: Any, xs: list[int]) -> None:
    ax.set_xscale("log", base=2)
    if xs:
        ax.set_xticks(sorted(set(xs)))
        ax.set_xticklabels([str(x) for x in sorted(set(xs))])
    ax.grid(True, which="major", alpha=0.3)


def throughput_vs_population(records: list[dict[str, Any]], size: int, path: pathlib.Path
                             ) -> pathlib.Path | None:
    fig, axes = _figure(2)
    drew = False
    for ax, suite, base in ((axes[0], "forward", "inference x @ W.T"),
                            (axes[1], "update", "GEMM (m x N r)(N r x n)")):
        xs_all: list[int] = []
        for be, dev in _backends(records):
            rows = _ok(records, suite, m=size, backend=be, device=dev)
            tag = "" if len(_backends(records)) == 1 else f" [{be}/{dev}]"
            ranks = sorted({r["rank"] for r in rows})
            for rank in ranks:
                xs, ys = _series([r for r in rows if r["rank"] == rank], "P", "eggroll_per_s")
                ax.plot(xs, ys, "o-", label=f"EGGROLL r={rank}{tag}")
                xs_all += xs
            # One baseline line (the forward's does not depend on the rank; the update's
            # GEMM is drawn for the first rank) and the full-rank line, where measured.
            first = [r for r in rows if r["rank"] == ranks[0]] if ranks else []
            xs, ys = _series(first, "P", "baseline_per_s")
            if xs:
                ax.plot(xs, ys, "k--", label=base + ("" if suite == "forward"
                                                      else f", r={ranks[0]}") + tag)
            xs, ys = _series(first, "P", "full_per_s")
            if xs:
                ax.plot(xs, ys, "s:", color="tab:red", label=f"full-rank ES{tag}")
            drew = drew or bool(rows)
        _log2_x(ax, xs_all)
        ax.set_yscale("log")
        ax.set_xlabel("population (members)")
        ax.set_ylabel("members / s")
        ax.set_title(f"{'perturbed forward' if suite == 'forward' else 'ES update'}, "
                     f"m = n = {size}", fontsize=10)
        ax.legend(fontsize=7)
    if not drew:
        return None
    fig.savefig(path)
    return path


def fraction_of_inference_vs_size(records: list[dict[str, Any]], pop: int, path: pathlib.Path
                                  ) -> pathlib.Path | None:
    fig, axes = _figure(2)
    drew = False
    for ax, suite, what in ((axes[0], "forward", "of inference (x @ W.T)"),
                            (axes[1], "update", "of the same-shape GEMM")):
        xs_all: list[int] = []
        for be, dev in _backends(records):
            rows = _ok(records, suite, P=pop, backend=be, device=dev)
            tag = "" if len(_backends(records)) == 1 else f" [{be}/{dev}]"
            for rank in sorted({r["rank"] for r in rows}):
                xs, ys = _series([r for r in rows if r["rank"] == rank], "m", "rel_throughput")
                ax.plot(xs, ys, "o-", label=f"EGGROLL r={rank}{tag}")
                xs_all += xs
            drew = drew or bool(rows)
        ax.axhline(1.0, color="k", ls="--", lw=1, label="= baseline")
        _log2_x(ax, xs_all)
        ax.set_xlabel("matrix size m = n")
        ax.set_ylabel(f"throughput, fraction {what}", fontsize=9)
        ax.set_title(f"{'perturbed forward' if suite == 'forward' else 'ES update'}, "
                     f"P = {pop}", fontsize=10)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)
    if not drew:
        return None
    fig.savefig(path)
    return path


def speedup_vs_fullrank(records: list[dict[str, Any]], pop: int, path: pathlib.Path
                        ) -> pathlib.Path | None:
    fig, axes = _figure(1)
    ax = axes[0]
    xs_all: list[int] = []
    ys_all: list[float] = []
    for be, dev in _backends(records):
        tag = "" if len(_backends(records)) == 1 else f" [{be}/{dev}]"
        for suite, marker in (("forward", "o-"), ("update", "s--")):
            rows = _ok(records, suite, P=pop, backend=be, device=dev)
            for rank in sorted({r["rank"] for r in rows}):
                xs, ys = _series([r for r in rows if r["rank"] == rank], "m", "speedup_vs_full")
                if xs:
                    ax.plot(xs, ys, marker, label=f"{suite} r={rank}{tag}")
                    xs_all += xs
                    ys_all += ys
    if not xs_all:
        return None
    if min(ys_all) < 2.0:           # break-even line, only where the data come near it
        ax.axhline(1.0, color="k", lw=1)
    _log2_x(ax, xs_all)
    ax.set_yscale("log")
    ax.set_xlabel("matrix size m = n")
    ax.set_ylabel("full-rank time / EGGROLL time")
    ax.set_title(f"speed-up over full-rank ES (same population P = {pop}, same run)",
                 fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    fig.savefig(path)
    return path


def grid_plots(records: list[dict[str, Any]], out_dir: pathlib.Path, fixed_size: int,
               fixed_pop: int) -> list[pathlib.Path]:
    """Write the three figures into out_dir; returns the files written."""
    made = [
        throughput_vs_population(records, fixed_size, out_dir / "throughput_vs_population.png"),
        fraction_of_inference_vs_size(records, fixed_pop,
                                      out_dir / "fraction_of_inference_vs_size.png"),
        speedup_vs_fullrank(records, fixed_pop, out_dir / "speedup_vs_fullrank.png"),
    ]
    return [p for p in made if p is not None]
