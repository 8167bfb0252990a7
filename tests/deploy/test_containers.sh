#!/usr/bin/env bash
# The Dockerfiles of deploy/container, checked where no container engine runs (none does
# here, so no image is built):
#   1. two linters, dockerfile-utils (the parser behind the VS Code Docker extension: unknown
#      instructions and flags, missing arguments; any output fails) and dockerfilelint (bad
#      ports, apt-get misuse, ...);
#   2. check-dockerfile.cjs: ARGs, stages, COPY sources in the context and in this build
#      directory, a numeric non-root USER, exec-form ENTRYPOINT and CMD;
#   3. the build context as each ignore file leaves it configures with CMake (nothing the build
#      needs is left out), and the two ignore files list the same patterns;
#   4. packages: every Debian package Dockerfile.cpu installs exists in Debian 12; its runtime
#      stage installs the package of every shared library the binaries built here (on Debian
#      12, as in the image) link; its build stage has every library package of
#      deploy/install-deps.sh; the CUDA Dockerfile installs the same lists (msgpack-c under
#      Ubuntu's name); the image's uid is the one the Kubernetes pods run as;
#   5. broken copies of deploy/container, each of which must fail these checks.
#   test_containers.sh SOURCE_DIR BINARY_DIR SCRATCH_DIR
set -euo pipefail
src=$1 bin=$2 tmp=$3
here=$src/tests/deploy
test_name=test_containers
# shellcheck source=tests/deploy/lib.sh
. "$here/lib.sh"
lint_utils=$tools/node_modules/.bin/dockerfile-utils
lint_practices=$tools/node_modules/.bin/dockerfilelint
need_tools "$lint_utils" "$lint_practices" node readelf dpkg apt-cache cmake
rm -rf "$tmp" && mkdir -p "$tmp"

# packages FILE STAGE: the packages apt-get installs in that stage (build, or 1 for the final)
packages() { node "$here/check-dockerfile.cjs" "$1" "$src" "$bin" --packages | sed -n "s/^$2 //p"; }

