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
source tools/cuda_emu/common.sh
P="$E/pkg_jax"
emu_pkg "$P"
cp "$E/core/"_core*.so "$E/core/"_xla_ffi*.so "$P/eggroll/"
EMU_CXXFLAGS="-isystem $(python3 -c "import jaxlib, os; print(os.path.join(os.path.dirname(jaxlib.__file__), 'include'))")" \
  emu_cxx "$P/eggroll/_xla_ffi_cuda$EXT" "$E"/src/{noise,perturb,embedding,update,fitness,int8,gemm,runtime}.cpp \
          tools/cuda_emu/xla_ffi_cuda_emu.cpp
K=${1:-""}
EGGROLL_JAX_CUDA_EMU=1 PYTHONPATH="$P" python3 -m pytest tests/test_jax_cuda.py -q -p no:cacheprovider ${K:+-k "$K"}
