# Sourced by run.sh and run_jax.sh (from the repository root): builds the CPU-only core into
# $E/core, translates cuda/*.cu for the host emulation into $E/src, and defines
#   emu_pkg DIR        a copy of the Python package in DIR, without its compiled modules
#   emu_cxx OUT SRC..  g++ for the emulation (the include paths both scripts need) into OUT
E=build/cuda_emu
mkdir -p "$E"
cmake -S . -B "$E/core" -G Ninja -DEGGROLL_CUDA=OFF -DEGGROLL_BUILD_PYTHON=ON -DCMAKE_BUILD_TYPE=Release \
      -Dpybind11_DIR="$(python3 -m pybind11 --cmakedir)" >/dev/null
ninja -j2 -C "$E/core" >/dev/null
python3 tools/cuda_emu/translate.py cuda "$E/src" >/dev/null
EXT=$(python3 -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")

emu_pkg() {
  rm -rf "$1" && mkdir -p "$1" && cp -r python/eggroll "$1/" && rm -f "$1/eggroll/"*.so
}

emu_cxx() {
  local out=$1; shift
  g++ -O1 -std=c++20 -fPIC -shared -fvisibility=hidden -ffp-contract=off -Wno-unknown-pragmas \
      -I tools/cuda_emu/inc -I "$E/src" -I cpp -I cpp/bindings -I cuda ${EMU_CXXFLAGS:-} \
      -I "$(python3 -c "import sysconfig; print(sysconfig.get_paths()['include'])")" \
      -I "$(python3 -c "import pybind11; print(pybind11.get_include())")" \
      "$@" "$E/core/libeggroll.a" -lpthread -o "$out"
}
