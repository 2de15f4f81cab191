"""Runs a benchmark script once per SIMD path of the core, each in a child process whose
peer libraries are restricted to the matching kernels, so that one machine reports every
path against a like-for-like baseline.

    path      eggroll.set_isa   OpenBLAS (OPENBLAS_CORETYPE)   MKL (MKL_ENABLE_INSTRUCTIONS)   oneDNN (ONEDNN_MAX_CPU_ISA)
    avx512    'avx512'          SkylakeX                       AVX512                          AVX512_CORE
    avx2      'avx2'            Haswell                        AVX2                            AVX2
    scalar    'scalar'          Prescott (SSE3)                SSE4_2                          SSE41

The libraries read these variables when they load, hence one process per path (the parent
imports NumPy but times nothing). On an AVX-512 CPU the AVX2 rows are a proxy for an
AVX2-only CPU: the same instructions at the same vector width against the same OpenBLAS
kernel, but the caches, clocks and FMA ports of this CPU (docs/benchmarks.md).

A script uses it as
    isa_paths.add_argument(parser)
    ...
    isas = isa_paths.requested(args)
    if isa_paths.needs_children(args):
        records = isa_paths.run_children(__file__, sys.argv[1:], isas)   # parent
    else:
        ...                                  # the measuring process (set_isa is done)
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
from typing import Any, Iterator

import eggroll

ISAS = ("avx512", "avx2", "scalar")    # widest first
CHILD_ENV = "EGGROLL_BENCH_ISA"          # set in a child: the path it measures
PEER_ENV = {
    "avx512": {"OPENBLAS_CORETYPE": "SkylakeX", "MKL_ENABLE_INSTRUCTIONS": "AVX512",
               "ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
    "avx2": {"OPENBLAS_CORETYPE": "Haswell", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
             "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "scalar": {"OPENBLAS_CORETYPE": "Prescott", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
               "ONEDNN_MAX_CPU_ISA": "SSE41"},
}


def add_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--isa", default="best", choices=("best", "all") + ISAS,
                   help="SIMD path(s) of the core to measure: 'best' (default: this CPU's widest, "
                        "in this process, peers as they load), one path, or 'all' the CPU has; a "
                        "named path or 'all' runs one child process per path with OpenBLAS / MKL "
                        "/ oneDNN restricted to the matching kernels")


def supported() -> list[str]:
    """The float paths this CPU runs, widest first (eggroll.isas() lists every ISA level,
    the int8-only ones too)."""
    return [isa for isa in ISAS if isa in eggroll.isas()]


def requested(args: argparse.Namespace) -> list[str]:
    if os.environ.get(CHILD_ENV):
        return [os.environ[CHILD_ENV]]
    if args.isa == "best":
        return supported()[:1]
    if args.isa == "all":
        return supported()
    if args.isa not in supported():
        raise SystemExit(f"--isa: this CPU does not support {args.isa!r} (it has {supported()})")
    return [args.isa]


def needs_children(args: argparse.Namespace) -> bool:
    """True in the parent of a per-path run (a named path or 'all', not yet in a child)."""
    return args.isa != "best" and not os.environ.get(CHILD_ENV)


def enter_child() -> str | None:
    """In a child: force its path (eggroll.set_isa) and return it; None elsewhere."""
    isa = os.environ.get(CHILD_ENV)
    if isa:
        eggroll.set_isa(isa)
    return isa


def run_children(script: str, argv: list[str], isas: list[str]) -> list[dict[str, Any]]:
    """Runs `script argv` once per path with the matching environment; the children's tables
    pass through on stderr, their JSON lines go to this stdout. Returns their records, each
    tagged with `isa_run` (the path of the child that made it)."""
    records: list[dict[str, Any]] = []
    for isa in isas:
        env = dict(os.environ, **PEER_ENV[isa], **{CHILD_ENV: isa})
        print(f"# ==== path {isa}: " + ", ".join(f"{k}={v}" for k, v in PEER_ENV[isa].items()),
              file=sys.stderr, flush=True)
        proc = subprocess.run([sys.executable, script, *argv], env=env, stdout=subprocess.PIPE,
                              text=True, check=False)
        for line in proc.stdout.splitlines():
            if not line.startswith("{"):
                continue
            rec = json.loads(line)
            rec["isa_run"] = isa
            records.append(rec)
            print(json.dumps(rec), flush=True)
        if proc.returncode != 0:
            raise SystemExit(f"the {isa} run failed (exit status {proc.returncode})")
    return records


def peer_info() -> dict[str, Any]:
    """Which kernels the peers loaded: OpenBLAS's core type and threads (threadpoolctl, when
    installed), the restricting variables, torch's CPU capability."""
    info: dict[str, Any] = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "MKL_ENABLE_INSTRUCTIONS",
                                                      "ONEDNN_MAX_CPU_ISA") if k in os.environ}
    try:
        from threadpoolctl import threadpool_info
        for lib in threadpool_info():
            if lib.get("internal_api") == "openblas":
                info["openblas_core"] = lib.get("architecture")
                info["openblas_threads"] = lib.get("num_threads")
    except ImportError:
        pass
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return info


@contextlib.contextmanager
def blas_threads(n: int) -> Iterator[bool]:
    """NumPy's BLAS limited to n threads inside the block (threadpoolctl); yields False, and
    changes nothing, when threadpoolctl is missing."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield False
        return
    with threadpool_limits(limits=n, user_api="blas"):
        yield True
