#!/usr/bin/env bash
# The GPU check, in one call on a machine with an NVIDIA GPU and nvcc (no internet needed), in
# at most GPU_CHECK_SECONDS (default 450, under 8 minutes: every step's time limit is cut to
# what is left; a step with no time left is reported as skipped and fails the run): build
# eggroll with CUDA (pip, or a plain CMake build when pip cannot), run the CUDA tests (the
# conformance suite's cupy / torch-cuda / jax-cuda backends: every op against the reference;
# tests/test_cuda.py and tests/test_jax_cuda.py: device keys,
# lazy device-value errors, streams, CUDA-graph capture + replay for torch, CuPy and XLA's
# command buffers), a compute-sanitizer pass over a few kernels, the GPU benchmark
# (bench/bench_gpu.py: forward vs inference at 1024 x 1 and x 16 rows, update vs its GEMM with
# the device time split from the host's, int8 vs bf16 / fp32, noise, JAX) and, when present,
# the LLM population benchmark. Logs go to $OUT (default ./gpu-check-out) and are packed into
# $OUT/gpu_check.tgz next to summary.txt and bench_gpu.md (a few files to read first).
# Order: build, the CUDA tests, the JAX CUDA tests, the benchmark, then the slower extras (the
# conformance suite on the GPU backends, CUDA-marked torch tests, compute-sanitizer, the LLM
# benchmark), so that a short budget still yields the figures.
# Usage: OUT=/some/dir [PYTHON=python3] [GPU_CHECK_SECONDS=450] tools/gpu_check.sh
#        (exit status: 0 only if everything passed)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=$(mkdir -p "${OUT:-gpu-check-out}" && cd "${OUT:-gpu-check-out}" && pwd)
LOGS="$OUT/logs"   # every log; packed into one archive at the end
mkdir -p "$LOGS"
status=0
START=$SECONDS
BUDGET=${GPU_CHECK_SECONDS:-450}
# `python` is the interpreter that runs the tests; pip and the build must use the same one.
PY=${PYTHON:-python}
step() { echo "== $1 (+$((SECONDS - START)) s)" | tee -a "$OUT/summary.txt"; }
pack() {  # one archive of the logs + the summary and benchmark table beside it
  [ -f "$LOGS/bench_gpu.md" ] && cp "$LOGS/bench_gpu.md" "$OUT/bench_gpu.md"
  tar czf "$OUT/gpu_check.tgz" -C "$OUT" logs && rm -rf "$LOGS"
}
trap pack EXIT
# run NAME SECONDS CMD...: a logged step, its limit cut to the budget left; its last line goes
# to the summary. Returns the command's status (124: timed out; 125: no time left to start).
run() {
  local name=$1 limit=$2; shift 2
  local left=$((BUDGET - (SECONDS - START) - 5))
  if [ $left -lt 15 ]; then
    echo "$name: SKIPPED (no time left in GPU_CHECK_SECONDS=$BUDGET)" | tee -a "$OUT/summary.txt"
    return 125
  fi
  [ $limit -gt $left ] && limit=$left
  timeout "$limit" "$@" > "$LOGS/$name.log" 2>&1
  local rc=$?
  [ $rc -eq 124 ] && echo "TIMEOUT after $limit s" >> "$LOGS/$name.log"
  tail -1 "$LOGS/$name.log" | sed "s/^/$name: /" | tee -a "$OUT/summary.txt"
  return $rc
}

step "environment"
{ nvidia-smi; nvcc --version; command -v "$PY"; "$PY" --version;
  "$PY" -c "import cupy; print('cupy', cupy.__version__)";
  "$PY" -c "import torch; print('torch', torch.__version__, torch.version.cuda, torch.cuda.is_available())";
  "$PY" -c "import jax; print('jax', jax.__version__, jax.devices())";
  } > "$LOGS/env.txt" 2>&1
grep -E "NVIDIA|cupy|torch|jax|release" "$LOGS/env.txt" | head -8 | tee -a "$OUT/summary.txt"

step "build + install (EGGROLL_CUDA=ON, sm_90: H100 / H200; CI builds 80;90+PTX)"
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
if timeout 240 "$PY" -m pip install --no-build-isolation --no-deps -v \
      -C cmake.define.EGGROLL_CUDA=ON -C cmake.define.CMAKE_CUDA_ARCHITECTURES=90-real \
      . > "$LOGS/build.log" 2>&1; then
  echo "pip install done (the installed package is tested: python/ is not on the path)" | tee -a "$OUT/summary.txt"
