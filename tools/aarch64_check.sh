#!/usr/bin/env bash
# The core on 64-bit ARM: cross-compiles libeggroll.a and the C++ tests (tests/cpp) with
# Debian's aarch64 toolchain and runs them under qemu-user. Needs
#   apt-get install -y g++-aarch64-linux-gnu qemu-user
# Checks that no x86 kernel file is built there (the baseline path there is NEON: the GEMM
# tile and the noise kernel), that the noise objects hold no fused multiply-add (contraction
# would change the bits, docs/noise.md), then that every C++ test passes - the GEMM against
# its naive std::fma loop, the noise and the forward against golden bits of the x86 build.
# Usage: tools/aarch64_check.sh [BUILD_DIR]   (default build/aarch64)
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build/aarch64}
CXX=${AARCH64_CXX:-aarch64-linux-gnu-g++}
SYSROOT=${AARCH64_SYSROOT:-/usr/aarch64-linux-gnu}
QEMU=${QEMU_AARCH64:-qemu-aarch64}
for tool in "$CXX" "$QEMU" cmake; do
  command -v "$tool" >/dev/null || { echo "aarch64_check: $tool not found (apt-get install -y g++-aarch64-linux-gnu qemu-user)" >&2; exit 2; }
done
start=$(date +%s)
cmake -S . -B "$B" -G Ninja -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64 \
      -DCMAKE_CXX_COMPILER="$CXX" -DCMAKE_BUILD_TYPE=Release -DEGGROLL_BUILD_TESTS=ON \
      -DEGGROLL_CUDA=OFF "-DCMAKE_CROSSCOMPILING_EMULATOR=$QEMU;-L;$SYSROOT" >/dev/null
# every target of the build (the library and every C++ test ctest will run)
ninja -C "$B" -j "${JOBS:-2}" >/dev/null
if ninja -C "$B" -t targets all | grep -Eq '(avx|amx)[^/]*\.cpp\.o'; then
  echo "aarch64_check: an x86 kernel file is part of the aarch64 build" >&2; exit 1
fi
OBJDUMP=${AARCH64_OBJDUMP:-aarch64-linux-gnu-objdump}
for obj in "$B"/CMakeFiles/eggroll_core.dir/cpp/noise*.o; do
  if "$OBJDUMP" -d "$obj" | grep -Eq '\s(fmla|fmls|fmadd|fmsub|fnmadd|fnmsub)\s'; then
    echo "aarch64_check: $obj contains a fused multiply-add (FMA contraction in the noise)" >&2; exit 1
  fi
done
"$OBJDUMP" -f "$B/test_core" | grep -q "aarch64" || { echo "aarch64_check: test_core is not an aarch64 binary" >&2; exit 1; }
(cd "$B" && ctest --output-on-failure)
echo "aarch64_check: passed in $(( $(date +%s) - start )) s"
