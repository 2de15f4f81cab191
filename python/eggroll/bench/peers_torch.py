"""bench_peers --backend torch: the eggroll torch op against what a PyTorch user would write.

Run:  PYTHONPATH=python python bench/bench_peers.py --backend torch [--quick|--smoke]
      [--device cpu|cuda]
      [--threads N] [--repeat R] [--jsonl out.jsonl]   (JSON lines on stdout, tables on stderr)

For each configuration (P members, b rows each, W [m, n], rank r, antithetic, sigma 0.01),
timed interleaved in the same run (median of >= 5):
  plain     x @ W.T  (torch, [P*b, n] @ [n, m]): the GEMM any population needs; no noise.
  eggroll   eggroll.perturbed_matmul(x, W, members=...) on torch tensors: the custom op
            torch.ops.eggroll.perturbed_matmul (CPU: the core's GEMM + in-place correction).
  idiom     the idiomatic PyTorch low-rank ES forward: torch.randn factors A [P/2, m, r],
            B [P/2, n, r] (one pair per antithetic pair, repeat_interleave'd, A signed and
            scaled), then x @ W.T + torch.bmm(torch.bmm(x, B), A^T).
Ratios (same-run medians): idiom/eggroll (issue target >= 2) and eggroll/plain (target
<= 1.15). Correctness: the idiom on eggroll.torch.lowrank_factors (the same noise) must give
eggroll's result (max |diff| is recorded). torch.set_num_threads follows eggroll's threads.
"""
from __future__ import annotations

import math
import sys
from typing import Any, Callable

import eggroll
from eggroll.bench import harness

SEED = 42
SIGMA = 0.01


def _parser() -> Any:
    p = harness.parser(__doc__)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="where the tensors live (cuda needs a CUDA build of eggroll)")
    p.add_argument("--smoke", action="store_true", help="one tiny configuration (tests)")
    return p


def candidates(torch: Any, x: Any, W: Any, P: int, b: int, r: int
               ) -> dict[str, Callable[[], Any]]:
    """The callables to time: x float32 [P, n] (b == 1) or [P, b, n], W float32 [m, n]."""
    import eggroll.torch as et
    m, n = W.shape
    dev = x.device
    x2 = x.reshape(P * b, n)
    x3 = x.reshape(P, b, n)
    sign = torch.tensor([1.0, -1.0], device=dev).repeat(P // 2)        # [P] antithetic s_i
    scale = SIGMA / math.sqrt(r)
    gen = torch.Generator(device=dev).manual_seed(1)

    def idiom() -> Any:
        A = torch.randn(P // 2, m, r, generator=gen, device=dev)          # [P/2, m, r]
        B = torch.randn(P // 2, n, r, generator=gen, device=dev)          # [P/2, n, r]
        A = A.repeat_interleave(2, dim=0) * (scale * sign)[:, None, None]  # [P, m, r]
        B = B.repeat_interleave(2, dim=0)                                  # [P, n, r]
        corr = torch.bmm(torch.bmm(x3, B), A.transpose(1, 2))             # [P, b, m]
        return (x2 @ W.T).reshape(P, b, m) + corr

    return {
        "plain": lambda: x2 @ W.T,
        # A range: checked on the host and made on the device (a CUDA index tensor would
        # cost a sync per call for its sign check).
        "eggroll": lambda: et.perturbed_matmul(x, W, members=range(P), seed=SEED, epoch=0,
                                               sigma=SIGMA, rank=r),
        "idiom": idiom,
    }


def check(torch: Any, x: Any, W: Any, P: int, b: int, r: int) -> float:
    """max |eggroll - the idiom's formula on eggroll's own factors| (same noise)."""
    import eggroll.torch as et
    m, n = W.shape
    A, B = et.lowrank_factors((m, n), members=torch.arange(P, device=x.device), seed=SEED, epoch=0,
                              sigma=SIGMA, rank=r)
    x3 = x.reshape(P, b, n)
    ref = (x3 @ W.T) + torch.bmm(torch.bmm(x3, B), A.transpose(1, 2))
    y = et.perturbed_matmul(x, W, members=range(P), seed=SEED, epoch=0, sigma=SIGMA, rank=r)
    return float((y.reshape(P, b, m) - ref).abs().max())


def run_config(s: harness.Session, torch: Any, kind: str, device: str, P: int, b: int, m: int,
               n: int, r: int, repeat: int) -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn((P, n) if b == 1 else (P, b, n), generator=g).to(device)
    W = (torch.randn(m, n, generator=g) / math.sqrt(n)).to(device)
    fns = candidates(torch, x, W, P, b, r)
    sync = torch.cuda.synchronize if device == "cuda" else None
    res = harness.measure_interleaved(fns, warmup=2, repeat=repeat, min_time=0.05, sync=sync)
    flops = 2.0 * P * b * m * n
    rec: dict[str, Any] = {
        "kind": kind, "backend": "torch", "device": device, "P": P, "b": b, "m": m, "n": n,
        "rank": r, "sigma": SIGMA, "antithetic": True, "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "threads": eggroll.get_num_threads(),
        "gemm_flops": flops, "check_max_abs_diff": check(torch, x, W, P, b, r),
    }
    for name, mres in res.items():
        rec.update(harness.timing_fields(name, mres))
        rec[f"{name}_gflops"] = harness.gflops(flops, mres["median_s"])
    med = {name: mres["median_s"] for name, mres in res.items()}
    rec["idiom_over_eggroll"] = med["idiom"] / med["eggroll"]
    rec["eggroll_over_plain"] = med["eggroll"] / med["plain"]
    rec["noisy"] = any(mres["noisy"] for mres in res.values())
    return s.emit(rec)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        import torch
    except ImportError:
        print("bench_peers --backend torch: torch is not installed", file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_peers --backend torch: --device cuda but torch sees no GPU", file=sys.stderr)
        return 2
    with harness.Session(args) as s:
        torch.set_num_threads(eggroll.get_num_threads())
        configs = [("headline", 512, 1, 1024, 1024, 1)]
        if args.smoke:
            configs = [("smoke", 8, 2, 16, 24, 2)]
        elif not args.quick:
            configs += [("grid", 512, 8, 256, 256, 1), ("grid", 512, 1, 1024, 1024, 4),
                        ("grid", 512, 8, 1024, 1024, 1)]
        recs = []
        for kind, P, b, m, n, r in configs:
            harness.log(f"{kind} P={P} b={b} W [{m}, {n}] r={r} on {args.device} ...")
            recs.append(run_config(s, torch, kind, args.device, P, b, m, n, r, args.repeat))
        rows = [dict(rec, plain_ms=rec["plain_median_s"] * 1e3,
                     eggroll_ms=rec["eggroll_median_s"] * 1e3,
                     idiom_ms=rec["idiom_median_s"] * 1e3, flag="NOISY" if rec["noisy"] else "")
                for rec in recs]
        harness.table(rows, ["P", "b", "m", "n", ("rank", "r"), ("plain_ms", "x@W.T ms"),
                             ("eggroll_ms", "eggroll ms"), ("idiom_ms", "randn+bmm ms"),
                             ("idiom_over_eggroll", "idiom/eggroll"),
                             ("eggroll_over_plain", "eggroll/plain"),
                             ("check_max_abs_diff", "check |diff|"), ("flag", "")],
                      title=(f"torch {torch.__version__} on {args.device}, "
                             f"{torch.get_num_threads()} torch threads, "
                             f"{eggroll.get_num_threads()} eggroll threads (same-run medians; "
                             "targets: idiom/eggroll >= 2, eggroll/plain <= 1.15)"))
    return 0
