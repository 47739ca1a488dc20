#!/usr/bin/env bash
# Installs dependencies, configures and builds xc2 (Release) into ./build. Idempotent.
# Extra arguments go to the CMake configure step, e.g. tools/build.sh -DXC2_WITH_CUDA=OFF
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install_deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build build -j"$(nproc)" --target xc2_cli