else
  echo "pip install FAILED (tail of build.log in the archive); plain CMake build" | tee -a "$OUT/summary.txt"
  gen=(); command -v ninja > /dev/null && gen=(-G Ninja)
  if ! cmake -S . -B build/gpu "${gen[@]}" -DEGGROLL_BUILD_PYTHON=ON -DCMAKE_BUILD_TYPE=Release \
        -DEGGROLL_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90-real -DPython_EXECUTABLE="$(command -v "$PY")" \
        -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" > "$LOGS/cmake.log" 2>&1 \
     || ! timeout $(( (L = BUDGET - (SECONDS - START) - 120) > 60 ? L : 60 )) cmake --build build/gpu >> "$LOGS/cmake.log" 2>&1; then
    echo "BUILD FAILED" | tee -a "$OUT/summary.txt"
    grep -n -i -E "error|fatal" "$LOGS/cmake.log" | head -20 | tee -a "$OUT/summary.txt"
    exit 1
  fi
  cp build/gpu/_*.so python/eggroll/
  export PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" -c "import eggroll, eggroll._cuda as c; print('eggroll from', eggroll.__file__); print('cuda_available', eggroll.cuda_available(), c.runtime_info())" 2>&1 | tee -a "$OUT/summary.txt"
step "built"

# -W default: a warning printed by a framework at import must not turn into a test error here
# (the strict config stays for CI); failures are what this run is for.
T=(-q -rs -W default -p no:cacheprovider)
step "tests/test_cuda.py (CuPy + torch CUDA: device keys, device-value errors, streams, graphs)"
run test_cuda 150 "$PY" -m pytest tests/test_cuda.py "${T[@]}" || status=1
run test_cuda_build 60 "$PY" -m pytest tests/test_cuda_build.py tests/test_bench_gpu.py "${T[@]}" || status=1
step "tests/test_jax_cuda.py (XLA's GPU runtime, command buffers; skips without a CUDA jaxlib)"
run test_jax_cuda 90 "$PY" -m pytest tests/test_jax_cuda.py "${T[@]}" || status=1
grep -q "no GPU visible to JAX" "$LOGS/test_jax_cuda.log" 2> /dev/null \
  && echo "NOTE: JAX saw no GPU (CPU-only jaxlib?): the JAX CUDA tests were skipped" | tee -a "$OUT/summary.txt"

step "bench/bench_gpu.py --quick (each measurement written as soon as it is taken)"
run bench_gpu 150 "$PY" bench/bench_gpu.py --quick --out "$LOGS" || status=1
[ -f "$LOGS/bench_gpu.md" ] && cat "$LOGS/bench_gpu.md" | tee -a "$OUT/summary.txt"

step "conformance suite on the GPU backends (every op against the reference) + CUDA-marked torch tests"
run conformance_gpu 120 "$PY" -m pytest tests/conformance "${T[@]}" -k "cupy or torch-cuda or jax-cuda" \
  || status=1
run torch_cuda 60 "$PY" -m pytest tests/test_adapter_torch.py tests/test_torch_es.py "${T[@]}" -m cuda \
  || status=1

step "compute-sanitizer memcheck (a few kernels: out-of-bounds, misaligned, uninitialised)"
if command -v compute-sanitizer > /dev/null; then
  run sanitizer 90 compute-sanitizer --tool memcheck --error-exitcode 9 "$PY" -m pytest \
    tests/test_cuda.py "${T[@]}" -x -k "matches_reference and m17-n97-bNone or es_gradient_lowrank and 97 \
      or over_several_chunks or factors_bit_identical or torch_int8 or sync_checks" \
    || status=1
else
  echo "compute-sanitizer not found: skipped" | tee -a "$OUT/summary.txt"
fi

# The LLM population forward on the GPU: tokens/s against plain batched inference (>= 0.9),
# at the GPU shape (hidden 1024, P 64 x T 128) in bfloat16.
step "bench/bench_llm.py --device cuda --dtype bfloat16"
run bench_llm 240 "$PY" bench/bench_llm.py --device cuda --dtype bfloat16 --repeat 5 || status=1

step "done, status $status, $((SECONDS - START)) s"
exit $status
