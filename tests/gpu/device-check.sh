#!/usr/bin/env bash
# The GPU check, for one short slot on a lent GPU machine (CUDA, NCCL, CMake and PyTorch with
# transformers there; no Debian packages and no registry): from a clean tree it
#   1. unpacks the engine's libraries that tests/gpu/fetch-deps.sh downloaded (carried along in
#      build-gpu-deps/debs) into build-gpu-deps/root;
#   2. builds the engine, the GPU backend, their tests and bench_gpu (CHESSLENS_ENGINE_ONLY: no
#      ZeroMQ, SQLite or msgpack needed);
#   3. runs the GPU tests, then the same tests under compute-sanitizer --tool memcheck;
#   4. writes a GPT-2 checkpoint with transformers' save_pretrained and checks that chesslens
#      loads it and matches transformers' logits (tests/gpu/hf_logits_check.py);
#   5. runs bench_gpu.
# Everything goes to $OUT (or build-gpu/out) as logs; the summary is printed last. Within 8
# minutes on an H200.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-build-gpu/out}
mkdir -p "$out"
summary=()
failed=0
note() { summary+=("$*"); echo "== $*"; }
step() { # step NAME COMMAND...: runs it with its output in $out/NAME.log, notes pass or fail
    local name=$1; shift
    local t0=$SECONDS
    if "$@" >"$out/$name.log" 2>&1; then
        note "$name: ok ($((SECONDS - t0)) s)"
    else
        note "$name: FAILED (rc $?, $((SECONDS - t0)) s; tail of $name.log below)"
        failed=1
        tail -n 40 "$out/$name.log"
        return 1
    fi
}

deps=$PWD/build-gpu-deps
if [ ! -d "$deps/debs" ]; then
    echo "device-check: build-gpu-deps/debs is missing: run tests/gpu/fetch-deps.sh on the" \
        "development machine and carry build-gpu-deps" >&2
    exit 2
fi
unpack() {
    rm -rf "$deps/root" && mkdir -p "$deps/root"
    for deb in "$deps"/debs/*.deb; do
        if command -v dpkg-deb >/dev/null; then
            dpkg-deb -x "$deb" "$deps/root"
        else
            (tmp=$(mktemp -d) && cd "$tmp" && ar x "$deb" && tar -xf data.tar.* -C "$deps/root" &&
                rm -rf "$tmp")
        fi
    done
    # the .pc files and links name /usr: point them at the unpacked tree
    find "$deps/root" -name '*.pc' -exec sed -i "s|^prefix=/usr|prefix=$deps/root/usr|" {} +
}
step unpack unpack || exit 1
lib=$deps/root/usr/lib/x86_64-linux-gnu
export PATH=$deps/root/usr/bin:$PATH:/usr/local/cuda/bin
export PKG_CONFIG_PATH=$lib/pkgconfig:$deps/root/usr/share/pkgconfig
export LD_LIBRARY_PATH=$lib:$lib/openblas-pthread:${LD_LIBRARY_PATH:-}
export CPATH=$deps/root/usr/include:$deps/root/usr/include/x86_64-linux-gnu/openblas-pthread
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >"$out/gpu.txt" 2>&1
note "device: $(tail -n 1 "$out/gpu.txt")"

build=build-gpu
step configure cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCHESSLENS_ENGINE_ONLY=ON \
    -DCMAKE_PREFIX_PATH="$deps/root/usr" || exit 1
step build cmake --build "$build" -j"$(nproc)" || exit 1
step gpu-tests ctest --test-dir "$build" -L gpu --output-on-failure
step engine-tests ctest --test-dir "$build" -L unit -j"$(nproc)" --output-on-failure
step memcheck env CHESSLENS_TEST_TMPDIR="$build/test-tmp/test_gpu_backend" \
    compute-sanitizer --tool memcheck --leak-check full --error-exitcode 1 \
    "$build/tests/gpu/test_gpu_backend"
step hf-logits python3 tests/gpu/hf_logits_check.py "$build"
step bench "$build/bench/gpu/bench_gpu" && cat "$out/bench.log"

echo
echo "== summary"
printf '%s\n' "${summary[@]}"
exit "$failed"
