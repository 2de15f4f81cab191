"""Benchmarks shipped with the package: `eggroll bench` (cli.py) runs the micro-benchmark grid
(suite.py) over the backends of backends.py; harness.py is the timing harness that the
repository's bench/*.py scripts share. Nothing is imported here: each part is loaded when used.
"""
