#!/usr/bin/env bash
# The whole test suite, as CI runs it: the format check; every test in a Release build (asserts
# on); a libFuzzer run of every fuzz target; and every test again in a Debug
# build under AddressSanitizer + UndefinedBehaviorSanitizer (any sanitizer report fails the
# test). GPU tests skip, visibly, where no GPU is visible; the sanitizer pass leaves them out
# (the CUDA runtime is not built for ASan), and the one-node Slurm cluster of the Slurm test
# (label slurm), which the Release pass runs, as it tests the script, not the binaries. The
# long reliability runs (label slow: the chaos soak, the thousand-kill loop) are run by hand
# (README, "Build").
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release
cmake --build build/release -j"$jobs"
cmake --build build/release --target format-check
(cd build/release && ctest --output-on-failure -j"$jobs" -LE slow)

# Fuzz run: every libFuzzer target (tests/<component>/fuzz/fuzz_NAME, seed corpus in
# tests/<component>/fuzz/corpus/NAME) for FUZZ_SECONDS (default 60), as many at once as there
# are CPUs, each on a copy of its corpus, so that the corpus in the repository is not
# rewritten. Allocations over FUZZ_MALLOC_MB (default 512) count as findings: a decoder must
# not allocate from a size it has not checked. A crash, a leak or a sanitizer report fails.
fuzz_seconds=${FUZZ_SECONDS:-60}
fuzz_malloc_mb=${FUZZ_MALLOC_MB:-512}
corpora=(tests/*/fuzz/corpus/*/)
targets=()
for corpus in "${corpora[@]}"; do
    targets+=("fuzz_$(basename "$corpus")")
done
CC=clang cmake -S . -B build/fuzz -DCMAKE_BUILD_TYPE=Debug -DCHESSLENS_GPU=OFF -DCHESSLENS_FUZZ=ON
cmake --build build/fuzz -j"$jobs" --target "${targets[@]}"
# fuzz_one CORPUS: runs its target, the log in build/fuzz/fuzz_NAME.log; a finding leaves
# build/fuzz/failed-NAME
fuzz_one() {
    local corpus=$1 name component
    name=$(basename "$corpus")
    component=$(basename "$(dirname "$(dirname "$(dirname "$corpus")")")")
    rm -rf "build/fuzz/corpus-$name" "build/fuzz/failed-$name"
    cp -r "$corpus" "build/fuzz/corpus-$name"
    "build/fuzz/tests/$component/fuzz/fuzz_$name" -max_total_time="$fuzz_seconds" -seed=1 \
        -malloc_limit_mb="$fuzz_malloc_mb" -artifact_prefix="build/fuzz/crash-$name-" \
        "build/fuzz/corpus-$name" >"build/fuzz/fuzz_$name.log" 2>&1 ||
        touch "build/fuzz/failed-$name"
}
running=0
for corpus in "${corpora[@]}"; do
    if [ "$running" -ge "$jobs" ]; then
        wait -n
        running=$((running - 1))
    fi
    fuzz_one "$corpus" &
    running=$((running + 1))
done
wait
failed=0
for corpus in "${corpora[@]}"; do
    name=$(basename "$corpus")
    if [ -e "build/fuzz/failed-$name" ]; then
        cat "build/fuzz/fuzz_$name.log"
        failed=1
    else
        tail -n 1 "build/fuzz/fuzz_$name.log"
    fi
done
[ "$failed" = 0 ] || { echo "fuzz: a target found a failure (its log is above)" >&2; exit 1; }
echo "fuzz: ${targets[*]} ran ${fuzz_seconds} s each without a finding"

cmake -S . -B build/debug -DCMAKE_BUILD_TYPE=Debug -DCHESSLENS_GPU=OFF
cmake --build build/debug -j"$jobs"
(cd build/debug && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --output-on-failure -j"$jobs" -LE 'gpu|slow|slurm')
