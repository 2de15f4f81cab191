#!/usr/bin/env bash
# The GPU check, in one call on a machine with an NVIDIA GPU and nvcc (no internet needed), in
# under 10 minutes: build eggroll with CUDA (pip, or a plain CMake build when pip cannot), run
# the CUDA tests (CuPy, torch and JAX on the GPU: every op against the reference, device keys,
# lazy device-value errors, streams, CUDA-graph capture + replay for torch, CuPy and XLA's
# command buffers), a compute-sanitizer pass over a few kernels, the GPU benchmark
# (bench/bench_gpu.py: forward vs inference at 1024 x 1 and x 16 rows, update vs its GEMM with
# the device time split from the host's, int8 vs bf16 / fp32, noise, JAX) and, when present,
# the LLM population benchmark. Logs go to $OUT (default ./gpu-check-out) and are packed into
# $OUT/gpu_check.tgz next to summary.txt and bench_gpu.md (at most 8 files come back).
# Usage: OUT=/some/dir tools/gpu_check.sh      (exit status: 0 only if everything passed)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=$(mkdir -p "${OUT:-gpu-check-out}" && cd "${OUT:-gpu-check-out}" && pwd)
LOGS="$OUT/logs"   # every log; packed into one archive at the end
mkdir -p "$LOGS"
status=0
START=$SECONDS
# `python` is the interpreter that runs the tests; pip and the build must use the same one.
PY=${PYTHON:-python}
step() { echo "== $1 (+$((SECONDS - START)) s)" | tee -a "$OUT/summary.txt"; }
pack() {  # one archive of the logs + the summary and benchmark table beside it (<= 8 files)
  [ -f "$LOGS/bench_gpu.md" ] && cp "$LOGS/bench_gpu.md" "$OUT/bench_gpu.md"
  tar czf "$OUT/gpu_check.tgz" -C "$OUT" logs && rm -rf "$LOGS"
}
trap pack EXIT
# run NAME SECONDS CMD...: a logged step with a time limit; its last line goes to the summary.
run() {
  local name=$1 limit=$2; shift 2
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
if timeout 360 "$PY" -m pip install --no-build-isolation --no-deps -v \
      -C cmake.define.EGGROLL_CUDA=ON -C cmake.define.CMAKE_CUDA_ARCHITECTURES=90-real \
      . > "$LOGS/build.log" 2>&1; then
  echo "pip install done (the installed package is tested: python/ is not on the path)" | tee -a "$OUT/summary.txt"
else
  echo "pip install FAILED (tail of build.log in the archive); plain CMake build" | tee -a "$OUT/summary.txt"
  gen=(); command -v ninja > /dev/null && gen=(-G Ninja)
  if ! cmake -S . -B build/gpu "${gen[@]}" -DEGGROLL_BUILD_PYTHON=ON -DCMAKE_BUILD_TYPE=Release \
        -DEGGROLL_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90-real -DPython_EXECUTABLE="$(command -v "$PY")" \
        -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" > "$LOGS/cmake.log" 2>&1 \
     || ! timeout 360 cmake --build build/gpu >> "$LOGS/cmake.log" 2>&1; then
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
step "tests/test_cuda.py (CuPy + torch CUDA: ops, device keys, device-value errors, streams, graphs)"
run test_cuda 240 "$PY" -m pytest tests/test_cuda.py "${T[@]}" || status=1
run test_cuda_build 120 "$PY" -m pytest tests/test_cuda_build.py tests/test_bench_gpu.py "${T[@]}" || status=1
for f in tests/conformance tests/test_adapter_torch.py tests/test_torch_es.py; do
  [ -e "$f" ] || continue
  name=$(basename "$f" .py)_cuda
  run "$name" 180 "$PY" -m pytest "$f" "${T[@]}" -m cuda; rc=$?
  [ $rc -eq 0 ] || [ $rc -eq 5 ] || status=1   # 5: no CUDA-marked test there
done
step "tests/test_jax_cuda.py (XLA's GPU runtime, command buffers; skips without a CUDA jaxlib)"
run test_jax_cuda 180 "$PY" -m pytest tests/test_jax_cuda.py "${T[@]}" || status=1
grep -q "no GPU visible to JAX" "$LOGS/test_jax_cuda.log" \
  && echo "NOTE: JAX saw no GPU (CPU-only jaxlib?): the JAX CUDA tests were skipped" | tee -a "$OUT/summary.txt"

step "compute-sanitizer memcheck (a few kernels: out-of-bounds, misaligned, uninitialised)"
if command -v compute-sanitizer > /dev/null; then
  run sanitizer 150 compute-sanitizer --tool memcheck --error-exitcode 9 "$PY" -m pytest \
    tests/test_cuda.py "${T[@]}" -x -k "perturbed_matmul_matches and m17-n97 or es_gradient_lowrank and 17 or int8_exact and 97-64 or sync_checks" \
    || status=1
else
  echo "compute-sanitizer not found: skipped" | tee -a "$OUT/summary.txt"
fi

step "bench/bench_gpu.py --quick"
run bench_gpu 240 "$PY" bench/bench_gpu.py --quick --out "$LOGS" || status=1
[ -f "$LOGS/bench_gpu.md" ] && cat "$LOGS/bench_gpu.md" | tee -a "$OUT/summary.txt"

# The LLM population forward on the GPU: tokens/s against plain batched inference (>= 0.9),
# when bench/bench_llm.py is on this branch and can run on a GPU.
if [ -f bench/bench_llm.py ]; then
  step "bench/bench_llm.py --device cuda --quick"
  if grep -q -- "--device" bench/bench_llm.py; then
    run bench_llm 150 "$PY" bench/bench_llm.py --device cuda --quick || status=1
  else
    echo "bench/bench_llm.py has no --device option (CPU only): the LLM GPU row still needs one" \
      | tee -a "$OUT/summary.txt"
  fi
fi

step "done, status $status, $((SECONDS - START)) s"
exit $status
