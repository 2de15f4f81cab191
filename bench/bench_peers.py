"""eggroll against the idiom a framework's user would write, in that framework, same run.

Run:  PYTHONPATH=python python bench/bench_peers.py --backend torch|jax|es [--quick] [...]
      (JSON lines on stdout, tables on stderr; see eggroll.bench.harness)

  torch, jax  the perturbed forward and update ops against that framework's idiom
  es          whole ES generations on a task (digits MLP, population 512): eggroll's NumPy,
              torch and JAX trainers against the official code's JAX idiom, evosax and
              EvoTorch (pip install ".[peers]"); time, peak memory, accuracy after a budget

Each backend lives in eggroll/bench/peers_<backend>.py and defines ``main(argv)``; this script
only picks one, so the framework that is not asked for is never imported.
"""
from __future__ import annotations

import argparse
import importlib
import sys

BACKENDS = ("torch", "jax", "es")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=False)
    p.add_argument("--backend", choices=BACKENDS, required=True)
    args, rest = p.parse_known_args(argv)
    mod = importlib.import_module(f"eggroll.bench.peers_{args.backend}")
    return int(mod.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