# The Debian packages that provide the libraries a binary links, less those every Debian
# image has (libc6, libgcc-s1), the sanitizer runtimes of a sanitizer build (the Debug
# build of tests/run-all.sh), which no image holds, and the CUDA Toolkit's.
needed_packages() {
    local b lib p
    for b in "$@"; do
        for lib in $(readelf -d "$b" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
            p=$(ldd "$b" | awk -v l="$lib" '$1 == l { print $3 }')
            [ -n "$p" ] || { echo "UNRESOLVED:$lib"; continue; }
            p=$(readlink -f "$p")
            # the CUDA Toolkit's libraries (cuBLAS, the CUDA runtime) of a build with the GPU
            # backend, and the C++ runtime its CUDA code brings: the CUDA runtime image
            # provides them, and Dockerfile.cpu's build (no nvcc) links neither
            case $p in /usr/local/cuda*/*) echo "CUDA" && continue ;; esac
            # merged /usr: dpkg may know the file under /lib rather than /usr/lib
            { dpkg -S "$p" 2>/dev/null || dpkg -S "${p#/usr}" 2>/dev/null || echo "UNOWNED:$p"; } |
                head -n 1 | sed 's/:.*//; s/ .*//'
        done
    done | sort -u | grep -vxE 'libc6|libgcc-s1|lib(a|ub|l|t)san[0-9]+' |
        { mapfile -t found; if printf '%s\n' "${found[@]}" | grep -qx CUDA; then
            printf '%s\n' "${found[@]}" | grep -vxE 'CUDA|libstdc\+\+6'; else
            printf '%s\n' "${found[@]}"; fi; } || true
}

# Every check on one copy of deploy/container (DIR), its output in LOG; 0 when all pass.
check_container() {
    (check_container_in "$1" "$2.d") >"$2" 2>&1
}
# Called in a condition, where bash ignores set -e: every step that can fail returns 1 itself.
check_container_in() {
    local dir=$1 work=$2 f out p key
    rm -rf "$work" && mkdir -p "$work"
    for f in Dockerfile Dockerfile.cpu; do
        out=$("$lint_utils" lint "$dir/$f" 2>&1) || { echo "$out"; echo "dockerfile-utils: $f fails"; return 1; }
        [ -z "$out" ] || { echo "$out"; echo "dockerfile-utils complains about $f"; return 1; }
        "$lint_practices" "$dir/$f" >"$work/$f.lint" 2>&1 ||
            { grep -E '^(Line|Issue| +[0-9])' "$work/$f.lint" | head -n 6; echo "dockerfilelint: $f fails"; return 1; }
        node "$here/check-dockerfile.cjs" "$dir/$f" "$src" "$bin" || return 1
        # configuring once per distinct list of patterns is enough (the broken copies share it)
        key=$(grep -v '^#' "$dir/$f.dockerignore" | sha256sum | cut -c1-16)
        if [ ! -e "$tmp/configures-$key" ]; then
            node "$here/check-dockerfile.cjs" "$dir/$f" "$src" "$bin" --copy-context "$work/context-$f" || return 1
            if ! cmake -S "$work/context-$f" -B "$work/configure-$f" -DCMAKE_BUILD_TYPE=Release \
                -DCHESSLENS_GPU=OFF >"$work/configure-$f.log" 2>&1; then
                grep -m 3 -A 2 'CMake Error' "$work/configure-$f.log"
                echo "the context $f.dockerignore leaves does not configure"
                return 1
            fi
            rm -rf "$work/context-$f" "$work/configure-$f"
            touch "$tmp/configures-$key"
        fi
    done
    diff <(grep -v '^#' "$dir/Dockerfile.dockerignore" | grep .) \
        <(grep -v '^#' "$dir/Dockerfile.cpu.dockerignore" | grep .) ||
        { echo "the two ignore files list different patterns"; return 1; }

    local cpu_build cpu_run cuda_build cuda_run deps
    cpu_build=$(packages "$dir/Dockerfile.cpu" build) && cpu_run=$(packages "$dir/Dockerfile.cpu" 1) &&
        cuda_build=$(packages "$dir/Dockerfile" build) && cuda_run=$(packages "$dir/Dockerfile" 1) || return 1
    # one apt-cache call for all (each takes a second); it names only the packages it found
    # shellcheck disable=SC2086 # one word per package
    out=$(apt-cache show --no-all-versions $cpu_build $cpu_run 2>/dev/null | sed -n 's/^Package: //p')
    for p in $cpu_build $cpu_run; do
        grep -qxF -- "$p" <<<"$out" ||
            { echo "Dockerfile.cpu installs $p, which Debian 12 has not (or apt-get update never ran)"; return 1; }
    done
    for p in $needed; do
        grep -qw -- "$p" <<<"$cpu_run" ||
            { echo "the binaries link a library of $p, which the runtime stage of Dockerfile.cpu does not install"; return 1; }
    done
    deps=$(sed -n '/^packages=(/,/^)/p' "$src/deploy/install-deps.sh" | grep -o '\blib[a-z0-9.+-]*-dev\b' |
        grep -vx 'libclang-rt-[0-9]*-dev')
    for p in $deps; do
        grep -qw -- "$p" <<<"$cpu_build" ||
            { echo "deploy/install-deps.sh installs $p, the build stage of Dockerfile.cpu does not"; return 1; }
    done
    [ "$cuda_run" = "$cpu_run" ] || { echo "runtime packages differ: Dockerfile: $cuda_run; Dockerfile.cpu: $cpu_run"; return 1; }
    [ "$cuda_build" = "${cpu_build/libmsgpack-dev/libmsgpack-c-dev}" ] ||
        { echo "build packages differ: Dockerfile: $cuda_build; Dockerfile.cpu: $cpu_build"; return 1; }
    for f in Dockerfile Dockerfile.cpu; do
        if ! grep -qx 'USER 10001:10001' "$dir/$f" || ! grep -q -- '--uid 10001 ' "$dir/$f"; then
            echo "$f: not USER 10001:10001 made by useradd --uid 10001"
            return 1
        fi
    done
    if grep -rhn 'runAsUser:' "$src/deploy/k8s" | grep -v 'runAsUser: 10001$'; then
        echo "the Kubernetes pods run as another uid than the image's 10001"
        return 1
    fi
    echo "ok: linted, stages and COPY sources, context configures, packages: runtime $cpu_run"
}

# the library packages of this build's binaries, for the runtime stage check
needed=$(needed_packages "$bin/cli/chesslens" "$bin/cli/chesslens-coordinator" "$bin/worker/chesslens-worker")
if [ -z "$needed" ] || grep -q -E 'UNRESOLVED|UNOWNED' <<<"$needed"; then
    fail "the libraries the binaries link do not map to Debian packages: $needed"
fi

# 1-4 on the real files
if ! check_container "$src/deploy/container" "$tmp/real.log"; then
    cat "$tmp/real.log"
    fail "deploy/container does not pass"
fi
cat "$tmp/real.log"

# 5. broken copies: FILE (under deploy/container)|a sed expression|what it breaks
broken_copies "$src/deploy/container" check_container "$tmp" \
    "Dockerfile|s/^WORKDIR/WORKDIRR/|an unknown instruction (dockerfile-utils)" \
    "Dockerfile.cpu|s#^COPY \\. /src#COPY --chmown=0 . /src#|an unknown flag (dockerfile-utils)" \
    "Dockerfile.cpu|s/^EXPOSE 5555/EXPOSE 99999/|a port that cannot exist (dockerfilelint)" \
    "Dockerfile.cpu|s/--from=build/--from=biuld/|a COPY from a stage that does not exist (check)" \
    "Dockerfile|s/-runtime-\${UBUNTU}/-runtime-\${UBUNTO}/|an undeclared ARG (check)" \
    "Dockerfile.cpu|s#/build/worker/chesslens-worker#/build/cli/chesslens-worker#|a binary where CMake does not put it (check)" \
    "Dockerfile.cpu|s#^ENTRYPOINT .*#ENTRYPOINT /usr/local/bin/chesslens-entrypoint#|a shell-form ENTRYPOINT (check)" \
    "Dockerfile.cpu|s/^USER 10001:10001/USER root/|the image running as root (check)" \
    "Dockerfile.cpu.dockerignore|\$a models|a COPY source left out of the context (check)" \
    "Dockerfile.dockerignore|\$a cmake|the context without what CMake needs (configure)" \
    "Dockerfile.cpu|s/libjansson4 //|a library the binaries link, not installed (packages)" \
    "Dockerfile.cpu|s/ libzmq5 / libzmq-five /|a package Debian has not got (packages)" \
    "Dockerfile.cpu|s/ libcmocka-dev//|the build stage behind deploy/install-deps.sh (packages)"
echo "every broken copy fails ($SECONDS s)"
