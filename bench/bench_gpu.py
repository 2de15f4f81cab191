"""GPU benchmarks of the CUDA backend (run on an H100/H200-class GPU), baselines in the same run.

Run:  python bench/bench_gpu.py [--quick] [--out DIR]   (JSON lines on stdout, a table on stderr;
      with --out: DIR/bench_gpu.jsonl and DIR/bench_gpu.md)

Timing: CUDA events around each call on the current stream, the contenders of a group called
round robin (a, b, a, b, ...) after 3 warm-up calls each; the median of --repeat calls.
  1. The paper's setting: one linear layer W [8192, 8192] bf16, 1024 members x 1 row, rank 1.
     inference = x @ W.T (cuBLAS through torch.matmul; CuPy float16 when torch is missing);
     eggroll   = eggroll.perturbed_matmul (the same GEMM, then the low-rank correction kernel,
                 noise regenerated on the fly); correction = eggroll - inference;
     fraction  = time(inference) / time(eggroll) = EGGROLL throughput as a fraction of
     inference throughput. Target >= 0.95.
  2. The full-rank (OpenES) baseline at the same setting: eggroll.perturbed_matmul_full
     (Z_k [8192, 8192] regenerated per member pair, no workspace); fraction as above
     (the paper reports 0.41% for OpenES).
  3. es_gradient (float32, 1024 members, rank 1, W [8192, 8192]) = factor kernel + one cuBLAS
     GEMM g = Af^T Bf over C = 512 folded columns, against a cuBLAS GEMM of that shape
     ([8192, 512] @ [512, 8192], float32) alone. Target ratio <= 1.3.
  4. Noise: eggroll.normal of 2^28 float32 values on the GPU, in G normals/s, against the write
     bandwidth bound: cupy fill of the same buffer (4 B written per value).
  5. int8: eggroll.perturbed_matmul_int8 on CuPy int8 arrays (the CUDA dp4a GEMM with the
     correction in its epilogue; fixed_point 4, sigma_shift 4) at the headline shape, against
     the float32 perturbed forward (eggroll.perturbed_matmul on CuPy float32: cuBLAS SGEMM +
     lowrank_correction) and the half-precision one of group 1 (bf16 with torch, float16 with
     CuPy), all in one round robin, members=range(1024) through the public API for int8 and
     float32. Same shape, so throughput ratio = time ratio: int8/float32 = t_f32 / t_int8.
     Target >= 2. TOP/s count the base product: 2 * 1024 * 8192 * 8192.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
from typing import Any, Callable

import numpy as np

import eggroll
from eggroll._ops import cuda_module

SEED = 1234
M_ROWS, N_IN, N_OUT = 1024, 8192, 8192
KEY = dict(seed=SEED, param_id=0, epoch=0, noise_reuse=1, antithetic=True, sigma=0.01)


def time_group(fns: dict[str, Callable[[], Any]], events: Callable[[], Any], sync: Callable[[], None],
               repeat: int, warmup: int = 3) -> dict[str, float]:
    """Median milliseconds per call of each function, round robin; events() -> (start, end)."""
    for f in fns.values():
        for _ in range(warmup):
            f()
    sync()
    pairs: dict[str, list[Any]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, f in fns.items():
            s, e = events()
            s.record()
            f()
            e.record()
            pairs[k].append((s, e))
    sync()
    return {k: statistics.median(float(_elapsed(s, e)) for s, e in v) for k, v in pairs.items()}


def _elapsed(s: Any, e: Any) -> float:
    if hasattr(s, "elapsed_time"):                 # torch.cuda.Event
        return s.elapsed_time(e)
    import cupy as cp                              # cupy.cuda.Event
    return cp.cuda.get_elapsed_time(s, e)


class TorchBackend:
    """bf16 forwards with torch tensors (cuBLAS via torch.matmul) and eggroll._cuda directly."""
    name = "torch"

    def __init__(self) -> None:
        import torch
        self.t = torch
        self.dtype_name = "bfloat16"

    def stream(self) -> int:
        return int(self.t.cuda.current_stream().cuda_stream)

    def events(self) -> Any:
        return (self.t.cuda.Event(enable_timing=True), self.t.cuda.Event(enable_timing=True))

    def sync(self) -> None:
        self.t.cuda.synchronize()

    def inputs(self) -> tuple[Any, Any, Any, Any]:
        t = self.t
        g = t.Generator(device="cuda").manual_seed(SEED)
        x = t.randn(M_ROWS, N_IN, device="cuda", generator=g).to(t.bfloat16)
        W = (t.randn(N_OUT, N_IN, device="cuda", generator=g) / N_IN ** 0.5).to(t.bfloat16)
        y = t.empty(M_ROWS, N_OUT, device="cuda", dtype=t.bfloat16)
        mem = t.arange(M_ROWS, device="cuda", dtype=t.int64)
        return x, W, y, mem

    def gemm(self, x: Any, W: Any, y: Any) -> None:
        self.t.matmul(x, W.T, out=y)

    def gpu_name(self) -> str:
        return str(self.t.cuda.get_device_name())


class CupyBackend(TorchBackend):
    """float16 forwards with CuPy (when torch is not installed)."""
    name = "cupy"

    def __init__(self) -> None:
        import cupy as cp
        self.cp = cp
        self.dtype_name = "float16"

    def stream(self) -> int:
        return int(self.cp.cuda.get_current_stream().ptr)

    def events(self) -> Any:
        return (self.cp.cuda.Event(), self.cp.cuda.Event())

    def sync(self) -> None:
        self.cp.cuda.Device().synchronize()

    def inputs(self) -> tuple[Any, Any, Any, Any]:
        cp = self.cp
        rs = cp.random.RandomState(SEED)
        x = rs.standard_normal((M_ROWS, N_IN), dtype=cp.float32).astype(cp.float16)
        W = (rs.standard_normal((N_OUT, N_IN), dtype=cp.float32) / N_IN ** 0.5).astype(cp.float16)
        return x, W, cp.empty((M_ROWS, N_OUT), cp.float16), cp.arange(M_ROWS, dtype=cp.int64)

    def gemm(self, x: Any, W: Any, y: Any) -> None:
        self.cp.matmul(x, W.T, out=y)

    def gpu_name(self) -> str:
        props = self.cp.cuda.runtime.getDeviceProperties(self.cp.cuda.Device().id)
        return props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])


def half_forwards(bk: Any) -> dict[str, Callable[[], None]]:
    """The half-precision forwards on the backend's headline inputs: "inference" (the GEMM),
    "eggroll" (eggroll.perturbed_matmul: the GEMM + the low-rank correction) and "full_rank"
    (perturbed_matmul_full: the GEMM + the OpenES correction), each writing y."""
    x, W, y, mem = bk.inputs()
    return {"inference": lambda: bk.gemm(x, W, y),
            "eggroll": lambda: eggroll.perturbed_matmul(x, W, members=mem, out=y, rank=1, **KEY),
            "full_rank": lambda: eggroll.perturbed_matmul_full(x, W, members=mem, out=y, **KEY)}


def forward_group(bk: Any, repeat: int, full_repeat: int) -> list[dict[str, Any]]:
    f = half_forwards(bk)
    t = time_group({"inference": f["inference"], "eggroll": f["eggroll"]}, bk.events, bk.sync,
                   repeat)
    tf = time_group({"inference": f["inference"], "full_rank": f["full_rank"]}, bk.events,
                    bk.sync, full_repeat, warmup=1)
    flops = 2.0 * M_ROWS * N_IN * N_OUT
    common = dict(dtype=bk.dtype_name, backend=bk.name, members=M_ROWS, rows_per_member=1,
                  m=N_OUT, n=N_IN, rank=1)
    return [
        dict(common, bench="forward", inference_ms=t["inference"], eggroll_ms=t["eggroll"],
             correction_ms=t["eggroll"] - t["inference"], fraction_of_inference=t["inference"] / t["eggroll"],
             inference_tflops=flops / t["inference"] / 1e9, target=0.95),
        dict(common, bench="forward_full_rank", inference_ms=tf["inference"],
             full_rank_ms=tf["full_rank"], fraction_of_inference=tf["inference"] / tf["full_rank"],
             eggroll_speedup_vs_full=tf["full_rank"] / t["eggroll"]),
    ]


def update_group(repeat: int) -> dict[str, Any]:
    import cupy as cp
    from eggroll import cupy as ecp
    N = M_ROWS
    f = cp.asarray(np.random.default_rng(SEED).standard_normal(N).astype(np.float32))
    key = dict(epoch=0, seed=SEED, sigma=0.01, rank=1)
    C = N // 2                                     # antithetic pairs fold into one column
    Af = cp.random.standard_normal((C, N_OUT), dtype=cp.float32)
    Bf = cp.random.standard_normal((C, N_IN), dtype=cp.float32)
    g = cp.empty((N_OUT, N_IN), cp.float32)
    ev = lambda: (cp.cuda.Event(), cp.cuda.Event())  # noqa: E731
    sync = cp.cuda.Device().synchronize
    # The factor kernel alone (what es_gradient runs before its GEMM): es_gradient minus
    # factors minus gemm is the adapter's host work inside the event window (the fitness
    # finiteness check syncs, the member upload, the run structure).
    mem = cp.arange(N, dtype=cp.int64)
    cuda = cuda_module()

    def factors() -> None:   # the _cuda entry: es_gradient_factors(f, shape, members, N, *KEY)
        cuda.es_gradient_factors(f, (N_OUT, N_IN), mem, N, SEED, 0, 0, 1, True, 0.01, 1, 4, 0,
                                 int(cp.cuda.get_current_stream().ptr))
    t = time_group({"es_gradient": lambda: ecp.es_gradient(f, (N_OUT, N_IN), **key),
                    "gemm": lambda: cp.matmul(Af.T, Bf, out=g), "factors": factors},
                   ev, sync, repeat)
    return dict(bench="es_gradient", dtype="float32", members=N, m=N_OUT, n=N_IN, rank=1,
                columns=C, es_gradient_ms=t["es_gradient"], gemm_ms=t["gemm"],
                factors_ms=t["factors"],
                rest_ms=t["es_gradient"] - t["gemm"] - t["factors"],
                ratio_to_gemm=t["es_gradient"] / t["gemm"], target=1.3)


def int8_summary(t: dict[str, float], half_dtype: str | None) -> dict[str, Any]:
    """The int8 record from the group's median times (ms): "int8", "float32" and, when timed,
    "half" (the half-precision forward of group 1, dtype half_dtype)."""
    ops = 2.0 * M_ROWS * N_IN * N_OUT
    rec = dict(bench="forward_int8", members=M_ROWS, rows_per_member=1, m=N_OUT, n=N_IN, rank=1,
               fixed_point=4, sigma_shift=4, int8_ms=t["int8"], float32_ms=t["float32"],
               int8_tops=ops / t["int8"] / 1e9, float32_tflops=ops / t["float32"] / 1e9,
               int8_vs_float32=t["float32"] / t["int8"], target=2.0)
    if "half" in t:
        rec.update(half_dtype=half_dtype, half_ms=t["half"], int8_vs_half=t["half"] / t["int8"])
    return rec


def int8_group(bk: Any, repeat: int) -> dict[str, Any]:
    import cupy as cp
    rng = np.random.default_rng(SEED)
    # bench/bench_int8.py's value ranges: x in [-16, 16], W in [-127, 127]; float32 copies.
    x8 = cp.asarray(rng.integers(-16, 17, (M_ROWS, N_IN)).astype(np.int8))
    W8 = cp.asarray(rng.integers(-127, 128, (N_OUT, N_IN)).astype(np.int8))
    x32 = x8.astype(cp.float32) / 16
    W32 = W8.astype(cp.float32) / np.float32(16 * np.sqrt(N_IN))
    key = dict(members=range(M_ROWS), epoch=0, seed=SEED, rank=1)
    fns = {"int8": lambda: eggroll.perturbed_matmul_int8(x8, W8, sigma_shift=4, fixed_point=4, **key),
           "float32": lambda: eggroll.perturbed_matmul(x32, W32, sigma=0.01, **key)}
    # The half-precision forward of group 1 (same gemm + correction), on its backend's inputs.
    fns["half"] = half_forwards(bk)["eggroll"]
    # CuPy events on CuPy's current stream; torch's and CuPy's default streams are both the
    # legacy default stream, so the half contender (torch) is ordered between them too.
    ev = lambda: (cp.cuda.Event(), cp.cuda.Event())  # noqa: E731
    t = time_group(fns, ev, cp.cuda.Device().synchronize, repeat)
    return int8_summary(t, bk.dtype_name)


def noise_group(repeat: int, count: int) -> dict[str, Any]:
    import cupy as cp
    from eggroll import cupy as ecp
    out = cp.empty((count,), cp.float32)
    ev = lambda: (cp.cuda.Event(), cp.cuda.Event())  # noqa: E731
    t = time_group({"normal": lambda: ecp.normal(count, seed=SEED, like=out),
                    "fill": lambda: out.fill(1.0)}, ev, cp.cuda.Device().synchronize, repeat)
    rate = count / (t["normal"] * 1e-3) / 1e9
    bound = count / (t["fill"] * 1e-3) / 1e9
    return dict(bench="noise", count=count, normal_ms=t["normal"], fill_ms=t["fill"],
                g_normals_per_s=rate, write_bound_g_per_s=bound,
                write_gb_per_s=4 * bound, of_bound=rate / bound)


def render_md(records: list[dict[str, Any]], stamp: dict[str, Any], repeat: int) -> list[str]:
    """The human table: one row per measurement, from the records by their "bench" name."""
    by = {r["bench"]: r for r in records}
    f, ff, u, z, q = (by["forward"], by["forward_full_rank"], by["es_gradient"], by["noise"],
                      by["forward_int8"])
    half = (f"; int8/{q['half_dtype']} {q['int8_vs_half']:.2f}x" if "half_ms" in q else "")
    half_base = (f"; {q['half_dtype']} forward {q['half_ms']:.3f} ms" if "half_ms" in q else "")
    md = [f"GPU benchmarks, {stamp['date']}, {stamp['gpu']} (bench/bench_gpu.py, median of "
          f"{repeat} calls, CUDA events)", "",
          "| measurement | eggroll | baseline | ratio | target |", "|---|---|---|---|---|",
          f"| forward {f['dtype']}, 1024 x [8192 -> 8192], r=1 (regenerating) | "
          f"{f['eggroll_ms']:.3f} ms (correction {f['correction_ms']:.3f} ms) | inference "
          f"{f['inference_ms']:.3f} ms ({f['inference_tflops']:.0f} TFLOP/s) | "
          f"{f['fraction_of_inference']:.3f} of inference | >= 0.95 |",
          f"| full-rank (OpenES) forward, same setting | {ff['full_rank_ms']:.1f} ms | inference "
          f"{ff['inference_ms']:.3f} ms | {100 * ff['fraction_of_inference']:.3f}% of inference; "
          f"EGGROLL {ff['eggroll_speedup_vs_full']:.0f}x faster | paper: 0.41% |",
          f"| es_gradient fp32, N=1024, [8192, 8192], r=1 | {u['es_gradient_ms']:.3f} ms"
          + (f" (factor kernel {u['factors_ms']:.3f} ms, rest {u['rest_ms']:.3f} ms)"
             if "factors_ms" in u else "") + " | cuBLAS "
          f"GEMM [8192,512]@[512,8192] {u['gemm_ms']:.3f} ms | {u['ratio_to_gemm']:.2f}x | <= 1.3x |",
          f"| noise, 2^28 normals | {z['g_normals_per_s']:.1f} G normals/s | write bound "
          f"{z['write_bound_g_per_s']:.1f} G/s ({z['write_gb_per_s']:.0f} GB/s) | "
          f"{z['of_bound']:.2f} of bound | - |",
          f"| int8 forward (dp4a), 1024 x [8192 -> 8192], r=1 | {q['int8_ms']:.3f} ms "
          f"({q['int8_tops']:.0f} TOP/s) | float32 forward {q['float32_ms']:.3f} ms "
          f"({q['float32_tflops']:.0f} TFLOP/s){half_base} | int8/float32 throughput "
          f"{q['int8_vs_float32']:.2f}x{half} | >= 2x float32 |"]
    return md


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--repeat", type=int, default=None)
    ap.add_argument("--out", default=None, help="directory for bench_gpu.jsonl / bench_gpu.md")
    args = ap.parse_args(argv)
    if not eggroll.cuda_available():
        print("bench_gpu: needs a CUDA build of eggroll and a GPU (eggroll.cuda_available() is "
              "False)", file=sys.stderr)
        return 2
    repeat = args.repeat or (5 if args.quick else 21)
    try:
        bk: Any = TorchBackend()
    except ImportError:
        bk = CupyBackend()
    records = forward_group(bk, repeat, 3 if args.quick else 5)
    records.append(update_group(repeat))
    records.append(noise_group(repeat, 1 << 28))
    records.append(int8_group(bk, repeat))
    stamp = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                 gpu=bk.gpu_name(), eggroll=eggroll.__version__)
    lines = [json.dumps(dict(stamp, **r)) for r in records]
    for line in lines:
        print(line)
    md = render_md(records, stamp, repeat)
    print("\n".join(md), file=sys.stderr)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "bench_gpu.jsonl"), "w") as fh:
            fh.write("\n".join(lines) + "\n")
        with open(os.path.join(args.out, "bench_gpu.md"), "w") as fh:
            fh.write("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
