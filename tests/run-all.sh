#!/usr/bin/env bash
# The whole test suite, as CI runs it: the format check, then every test in a Release build
# (asserts on) and again in a Debug build under AddressSanitizer + UndefinedBehaviorSanitizer
# (any sanitizer report fails the test). GPU tests skip, visibly, where no GPU is visible; the
# sanitizer pass leaves them out (the CUDA runtime is not built for ASan).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release
cmake --build build/release -j"$jobs"
cmake --build build/release --target format-check
(cd build/release && ctest --output-on-failure -j"$jobs")

cmake -S . -B build/debug -DCMAKE_BUILD_TYPE=Debug -DCHESSLENS_GPU=OFF
cmake --build build/debug -j"$jobs"
(cd build/debug && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --output-on-failure -j"$jobs" -LE 'gpu|slow')
