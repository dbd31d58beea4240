#!/usr/bin/env bash
# Build llama.cpp's own tools (llama-server, llama-bench, llama-quantize) from the llama.cpp source vendored
# in the pinned llama-cpp-python release, so the native server and the Python package run the same llama.cpp.
# About 4.5 min on 2 cores. Binaries land in DEST/bin; a rerun with the same version does nothing.
# Usage: tools/build_llama_server.sh PYTHON VERSION DEST [JOBS]
set -euo pipefail
py=${1:?python}; version=${2:?version}; dest=${3:?dest}; jobs=${4:-$(nproc)}
sdist_dir=${SDIST_DIR:-.cache/sdist}
sdist=$sdist_dir/llama_cpp_python-$version.tar.gz
stamp=$dest/bin/.built-from-$version
if [ -f "$stamp" ] && [ -x "$dest/bin/llama-server" ]; then
  echo "llama-server from llama-cpp-python $version already built: $dest/bin/llama-server"
  exit 0
fi
if [ ! -f "$sdist" ]; then
  echo "downloading the llama-cpp-python $version source release (77 MB) for its vendored llama.cpp..."
  "$py" -m pip download -q --no-binary :all: --no-deps "llama-cpp-python==$version" -d "$sdist_dir"
fi
mkdir -p "$dest"
src=$dest/src
rm -rf "$src"
mkdir -p "$src"
tar xzf "$sdist" -C "$src" --strip-components=3 "llama_cpp_python-$version/vendor/llama.cpp"
# Release build with the host's CPU features (GGML_NATIVE, as pip's build of llama-cpp-python uses);
# static so the binaries do not depend on a libllama.so beside them; no curl (models are local files).
# Without the AMX kernels, like the Makefile's build of llama-cpp-python: they segfault on batched decoding
# on Sapphire Rapids (llama.cpp issue #20824).
no_amx="-U__AMX_TILE__ -U__AMX_INT8__ -U__AMX_BF16__"
cmake -S "$src" -B "$dest/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DCMAKE_C_FLAGS="$no_amx" -DCMAKE_CXX_FLAGS="$no_amx" \
  -DGGML_NATIVE=ON >"$dest/cmake-configure.log"
cmake --build "$dest/build" --config Release -j "$jobs" --target llama-server llama-bench llama-quantize
mkdir -p "$dest/bin"
for t in llama-server llama-bench llama-quantize; do
  cp "$dest/build/bin/$t" "$dest/bin/$t"
done
rm -rf "$src" "$dest/build"  # ~1 GB of objects; the three binaries are what the bench and `serve` use
touch "$stamp"
echo "llama.cpp tools from llama-cpp-python $version -> $dest/bin (llama-server, llama-bench, llama-quantize)"
