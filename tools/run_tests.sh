#!/usr/bin/env bash
# Builds xc2 and runs every test that runs on this machine:
#   1. Release build (CUDA compiled when nvcc is present), all tests except the `cuda` label;
#   2. a second build under AddressSanitizer + UBSan running the suites that parse untrusted input
#      (checkpoints, config, images, tokenizer, CLI error paths);
#   3. the libFuzzer harnesses of those parsers, 15 s each from a fixed seed (tools/fuzz.sh --ci; clang);
#   4. the `cuda`-labelled tests on the CUDA emulator (tests/cuda_emu: the CUDA backend and kernels built by the
#      host compiler and run on the CPU), less the three real-shape tests (minutes each there; a GPU runs them).
# Idempotent; this is the command CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

tools/install_deps.sh

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DXC2_WERROR=ON
cmake --build build -j"$jobs"
ctest --test-dir build -LE cuda --output-on-failure -j"$jobs"

cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DXC2_SANITIZE=ON -DXC2_WITH_CUDA=OFF -DXC2_WERROR=ON
cmake --build build-asan -j"$jobs" --target xc2_io_tests xc2_vision_tests xc2_text_tests
ASAN_OPTIONS=detect_leaks=1 ctest --test-dir build-asan -L 'io|vision|text' -LE cuda --output-on-failure -j"$jobs"

tools/fuzz.sh --ci

if [ -f "${CUDA_HOME:-/usr/local/cuda}/include/cublasLt.h" ]; then
  cmake -S . -B build-cuda-emu -DCMAKE_BUILD_TYPE=Release -DXC2_CUDA_EMULATOR=ON -DXC2_WERROR=ON
  cmake --build build-cuda-emu -j"$jobs" --target xc2_ops_tests xc2_model_tests xc2_cuda_emu_tests
  ctest --test-dir build-cuda-emu -L cuda -E 'RealShapes|RealDecoderShapes' --output-on-failure -j"$jobs"
else
  echo "run_tests.sh: no CUDA headers (cublasLt.h) under ${CUDA_HOME:-/usr/local/cuda}: the CUDA emulator stage is skipped" >&2
fi
