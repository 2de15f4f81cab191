#!/usr/bin/env bash
# Runs the JAX CUDA handlers WITHOUT a GPU: builds eggroll._xla_ffi_cuda (cpp/bindings/
# xla_ffi_cuda.cpp, through tools/cuda_emu/xla_ffi_cuda_emu.cpp) and the kernels of cuda/*.cu
# with g++ against the host emulation of the CUDA runtime (tools/cuda_emu/inc), puts it in a
# copy of the package next to a CPU-only _core and _xla_ffi, and runs tests/test_jax_cuda.py
# with EGGROLL_JAX_CUDA_EMU=1: the test module then registers these handlers for XLA's CPU
# backend and makes every op take its CUDA lowering (python/eggroll/jax/_cuda.py). It checks
# the handlers' and the lowerings' logic and exact bits (key packing, member checks, in-place
# correction, factor chunks, int8); nothing GPU-specific (XLA's GPU runtime, streams, TF32,
# cuBLAS, speed): tools/gpu_check.sh does that.
# Usage: tools/cuda_emu/run_jax.sh [pytest -k expression]
set -euo pipefail
cd "$(dirname "$0")/../.."
E=build/cuda_emu
mkdir -p "$E"
cmake -S . -B "$E/core" -G Ninja -DEGGROLL_CUDA=OFF -DEGGROLL_BUILD_PYTHON=ON -DCMAKE_BUILD_TYPE=Release \
      -Dpybind11_DIR="$(python3 -m pybind11 --cmakedir)" >/dev/null
ninja -j2 -C "$E/core" >/dev/null
python3 tools/cuda_emu/translate.py cuda "$E/src" >/dev/null
JAXINC=$(python3 -c "import jaxlib, os; print(os.path.join(os.path.dirname(jaxlib.__file__), 'include'))")
EXT=$(python3 -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
P="$E/pkg_jax"
rm -rf "$P" && mkdir -p "$P" && cp -r python/eggroll "$P/" && rm -f "$P/eggroll/"*.so
cp "$E/core/"_core*.so "$E/core/"_xla_ffi*.so "$P/eggroll/"
g++ -O1 -std=c++20 -fPIC -shared -ffp-contract=off -Wno-unknown-pragmas \
    -I tools/cuda_emu/inc -I "$E/src" -I cpp -I cuda -isystem "$JAXINC" \
    -I "$(python3 -c "import sysconfig; print(sysconfig.get_paths()['include'])")" \
    -I "$(python3 -c "import pybind11; print(pybind11.get_include())")" \
    "$E"/src/{noise,perturb,update,fitness,int8}.cpp tools/cuda_emu/xla_ffi_cuda_emu.cpp \
    "$E/core/libeggroll.a" -lpthread -o "$P/eggroll/_xla_ffi_cuda$EXT"
K=${1:-""}
EGGROLL_JAX_CUDA_EMU=1 PYTHONPATH="$P" python3 -m pytest tests/test_jax_cuda.py -q -p no:cacheprovider ${K:+-k "$K"}
