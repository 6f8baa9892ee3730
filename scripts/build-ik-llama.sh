#!/usr/bin/env bash
# Build a CPU ik_llama.cpp llama-server and llama-quantize from PyPI's ik-llama-cpp-python
# source package (it vendors the ik_llama.cpp tree) and cache them.
# Prints the cache folder on its last line. It holds llama-server, llama-quantize, gguf-py/ (ik's
# gguf package, which knows its types) and src/ (common/common.cpp and common/log.h, ik's
# argument parser, and ggml/src/ggml.c, its type table), which scripts/flag-catalogue.py and
# scripts/ggml-types.py read.
# Cache key: package version + CPU architecture (GGML_NATIVE=OFF with AVX2 keeps it portable).
set -euo pipefail

version="${IK_LLAMA_CPP_PYTHON_VERSION:-0.1.5}"
arch="$(uname -m)"
cache_root="${ORCH_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/orch}"
dest="$cache_root/ik-llama/$version-$arch"

sources=(common/common.cpp common/log.h ggml/src/ggml.c)
cached() {
  [[ -x "$dest/llama-server" && -x "$dest/llama-quantize" && -d "$dest/gguf-py/gguf" ]] || return 1
  local f
  for f in "${sources[@]}"; do [[ -f "$dest/src/$f" ]] || return 1; done
  "$dest/llama-server" --version >/dev/null 2>&1
}
if cached; then
  echo "$dest"
  exit 0
fi

work="$cache_root/build/ik-llama-cpp-python-$version"
mkdir -p "$work" "$dest"
sdist="$work/ik_llama_cpp_python-$version.tar.gz"
if [[ ! -f "$sdist" ]]; then
  python3 -m pip download --quiet --no-deps --no-binary :all: \
    "ik-llama-cpp-python==$version" -d "$work" >&2
fi
src="$work/ik_llama_cpp_python-$version/vendor/ik_llama.cpp"
[[ -d "$src" ]] || tar -xzf "$sdist" -C "$work"

# The sdist lacks common/cmake/build-info-gen-cpp.cmake, so the build stops at build-info.cpp:
# write that file from its template first (its custom command then has nothing to do).
if [[ ! -f "$src/common/build-info.cpp" ]]; then
  sed -e "s/@BUILD_NUMBER@/0/" \
    -e "s/@BUILD_COMMIT@/ik-llama-cpp-python-$version/" \
    -e "s/@BUILD_COMPILER@/$(cc --version | head -n 1 | tr -d '"\\/')/" \
    -e "s/@BUILD_TARGET@/$arch/" \
    "$src/common/build-info.cpp.in" >"$src/common/build-info.cpp"
fi
mkdir -p "$src/common/cmake"
[[ -f "$src/common/cmake/build-info-gen-cpp.cmake" ]] \
  || echo '# written by orch: build-info.cpp is generated before the build' \
    >"$src/common/cmake/build-info-gen-cpp.cmake"

jobs="${LLAMA_BUILD_JOBS:-$(nproc)}"
generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
start=$(date +%s)
cmake -S "$src" -B "$work/build" "${generator[@]}" \
  -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=OFF -DLLAMA_CURL=OFF \
  -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DGGML_NATIVE=OFF \
  -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON >&2
cmake --build "$work/build" --target llama-server llama-quantize -j "$jobs" >&2
echo "build-ik-llama: built in $(($(date +%s) - start)) s with $jobs job(s)" >&2

for tool in llama-server llama-quantize; do
  install -m 0755 "$work/build/bin/$tool" "$dest/$tool.tmp"
  strip "$dest/$tool.tmp" 2>/dev/null || true
  mv "$dest/$tool.tmp" "$dest/$tool"
done
rm -rf "$dest/gguf-py" "$dest/src"
cp -r "$src/gguf-py" "$dest/gguf-py"
for f in "${sources[@]}"; do
  install -D -m 0644 "$src/$f" "$dest/src/$f"
done
echo "$dest"
