#!/usr/bin/env bash
# The whole test suite, as CI runs it: the format check; every test in a Release build (asserts
# on); a short libFuzzer run of the PGN reader and FEN parser; and every test again in a Debug
# build under AddressSanitizer + UndefinedBehaviorSanitizer (any sanitizer report fails the
# test). GPU tests skip, visibly, where no GPU is visible; the sanitizer pass leaves them out
# (the CUDA runtime is not built for ASan).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release
cmake --build build/release -j"$jobs"
cmake --build build/release --target format-check
(cd build/release && ctest --output-on-failure -j"$jobs")

# Fuzz smoke run: each target for FUZZ_SECONDS (default 20) from the seed corpus, on a copy so
# that the corpus in the repository is not rewritten. A crash or sanitizer report fails.
fuzz_seconds=${FUZZ_SECONDS:-20}
CC=clang cmake -S . -B build/fuzz -DCMAKE_BUILD_TYPE=Debug -DCHESSLENS_GPU=OFF -DCHESSLENS_FUZZ=ON
cmake --build build/fuzz -j"$jobs" --target fuzz_pgn fuzz_fen
for target in pgn fen; do
    rm -rf "build/fuzz/corpus-$target"
    cp -r "tests/chess/fuzz/corpus/$target" "build/fuzz/corpus-$target"
    if ! "build/fuzz/tests/chess/fuzz/fuzz_$target" -max_total_time="$fuzz_seconds" -seed=1 \
        -artifact_prefix="build/fuzz/crash-$target-" "build/fuzz/corpus-$target" \
        >"build/fuzz/fuzz_$target.log" 2>&1; then
        cat "build/fuzz/fuzz_$target.log"
        exit 1
    fi
    tail -n 1 "build/fuzz/fuzz_$target.log"
done
echo "fuzz: fuzz_pgn and fuzz_fen ran ${fuzz_seconds} s each without a crash"

cmake -S . -B build/debug -DCMAKE_BUILD_TYPE=Debug -DCHESSLENS_GPU=OFF
cmake --build build/debug -j"$jobs"
(cd build/debug && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --output-on-failure -j"$jobs" -LE 'gpu|slow')
