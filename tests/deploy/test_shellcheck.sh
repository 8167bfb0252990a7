#!/usr/bin/env bash
# Runs shellcheck (every severity, sourced files followed) over the shell scripts of deploy/ (files
# named *.sh, and any file whose first line runs sh or bash, such as deploy/slurm's sbatch
# script) and of tests/deploy/; then over broken copies, each of which must fail.
#   test_shellcheck.sh SOURCE_DIR SCRATCH_DIR
set -euo pipefail
src=$1 tmp=$2
test_name=test_shellcheck
# shellcheck source=tests/deploy/lib.sh
. "$src/tests/deploy/lib.sh"
need_tools shellcheck
rm -rf "$tmp" && mkdir -p "$tmp"

# the scripts under TREE (relative paths, one a line)
scripts() {
    local f
    (cd "$1" && find deploy tests/deploy -type f | sort) | while read -r f; do
        case "$f" in
        *.sh) echo "$f" ;;
        *)
            if head -n 1 "$1/$f" | grep -qE '^#!.*[/ ](ba|da)?sh( |$)'; then
                echo "$f"
            fi
            ;;
        esac
    done
}

# Runs shellcheck over one tree (TREE) holding deploy/ and tests/deploy/; output in LOG
check_scripts() {
    local tree=$1 log=$2 list
    list=$(scripts "$tree")
    {
        for f in deploy/demo.sh deploy/local/run-sweep.sh deploy/systemd/install.sh \
            deploy/container/entrypoint.sh tests/deploy/install-tools.sh; do
            grep -qxF "$f" <<<"$list" || { echo "$f is not among the scripts checked"; return 1; }
        done
        # shellcheck disable=SC2086 # one word per path (the paths have no spaces)
        (cd "$tree" && shellcheck -x $list) && echo "ok: shellcheck passes $(wc -l <<<"$list") scripts"
    } >"$log" 2>&1
}

mkdir -p "$tmp/tree/tests"
cp -r "$src/deploy" "$tmp/tree/"
cp -r "$src/tests/deploy" "$tmp/tree/tests/"
if ! check_scripts "$tmp/tree" "$tmp/real.log"; then
    cat "$tmp/real.log"
    fail "shellcheck finds problems"
fi
cat "$tmp/real.log"
scripts "$tmp/tree" | sed 's/^/  /'

broken_copies "$tmp/tree" check_scripts "$tmp" \
    "deploy/container/entrypoint.sh|s#chesslens-worker \"\$@\"#chesslens-worker \$@#|unquoted \$@ (SC2068)" \
    "deploy/systemd/install.sh|s#\[ -x \"\$b\" \]#[ -x \$b ]#|an unquoted variable (SC2086)" \
    "deploy/k8s/base/dataset.sh|s/^set -eu$/if true; then/|a syntax error" \
    "tests/deploy/lib.sh|s#cp -r \"\$tree\" \"\$copy\"#cp -r \$tree \$copy#|unquoted paths in a sourced file (SC2086)"
echo "every broken copy fails ($SECONDS s)"
