"""The grid's three figures (PNG, matplotlib's Agg canvas, no pyplot state): throughput vs
population, fraction of inference throughput vs matrix size, speed-up over full rank vs size;
one row of panels per measured backend.

Each figure takes the grid's records (suite.py) and the two slices the grid is built around:
populations at grid.fixed_size, and sizes at grid.fixed_pop. Noise is shown, not hidden:
a point whose measurement the harness flagged NOISY (its median still over 1.25 x its minimum
after extra runs, or other processes using the cores while it ran) is drawn as a hollow
marker and the line does not pass through it, so a spike from someone else's build never
reads as a result. Small on purpose (~90 dpi, a few tens of KB) so that docs/bench/ can
carry them.
"""
from __future__ import annotations

import math
import pathlib
from typing import Any

DPI = 90
WIDTH = 9.0                 # inches: 810 pixels
ROW_HEIGHT = 3.0            # inches per backend row
NOISY_NOTE = "hollow markers: NOISY (other load while measured), not results"


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _figure(nrows: int, ncols: int) -> tuple[Any, list[list[Any]]]:
    from matplotlib.figure import Figure
    fig = Figure(figsize=(WIDTH, ROW_HEIGHT * nrows + 0.5), dpi=DPI, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, [list(row) for row in axes]


def _ok(records: list[dict[str, Any]], suite: str, **eq: Any) -> list[dict[str, Any]]:
    return [r for r in records if r.get("suite") == suite and r.get("status") == "ok"
            and r.get("dtype") == "float32" and all(r.get(k) == v for k, v in eq.items())]


def _is_noisy(rec: dict[str, Any], parts: tuple[str, ...]) -> bool:
    """Whether the value computed from these candidates' timings is untrustworthy."""
    return bool(rec.get("contended")) or any(rec.get(f"{p}_noisy") for p in parts)


def _series(rows: list[dict[str, Any]], xkey: str, ykey: str, parts: tuple[str, ...]
            ) -> tuple[list, list, list]:
    """(xs, ys, noisy flags) sorted by x, for the rows that have ykey."""
    pts = sorted((r[xkey], r[ykey], _is_noisy(r, parts)) for r in rows
                 if r.get(ykey) is not None)
    return [p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts]


RANK_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown")


def _rank_color(rank: int, ranks: list[int]) -> str:
    return RANK_COLORS[sorted(ranks).index(rank) % len(RANK_COLORS)]


def _draw(ax: Any, xs: list, ys: list, noisy: list, fmt: str, label: str, color: str) -> None:
    """A line through the clean points (filled markers); the noisy ones are kept for
    _finish_axes, which draws them hollow and unconnected, in the same colour."""
    if not xs:
        return
    clean = [y if not bad else math.nan for y, bad in zip(ys, noisy)]
    (line,) = ax.plot(xs, clean, fmt, label=label, color=color)
    marker = line.get_marker() if line.get_marker() not in ("None", "", None) else "o"
    state = ax.__dict__.setdefault("_eggroll_points", {"clean": [], "noisy": []})
    state["clean"] += [y for y in clean if not math.isnan(y)]
    state["noisy"] += [(x, y, color, marker) for x, y, b in zip(xs, ys, noisy) if b]


def _finish_axes(ax: Any, log: bool = False, floor: float | None = None) -> None:
    """Scale the y axis to the clean points (and the baseline line at 1 when floor is given)
    and draw the noisy points hollow; a noisy point off that scale sits at the top edge as a
    hollow triangle, so a spike neither hides the results nor passes for one."""
    state = ax.__dict__.get("_eggroll_points", {"clean": [], "noisy": []})
    clean, noisy = state["clean"], state["noisy"]
    top = None
    if clean:
        hi = max(clean + ([floor] if floor is not None else []))
        top = hi * (1.6 if log else 1.15)
        if log:
            # Noisy points below the clean ones are not spikes (a spread flag, not a
            # contender's fault): the axis reaches down to them so they stay visible.
            lo = min(clean + [y for _, y, _, _ in noisy if y > 0]
                     + ([floor] if floor is not None else []))
            ax.set_ylim(lo / 1.6, top)
        else:
            ax.set_ylim(0, top)
    elif noisy and not log:      # nothing clean: the noisy points set the scale
        ax.set_ylim(0, max([y for _, y, _, _ in noisy] + [floor or 0.0]) * 1.15)
    for x, y, color, marker in noisy:
        off = top is not None and y > top
        if log and y <= 0:
            continue        # not representable on a log axis
        ax.plot([x], [top / 1.03 if off else y], linestyle="none",
                marker="^" if off else marker, markerfacecolor="none",
                markeredgecolor=color, markersize=7)


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


def _note_noise(fig: Any, records: list[dict[str, Any]]) -> None:
    n = sum(1 for r in records if r.get("noisy") and r.get("status") == "ok"
            and r.get("suite") in ("forward", "update"))
    if n:
        fig.suptitle(f"{NOISY_NOTE} ({n} of the grid's rows)", fontsize=8, color="0.35")


def throughput_vs_population(records: list[dict[str, Any]], size: int, path: pathlib.Path
                             ) -> pathlib.Path | None:
    backends = _backends(records)
    if not backends:
        return None
    fig, axes = _figure(len(backends), 2)
    drew = False
    for row, (be, dev) in zip(axes, backends):
        for ax, suite, base in ((row[0], "forward", "x @ W.T"),
                                (row[1], "update", "GEMM (m x N r)(N r x n)")):
            rows = _ok(records, suite, m=size, backend=be, device=dev)
            xs_all: list[int] = []
            ranks = sorted({r["rank"] for r in rows})
            for rank in ranks:
                xs, ys, bad = _series([r for r in rows if r["rank"] == rank], "P",
                                      "eggroll_per_s", ("eggroll",))
                _draw(ax, xs, ys, bad, "o-", f"EGGROLL r={rank}", _rank_color(rank, ranks))
                xs_all += xs
            # One baseline line (the forward's does not depend on the rank; the update's
            # GEMM is drawn for the first rank), the idiom and full rank, where measured.
            first = [r for r in rows if r["rank"] == ranks[0]] if ranks else []
            xs, ys, bad = _series(first, "P", "baseline_per_s", ("baseline",))
            _draw(ax, xs, ys, bad, "--", base + ("" if suite == "forward"
                                                   else f", r={ranks[0]}"), "k")
            xs, ys, bad = _series(first, "P", "idiom_per_s", ("idiom",))
            _draw(ax, xs, ys, bad, "^-.", f"{be} idiom, r={ranks[0] if ranks else '?'}",
                  "tab:gray")
            xs, ys, bad = _series(first, "P", "full_per_s", ("full",))
            _draw(ax, xs, ys, bad, "s:", "full-rank ES", "tab:red")
            drew = drew or bool(rows)
            _log2_x(ax, xs_all)
            ax.set_yscale("log")
            _finish_axes(ax, log=True)
            ax.set_xlabel("population (members)")
            ax.set_ylabel("members / s")
            ax.set_title(f"{'perturbed forward' if suite == 'forward' else 'ES update'} "
                         f"[{be}/{dev}], m = n = {size}", fontsize=10)
            if rows:
                ax.legend(fontsize=7)
    if not drew:
        return None
    _note_noise(fig, records)
    fig.savefig(path)
    return path


def fraction_of_inference_vs_size(records: list[dict[str, Any]], pop: int, path: pathlib.Path
                                  ) -> pathlib.Path | None:
    backends = _backends(records)
    if not backends:
        return None
    fig, axes = _figure(len(backends), 2)
    drew = False
    for row, (be, dev) in zip(axes, backends):
        for ax, suite, what in ((row[0], "forward", "of x @ W.T"),
                                (row[1], "update", "of the same-shape GEMM")):
            rows = _ok(records, suite, P=pop, backend=be, device=dev)
            xs_all: list[int] = []
            ranks = sorted({r["rank"] for r in rows})
            for rank in ranks:
                xs, ys, bad = _series([r for r in rows if r["rank"] == rank], "m",
                                      "rel_throughput", ("eggroll", "baseline"))
                _draw(ax, xs, ys, bad, "o-", f"EGGROLL r={rank}", _rank_color(rank, ranks))
                xs_all += xs
            if suite == "forward":
                idiom = [dict(r, idiom_rel=r["baseline_median_s"] / r["idiom_median_s"])
                         for r in rows if r.get("idiom_median_s")]
                xs, ys, bad = _series(idiom, "m", "idiom_rel", ("idiom", "baseline"))
                _draw(ax, xs, ys, bad, "^-.", f"{be} idiom, r={idiom[0]['rank']}"
                      if idiom else "idiom", "tab:gray")
            drew = drew or bool(rows)
            ax.axhline(1.0, color="k", ls="--", lw=1, label="= baseline")
            _log2_x(ax, xs_all)
            _finish_axes(ax, floor=1.0)
            ax.set_xlabel("matrix size m = n")
            ax.set_ylabel(f"throughput, fraction {what}", fontsize=8)
            ax.set_title(f"{'perturbed forward' if suite == 'forward' else 'ES update'} "
                         f"[{be}/{dev}], P = {pop}", fontsize=10)
            ax.legend(fontsize=7)
    if not drew:
        return None
    _note_noise(fig, records)
    fig.savefig(path)
    return path


def speedup_vs_fullrank(records: list[dict[str, Any]], pop: int, path: pathlib.Path
                        ) -> pathlib.Path | None:
    backends = [b for b in _backends(records)
                if any(r.get("speedup_vs_full") is not None for r in records
                       if (r.get("backend"), r.get("device")) == b)]
    if not backends:
        return None
    fig, axes = _figure(len(backends), 1)
    for row, (be, dev) in zip(axes, backends):
        ax = row[0]
        xs_all: list[int] = []
        ys_all: list[float] = []
        for suite, marker in (("forward", "o-"), ("update", "s--")):
            rows = _ok(records, suite, P=pop, backend=be, device=dev)
            ranks = sorted({r["rank"] for r in rows})
            for rank in ranks:
                xs, ys, bad = _series([r for r in rows if r["rank"] == rank], "m",
                                      "speedup_vs_full", ("eggroll", "full"))
                if xs:
                    _draw(ax, xs, ys, bad, marker, f"{suite} r={rank}",
                          _rank_color(rank, ranks))
                    xs_all += xs
                    ys_all += ys
        if ys_all and min(ys_all) < 2.0:     # break-even line, only where the data come near
            ax.axhline(1.0, color="k", lw=1)
        _log2_x(ax, xs_all)
        ax.set_yscale("log")
        _finish_axes(ax, log=True)
        ax.set_xlabel("matrix size m = n")
        ax.set_ylabel("full-rank time / EGGROLL time", fontsize=8)
        ax.set_title(f"speed-up over full-rank ES [{be}/{dev}] (same population P = {pop}, "
                     "same run)", fontsize=10)
        ax.legend(fontsize=7, ncol=2)
    _note_noise(fig, records)
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
