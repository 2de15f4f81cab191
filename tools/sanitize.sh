#!/usr/bin/env bash
# The Python extension under AddressSanitizer + UndefinedBehaviorSanitizer: builds _core and
# the XLA FFI handlers with EGGROLL_SANITIZE=ON (into build/asan), puts them in a copy of the
# package (build/asan/pkg), and runs the fuzz test (tests/conformance/test_fuzz.py) with its
# child processes on that copy, the ASan runtime preloaded. A memory error or undefined
# behaviour in the extension kills the child with the sanitizer's report, which the test
# names as a failed case. Exit status: pytest's. ~10 minutes on 2 cores.
# Usage: tools/sanitize.sh [pytest -k expression]     (e.g. tools/sanitize.sh numpy)
set -euo pipefail
cd "$(dirname "$0")/.."
B=build/asan
if [ ! -f "$B/build.ninja" ]; then
  cmake -S . -B "$B" -G Ninja -DEGGROLL_BUILD_PYTHON=ON -DEGGROLL_SANITIZE=ON -DEGGROLL_CUDA=OFF \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo -Dpybind11_DIR="$(python3 -m pybind11 --cmakedir)" >/dev/null
fi
ninja -C "$B" >/dev/null
rm -rf "$B/pkg" && mkdir -p "$B/pkg" && cp -r python/eggroll "$B/pkg/" && rm -f "$B/pkg/eggroll/"*.so
cp "$B"/_core*.so "$B/pkg/eggroll/"
for so in "$B"/_xla_ffi*.so; do [ -f "$so" ] && cp "$so" "$B/pkg/eggroll/"; done
# Python's own allocations through malloc (so that ASan sees them too); leaks are Python's
# business (the interpreter does not free everything at exit).
export PYTHONMALLOC=malloc ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
       UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# libstdc++ is preloaded too: otherwise a child that loads it after ASan started (torch does)
# aborts in ASan's __cxa_throw interceptor at the first C++ exception ("real___cxa_throw").
EGGROLL_FUZZ_PYTHONPATH="$PWD/$B/pkg" \
EGGROLL_FUZZ_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)" \
  PYTHONPATH=python python3 -m pytest tests/conformance/test_fuzz.py -q -p no:cacheprovider ${1:+-k "$1"}
