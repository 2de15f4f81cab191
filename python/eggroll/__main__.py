"""Command line: ``eggroll <command>`` (the console script) or ``python -m eggroll <command>``.

    eggroll demo [--quick] [...]     train an MLP on the digits with eggroll.ES (demo.py)
    eggroll bench [--quick] [...]    benchmarks: forward, update, noise, memory (eggroll/bench/cli.py)
"""
from __future__ import annotations

import os
import sys

USAGE = """usage: {prog} <command> [options]

commands:
  demo    train an MLP on scikit-learn's digits with eggroll.ES
          (needs: pip install "eggroll-hyperscale[demo]"; {prog} demo --help for its options)
  bench   benchmark the perturbed forward, the ES update and the noise against plain
          inference and full-rank ES, and their peak memory; tables, CSV/JSON and plots
          (plots need: pip install "eggroll-hyperscale[bench]"; {prog} bench --help for its options)
"""


def _prog() -> str:
    """How we were invoked: 'eggroll' (console script) or 'python -m eggroll'."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "python -m eggroll" if name in ("__main__.py", "-m", "-c", "") else "eggroll"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    prog = _prog()
    usage = USAGE.format(prog=prog)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage, end="")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "demo":
        from .demo import main as demo_main
        return demo_main(rest)
    if command == "bench":
        from .bench.cli import main as bench_main
        return bench_main(rest, prog=prog)
    print(f"{prog}: unknown command {command!r}\n\n{usage}", end="", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
