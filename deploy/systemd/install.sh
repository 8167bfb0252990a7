#!/usr/bin/env bash
# Installs the chesslens binaries and systemd units on this machine (run as root):
#
#   deploy/systemd/install.sh [--root DIR] [BUILD_DIR]
#
#   BUILD_DIR/cli/chesslens, chesslens-coordinator, BUILD_DIR/worker/chesslens-worker
#                                       -> /usr/local/bin/
#   chesslens-coordinator.service, chesslens-worker@.service -> /etc/systemd/system/
#   chesslens.env     -> /etc/chesslens/chesslens.env (only when absent: it is your config)
#   chesslens.sysusers -> /etc/sysusers.d/chesslens.conf, then systemd-sysusers creates the user
#
# BUILD_DIR defaults to build/release (deploy/demo.sh and tests/run-all.sh build there). --root
# installs into DIR as if it were / (the tests do that) and skips `systemctl daemon-reload`.
# It enables nothing: docs/DEPLOY.md has the systemctl commands. Safe to run again (an upgrade:
# new binaries and units, the environment file kept; restart the services afterwards).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=/
if [ "${1:-}" = "--root" ]; then
    [ $# -ge 2 ] || { echo "install.sh: --root needs a directory" >&2; exit 2; }
    root=$2
    shift 2
fi
build=${1:-$here/../../build/release}
bins=("$build/cli/chesslens" "$build/cli/chesslens-coordinator" "$build/worker/chesslens-worker")
for b in "${bins[@]}"; do
    [ -x "$b" ] || { echo "install.sh: $b not found: build first (cmake --build $build)" >&2; exit 1; }
done

install -d -m 0755 "$root/usr/local/bin" "$root/etc/systemd/system" "$root/etc/chesslens" \
    "$root/etc/sysusers.d"
install -m 0755 "${bins[@]}" "$root/usr/local/bin/"
install -m 0644 "$here/chesslens-coordinator.service" "$here/chesslens-worker@.service" \
    "$root/etc/systemd/system/"
install -m 0644 "$here/chesslens.sysusers" "$root/etc/sysusers.d/chesslens.conf"
if [ ! -e "$root/etc/chesslens/chesslens.env" ]; then
    install -m 0644 "$here/chesslens.env" "$root/etc/chesslens/chesslens.env"
else
    echo "install.sh: kept $root/etc/chesslens/chesslens.env (the new default is $here/chesslens.env)"
fi

if [ "$root" = / ]; then
    systemd-sysusers /etc/sysusers.d/chesslens.conf
    # only where systemd is the running init (not in a chroot or a container build)
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload
    fi
else
    systemd-sysusers --root="$root" "$root/etc/sysusers.d/chesslens.conf"
fi
echo "installed into $root: enable with 'systemctl enable --now chesslens-coordinator chesslens-worker@0' (docs/DEPLOY.md)"
