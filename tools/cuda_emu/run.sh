#!/usr/bin/env bash
# Runs the CUDA kernels WITHOUT a GPU: builds eggroll._cuda from cuda/*.cu with g++ against a
# host emulation of the CUDA runtime (tools/cuda_emu/inc: thread blocks as std::threads), puts
# it in a copy of the package next to a CPU-only _core, and runs the conformance suite's cupy
# backend and tests/test_cuda.py through a NumPy stand-in of CuPy (tools/cuda_emu/fakecupy,
# whose arrays present their memory as CUDA arrays). It checks the entries' composition and
# the kernels' logic (indexing, passes, reductions, exact bits, device keys and flags); it
# cannot check anything that is GPU-specific (concurrent streams, graphs, memory model,
# performance): tools/gpu_check.sh does that.
# Usage: tools/cuda_emu/run.sh [pytest -k expression]   (default: every cupy test; those that
# need real streams or graphs skip themselves under EGGROLL_CUDA_EMU=1)
set -euo pipefail
cd "$(dirname "$0")/../.."
source tools/cuda_emu/common.sh
cp cpp/bindings/cuda_module.cpp "$E/src/"   # its headers: -I cpp/bindings
emu_pkg "$E/pkg"
cp "$E/core/"_core*.so "$E/pkg/eggroll/"
emu_cxx "$E/pkg/eggroll/_cuda$EXT" "$E"/src/{noise,perturb,embedding,update,fitness,int8,gemm,runtime,cuda_module}.cpp
K=${1:-"cupy or test_cuda"}
EGGROLL_CUDA_EMU=1 PYTHONPATH="tools/cuda_emu/fakecupy:$E/pkg" python3 -m pytest tests/conformance \
    tests/test_cuda.py -q -p no:cacheprovider -k "$K"
