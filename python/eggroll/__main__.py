"""Command line: ``python -m eggroll demo [--quick] [...]`` runs the training demo (demo.py)."""
from __future__ import annotations

import sys

USAGE = """usage: python -m eggroll <command> [options]

commands:
  demo    train an MLP on scikit-learn's digits with eggroll.ES
          (needs: pip install "eggroll[demo]"; python -m eggroll demo --help for its options)
"""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "demo":
        from .demo import main as demo_main
        return demo_main(rest)
    print(f"python -m eggroll: unknown command {command!r}\n\n{USAGE}", end="", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
