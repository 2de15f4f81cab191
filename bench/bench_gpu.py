"""GPU benchmarks of the CUDA backend (an H100/H200-class GPU, torch with CUDA), baselines in
the same run, through the public ops on torch CUDA tensors.

Run:  python bench/bench_gpu.py [--quick] [--out DIR]   (JSON lines on stdout, a table on stderr;
      with --out: DIR/bench_gpu.jsonl and DIR/bench_gpu.md)

Timing: CUDA events around each call on the current stream, the contenders of a group called
round robin (a, b, a, b, ...) after warm-up calls; the median of --repeat calls. Every eggroll
contender is timed twice: called eagerly (what a Python loop gets: the host's work per call is
inside the window when the GPU waits for it) and replayed from a CUDA graph captured around
the same call (device time alone; the capture is itself the check that the op is capturable).
  1. forward: W [8192, 8192] bf16, rank 1, noise regenerated, 1024 members x 1 row and x 16
     rows. inference = x @ W.T (cuBLAS via torch.matmul); eggroll = eggroll.perturbed_matmul
     (the same cuBLAS GEMM, injected, with x . B on a second stream while it runs, then the
     rank-1 add). fraction = t(inference) / t(eggroll). Target >= 0.95.
  2. full-rank (OpenES) forward at 1024 x 1 (the paper reports 0.41% of inference).
  3. es_gradient fp32, N = 1024, W [8192, 8192], r = 1: eggroll.es_gradient (factor rows of
     the 512 antithetic pairs + one injected GEMM) against its GEMM alone, torch.matmul
     [8192, 512] @ [512, 8192]; the factor rows alone (_cuda.es_gradient_factors). Target <= 1.3.
  4. noise: eggroll.normal of 2^28 float32 values (G normals/s) against a fill of the buffer.
  5. int8: eggroll.perturbed_matmul_int8 (own dp4a GEMM, correction in its epilogue) at the
     1024 x 1 shape against the bf16 and fp32 forwards; target >= 1.5x bf16 throughput.
  6. JAX (when it sees a GPU): the jitted eggroll forward (float32) against XLA's dot.
A measurement that fails (or a graph that cannot be captured) is reported as FAILED in its row
and the others still run (exit status 1); with --out the files are rewritten after every
measurement, so a run cut short keeps what it measured.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from typing import Any, Callable

import eggroll

SEED = 1234
M_ROWS, N_IN, N_OUT = 1024, 8192, 8192
KEY = dict(epoch=0, seed=SEED, sigma=0.01)


def time_group(fns: dict[str, Callable[[], Any]], repeat: int, warmup: int = 3) -> dict[str, float]:
    """Median milliseconds per call of each function (CUDA events, round robin)."""
    import torch
    for f in fns.values():
        for _ in range(warmup):
            f()
    torch.cuda.synchronize()
    pairs: dict[str, list[Any]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, f in fns.items():
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            f()
            e.record()
            pairs[k].append((s, e))
    torch.cuda.synchronize()
    return {k: statistics.median(s.elapsed_time(e) for s, e in v) for k, v in pairs.items()}


def graphed(fn: Callable[[], Any]) -> Callable[[], Any]:
    """fn captured once in a CUDA graph (after warm-up on a side stream): its replay."""
    import torch
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return g.replay


def add_graphs(fns: dict[str, Callable[[], Any]], names: tuple[str, ...]) -> dict[str, str]:
    """fns[name + "_graph"] = the replay of fns[name] captured in a CUDA graph, for each name;
    a capture that fails leaves its entry out (the eager figures stand) and its error is
    returned, so that the record says why its graph column is empty."""
    import torch
    errors = {}
    for name in names:
        try:
            fns[name + "_graph"] = graphed(fns[name])
        except Exception as e:                     # noqa: BLE001 - reported in the record
            torch.cuda.synchronize()
            errors[name + "_graph_error"] = f"{type(e).__name__}: {e}"[:300]
    return errors


def _ratio(t: dict[str, float], num: str, den: str) -> float | None:
    return t[num] / t[den] if num in t and den in t else None


def host_us(fn: Callable[[], Any], n: int = 20) -> float:
    """Host time to enqueue one call (microseconds, the GPU drained before and after)."""
    import torch
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    return (t1 - t0) / n * 1e6


def forward_group(rows: int, repeat: int) -> dict[str, Any]:
    import torch
    g = torch.Generator(device="cuda").manual_seed(SEED)
    x = torch.randn(M_ROWS, rows, N_IN, device="cuda", generator=g).to(torch.bfloat16)
    W = (torch.randn(N_OUT, N_IN, device="cuda", generator=g) / N_IN ** 0.5).to(torch.bfloat16)
    y = torch.empty(M_ROWS, rows, N_OUT, device="cuda", dtype=torch.bfloat16)
    x2, y2 = x.view(-1, N_IN), y.view(-1, N_OUT)
    fns = {"inference": lambda: torch.matmul(x2, W.T, out=y2),
           "eggroll": lambda: eggroll.perturbed_matmul(x, W, members=range(M_ROWS), rank=1, out=y, **KEY)}
    errors = add_graphs(fns, ("inference", "eggroll"))
    return dict(forward_record(rows, time_group(fns, repeat), host_us(fns["eggroll"])), **errors)


def forward_record(rows: int, t: dict[str, float], host: float) -> dict[str, Any]:
    """The forward record from the median times (ms) of inference / eggroll, eager and graph
    (a graph whose capture failed has no time: its ratio is None)."""
    flops = 2.0 * M_ROWS * rows * N_IN * N_OUT
    return dict(bench="forward", dtype="bfloat16", members=M_ROWS, rows_per_member=rows, m=N_OUT,
                n=N_IN, rank=1, **{f"{k}_ms": v for k, v in t.items()},
                fraction_of_inference=t["inference"] / t["eggroll"],
                fraction_graph=_ratio(t, "inference_graph", "eggroll_graph"),
                inference_tflops=flops / t["inference"] / 1e9, host_us_per_call=host, target=0.95)


def full_rank_group(repeat: int, eggroll_ms: float) -> dict[str, Any]:
    import torch
    g = torch.Generator(device="cuda").manual_seed(SEED)
    x = torch.randn(M_ROWS, N_IN, device="cuda", generator=g).to(torch.bfloat16)
    W = (torch.randn(N_OUT, N_IN, device="cuda", generator=g) / N_IN ** 0.5).to(torch.bfloat16)
    t = time_group({"inference": lambda: torch.matmul(x, W.T),
                    "full_rank": lambda: eggroll.perturbed_matmul_full(x, W, members=range(M_ROWS), **KEY)},
                   repeat, warmup=1)
    return dict(bench="forward_full_rank", dtype="bfloat16", members=M_ROWS, m=N_OUT, n=N_IN,
                inference_ms=t["inference"], full_rank_ms=t["full_rank"],
                fraction_of_inference=t["inference"] / t["full_rank"],
                eggroll_speedup_vs_full=t["full_rank"] / eggroll_ms)


def update_group(repeat: int) -> dict[str, Any]:
    import torch
    from eggroll import _cuda
    N, C = M_ROWS, M_ROWS // 2                     # antithetic pairs fold into one row each
    g = torch.Generator(device="cuda").manual_seed(SEED)
    f = torch.randn(N, device="cuda", generator=g)
    Af = torch.randn(C, N_OUT, device="cuda", generator=g)
    Bf = torch.randn(C, N_IN, device="cuda", generator=g)
    out = torch.empty(N_OUT, N_IN, device="cuda")
    key = (SEED, 0, 0, 1, True, 0.01, 1, 4, 0)

    def factors() -> Any:
        return _cuda.es_gradient_factors(f, (N_OUT, N_IN), range(N), N, *key,
                                         torch.cuda.current_stream().cuda_stream)
    fns = {"gemm": lambda: torch.matmul(Af.t(), Bf, out=out),
           "es_gradient": lambda: eggroll.es_gradient(f, (N_OUT, N_IN), rank=1, **KEY),
           "factors": factors}
    errors = add_graphs(fns, ("es_gradient", "gemm"))
    return dict(update_record(time_group(fns, repeat), host_us(fns["es_gradient"])), **errors)


def update_record(t: dict[str, float], host: float) -> dict[str, Any]:
    """The es_gradient record from the median times (ms), eager and graph (None without)."""
    return dict(bench="es_gradient", dtype="float32", members=M_ROWS, m=N_OUT, n=N_IN, rank=1,
                rows=M_ROWS // 2, **{f"{k}_ms": v for k, v in t.items()},
                ratio_to_gemm=t["es_gradient"] / t["gemm"],
                ratio_graph=_ratio(t, "es_gradient_graph", "gemm_graph"), host_us_per_call=host,
                target=1.3)


def noise_group(repeat: int, count: int) -> dict[str, Any]:
    import torch
    like = torch.empty(0, device="cuda")
    buf = torch.empty(count, device="cuda")
    t = time_group({"normal": lambda: eggroll.normal(count, seed=SEED, like=like),
                    "fill": lambda: buf.fill_(1.0)}, repeat)
    rate, bound = count / (t["normal"] * 1e-3) / 1e9, count / (t["fill"] * 1e-3) / 1e9
    return dict(bench="noise", count=count, normal_ms=t["normal"], fill_ms=t["fill"],
                g_normals_per_s=rate, write_bound_g_per_s=bound, write_gb_per_s=4 * bound,
                of_bound=rate / bound)


def int8_group(repeat: int) -> dict[str, Any]:
    import torch
    g = torch.Generator(device="cuda").manual_seed(SEED)
    # bench/bench_int8.py's value ranges: x in [-16, 16], W in [-127, 127]
    x8 = torch.randint(-16, 17, (M_ROWS, N_IN), device="cuda", generator=g, dtype=torch.int8)
    W8 = torch.randint(-127, 128, (N_OUT, N_IN), device="cuda", generator=g, dtype=torch.int8)
    x32, W32 = x8.float() / 16, W8.float() / (16 * N_IN ** 0.5)
    xb, Wb = x32.to(torch.bfloat16), W32.to(torch.bfloat16)
    mem = dict(members=range(M_ROWS), epoch=0, seed=SEED)
    return int8_record(time_group(
        {"int8": lambda: eggroll.perturbed_matmul_int8(x8, W8, sigma_shift=4, **mem),
         "bfloat16": lambda: eggroll.perturbed_matmul(xb, Wb, sigma=0.01, **mem),
         "float32": lambda: eggroll.perturbed_matmul(x32, W32, sigma=0.01, **mem)}, repeat))


def int8_record(t: dict[str, float]) -> dict[str, Any]:
    """The int8 record from the median times (ms) of the int8, bf16 and fp32 forwards (one
    shape, so throughput ratio = time ratio)."""
    ops = 2.0 * M_ROWS * N_IN * N_OUT
    return dict(bench="forward_int8", members=M_ROWS, m=N_OUT, n=N_IN, rank=1, fixed_point=4,
                sigma_shift=4, **{f"{k}_ms": v for k, v in t.items()},
                int8_tops=ops / t["int8"] / 1e9, int8_vs_bfloat16=t["bfloat16"] / t["int8"],
                int8_vs_float32=t["float32"] / t["int8"], target_vs_bfloat16=1.5)


def jax_group(repeat: int) -> dict[str, Any] | None:
    """The JAX CUDA handlers at the 1024 x 1 shape (float32: eggroll.jax computes float32)."""
    try:
        import jax
        import jax.numpy as jnp
        dev = jax.devices("gpu")[0]
    except Exception:                              # no jax, or a CPU-only jaxlib
        return None
    k = jax.random.split(jax.random.PRNGKey(SEED))
    x = jax.device_put(jax.random.normal(k[0], (M_ROWS, N_IN), jnp.float32), dev)
    W = jax.device_put(jax.random.normal(k[1], (N_OUT, N_IN), jnp.float32) / N_IN ** 0.5, dev)
    hi = jax.lax.Precision.HIGHEST
    inf = jax.jit(lambda x, W: jnp.matmul(x, W.T, precision=hi))
    fwd = jax.jit(lambda x, W, e: eggroll.perturbed_matmul(x, W, members=range(M_ROWS), epoch=e,
                                                          seed=SEED, sigma=0.01))
    e = jax.device_put(jnp.int32(0), dev)
    times: dict[str, list[float]] = {"inference": [], "eggroll": []}
    for name, call in (("inference", lambda: inf(x, W)), ("eggroll", lambda: fwd(x, W, e))):
        for _ in range(3):
            call().block_until_ready()
    for _ in range(repeat):                        # wall time of a jitted call, synchronised
        for name, call in (("inference", lambda: inf(x, W)), ("eggroll", lambda: fwd(x, W, e))):
            t0 = time.perf_counter()
            call().block_until_ready()
            times[name].append((time.perf_counter() - t0) * 1e3)
    t = {k: statistics.median(v) for k, v in times.items()}
    return dict(bench="jax_forward", dtype="float32", members=M_ROWS, m=N_OUT, n=N_IN, rank=1,
                inference_ms=t["inference"], eggroll_ms=t["eggroll"],
                fraction_of_inference=t["inference"] / t["eggroll"])


def _f(v: float | None, fmt: str, unit: str = "") -> str:
    """v formatted (+ unit), or "n/a" (a graph that could not be captured)."""
    return "n/a" if v is None else format(v, fmt) + unit


def render_md(records: list[dict[str, Any]], stamp: dict[str, Any], repeat: int) -> list[str]:
    """The human table: one row per measurement."""
    md = [f"GPU benchmarks, {stamp['date']}, {stamp['gpu']} (bench/bench_gpu.py, median of "
          f"{repeat} calls, CUDA events; eager / CUDA-graph replay)", "",
          "| measurement | eggroll | baseline | ratio | target |", "|---|---|---|---|---|"]
    for r in records:
        b = r["bench"]
        if "error" in r:
            md.append(f"| {b} | FAILED: {r['error']} | | | |")
        elif b == "forward":
            md.append(f"| forward bf16, 1024 x {r['rows_per_member']} rows, [8192 -> 8192], r=1 | "
                      f"{r['eggroll_ms']:.3f} / {_f(r.get('eggroll_graph_ms'), '.3f')} ms (host "
                      f"{r['host_us_per_call']:.0f} us/call) | inference {r['inference_ms']:.3f} / "
                      f"{_f(r.get('inference_graph_ms'), '.3f')} ms ({r['inference_tflops']:.0f} TFLOP/s) | "
                      f"{r['fraction_of_inference']:.3f} / {_f(r['fraction_graph'], '.3f')} of inference "
                      f"| >= 0.95 |")
        elif b == "forward_full_rank":
            md.append(f"| full-rank (OpenES) forward, 1024 x 1 | {r['full_rank_ms']:.1f} ms | "
                      f"inference {r['inference_ms']:.3f} ms | {100 * r['fraction_of_inference']:.3f}% "
                      f"of inference; EGGROLL {r['eggroll_speedup_vs_full']:.0f}x faster | paper: 0.41% |")
        elif b == "es_gradient":
            md.append(f"| es_gradient fp32, N=1024, [8192, 8192], r=1 | {r['es_gradient_ms']:.3f} / "
                      f"{_f(r.get('es_gradient_graph_ms'), '.3f')} ms (factor rows {r['factors_ms']:.3f} "
                      f"ms; host {r['host_us_per_call']:.0f} us/call) | GEMM [8192,512]@[512,8192] "
                      f"{r['gemm_ms']:.3f} / {_f(r.get('gemm_graph_ms'), '.3f')} ms | "
                      f"{r['ratio_to_gemm']:.2f}x / {_f(r['ratio_graph'], '.2f', 'x')} | <= 1.3x |")
        elif b == "noise":
            md.append(f"| noise, 2^28 normals | {r['g_normals_per_s']:.1f} G normals/s | fill "
                      f"{r['write_bound_g_per_s']:.1f} G/s ({r['write_gb_per_s']:.0f} GB/s) | "
                      f"{r['of_bound']:.2f} of the fill | - |")
        elif b == "forward_int8":
            md.append(f"| int8 forward (dp4a), 1024 x [8192 -> 8192], r=1 | {r['int8_ms']:.3f} ms "
                      f"({r['int8_tops']:.0f} TOP/s) | bf16 forward {r['bfloat16_ms']:.3f} ms, fp32 "
                      f"{r['float32_ms']:.3f} ms | {r['int8_vs_bfloat16']:.2f}x bf16, "
                      f"{r['int8_vs_float32']:.2f}x fp32 | >= 1.5x bf16 |")
        elif b == "jax_forward":
            md.append(f"| JAX forward fp32 (jit), 1024 x [8192 -> 8192], r=1 | {r['eggroll_ms']:.3f} ms "
                      f"(wall, synchronised) | XLA dot {r['inference_ms']:.3f} ms | "
                      f"{r['fraction_of_inference']:.3f} of inference | - |")
        for k, v in r.items():                     # graph captures that failed
            if k.endswith("_graph_error"):
                md.append(f"| {b}: {k[:-len('_error')]} | capture FAILED: {v} | | | |")
    return md


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--repeat", type=int, default=None)
    ap.add_argument("--out", default=None, help="directory for bench_gpu.jsonl / bench_gpu.md")
    args = ap.parse_args(argv)
    try:
        import torch
        ok = torch.cuda.is_available() and eggroll.cuda_available()
    except ImportError:
        ok = False
    if not ok:
        print("bench_gpu: needs torch with CUDA, a CUDA build of eggroll and a GPU", file=sys.stderr)
        return 2
    repeat = args.repeat or (5 if args.quick else 21)
    stamp = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                 gpu=str(torch.cuda.get_device_name()), eggroll=eggroll.__version__)
    groups: list[tuple[str, Callable[[], dict[str, Any] | None]]] = [
        ("forward", lambda: forward_group(1, repeat)),
        ("forward", lambda: forward_group(16, repeat)),
        ("forward_full_rank", lambda: full_rank_group(
            3 if args.quick else 5, next((r["eggroll_ms"] for r in records if r["bench"] == "forward"
                                          and "eggroll_ms" in r), float("nan")))),
        ("es_gradient", lambda: update_group(repeat)),
        ("noise", lambda: noise_group(repeat, 1 << 28)),
        ("forward_int8", lambda: int8_group(repeat)),
        ("jax_forward", lambda: jax_group(repeat))]
    records: list[dict[str, Any]] = []
    failed = False
    for name, group in groups:   # a group that fails is reported; the others still run
        try:
            r = group()
        except Exception as e:                     # noqa: BLE001 - reported in the record
            failed = True
            r = dict(bench=name, error=f"{type(e).__name__}: {e}"[:300])
            try:
                torch.cuda.synchronize()
            except Exception:                      # noqa: BLE001 - a sticky CUDA error
                pass
        if r is None:
            continue
        records.append(r)
        print(json.dumps(dict(stamp, **r)), flush=True)
        if args.out:                               # written as it comes: a cut-off run keeps its figures
            os.makedirs(args.out, exist_ok=True)
            with open(os.path.join(args.out, "bench_gpu.jsonl"), "w") as fh:
                fh.write("".join(json.dumps(dict(stamp, **x)) + "\n" for x in records))
            with open(os.path.join(args.out, "bench_gpu.md"), "w") as fh:
                fh.write("\n".join(render_md(records, stamp, repeat)) + "\n")
    print("\n".join(render_md(records, stamp, repeat)), file=sys.stderr)
    if failed:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
