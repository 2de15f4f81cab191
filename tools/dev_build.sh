#!/usr/bin/env bash
# Developer build: compile the extension in build/dev and drop it into python/eggroll so that
# PYTHONPATH=python works without reinstalling. The copy is an atomic rename, so processes
# that already loaded the old module keep running.
set -euo pipefail
cd "$(dirname "$0")/.."
# BUILD_DIR (default build/dev) and extra CMake arguments in EGGROLL_CMAKE_ARGS.
B=${BUILD_DIR:-build/dev}
if [ ! -f "$B/build.ninja" ]; then
  cmake -S . -B "$B" -G Ninja -DEGGROLL_BUILD_PYTHON=ON -DCMAKE_BUILD_TYPE=Release \
        -Dpybind11_DIR="$(python3 -m pybind11 --cmakedir)" ${EGGROLL_CMAKE_ARGS:-} >/dev/null
fi
ninja -C "$B" >/dev/null
so=$(ls "$B"/_core*.so)
cp "$so" "python/eggroll/.tmp_core.so" && mv -f "python/eggroll/.tmp_core.so" "python/eggroll/$(basename "$so")"
# The JAX FFI handlers, when the build found jaxlib (EGGROLL_JAX=AUTO): _xla_ffi, and
# _xla_ffi_cuda in CUDA builds (the glob takes both).
for so in "$B"/_xla_ffi*.so; do
  [ -f "$so" ] || continue
  cp "$so" "python/eggroll/.tmp_xla.so" && mv -f "python/eggroll/.tmp_xla.so" "python/eggroll/$(basename "$so")"
done
