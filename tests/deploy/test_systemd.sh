#!/usr/bin/env bash
# The systemd units of deploy/systemd, checked where systemd is not the init (it is not here):
#   1. deploy/systemd/install.sh installs this build's binaries and the units into a scratch
#      root, as into /; systemd-sysusers creates the user there;
#   2. `systemd-analyze verify --root` loads the installed units, with their ExecStart=
#      binaries, and must say nothing (an unknown directive or bad value is only a warning to
#      systemd, so any output fails); `systemd-analyze security --offline` must rate their
#      exposure at most 2.0 (coordinator) and 2.5 (worker) of 10; the hardening directives
#      are present, each line as written;
#   3. every variable ExecStart= reads has a default in the unit, and every setting of
#      chesslens.env is read by a unit (a misspelt key would silently not apply);
#   4. the coordinator and a worker run with the command lines and environment systemd would
#      give them (systemd-exec.py), the worker CPU-only through worker-0.env as docs/DEPLOY.md
#      says; the worker shows up under its unit's id, and both exit 0 on SIGTERM;
#   5. broken copies of deploy/systemd, each of which must fail these checks.
#   test_systemd.sh SOURCE_DIR BINARY_DIR SCRATCH_DIR
set -euo pipefail
src=$1 bin=$2 tmp=$3
here=$src/tests/deploy
test_name=test_systemd
# shellcheck source=tests/deploy/lib.sh
. "$here/lib.sh"
need_tools systemd-analyze systemd-sysusers /usr/bin/python3
rm -rf "$tmp" && mkdir -p "$tmp"
exec_line() { /usr/bin/python3 "$here/systemd-exec.py" "$@"; }

# Every check on one copy of deploy/systemd (DIR), its output in LOG; exit status 0 when all pass.
check_units() {
    local dir=$1 log=$2
    (check_units_in "$dir" "$log.root") >"$log" 2>&1
}
# Called in a condition, where bash ignores set -e: every step that can fail returns 1 itself.
check_units_in() {
    local dir=$1 root=$2 out u f
    rm -rf "$root" && mkdir -p "$root/usr/lib/systemd" "$root/etc" || return 1
    # the system's own units (targets, the network) for the units' dependencies to resolve
    cp -r /usr/lib/systemd/system "$root/usr/lib/systemd/" || return 1
    bash "$dir/install.sh" --root "$root" "$bin" >"$root.install.log" 2>&1 ||
        { cat "$root.install.log"; echo "install.sh failed"; return 1; }
    grep -q '^chesslens:x:[0-9]*:[0-9]*:.*:/var/lib/chesslens:/usr/sbin/nologin$' "$root/etc/passwd" ||
        { echo "systemd-sysusers made no chesslens user"; return 1; }

    out=$(systemd-analyze verify --man=no --root="$root" chesslens-coordinator.service \
        chesslens-worker@0.service chesslens-worker@1.service 2>&1) ||
        { echo "$out"; echo "systemd-analyze verify failed"; return 1; }
    [ -z "$out" ] || { echo "$out"; echo "systemd-analyze verify complained"; return 1; }
    for u in chesslens-coordinator.service:20 chesslens-worker@0.service:25; do
        systemd-analyze security --offline=yes --root="$root" --threshold="${u#*:}" "${u%:*}" >"$root/security.txt" 2>&1 ||
            { tail -n 3 "$root/security.txt"; echo "${u%:*}: exposure over ${u#*:}/100"; return 1; }
    done

    local common=(Type=exec User=chesslens Group=chesslens NoNewPrivileges=yes ProtectSystem=strict
        ProtectHome=yes PrivateTmp=yes ProtectKernelTunables=yes ProtectKernelModules=yes
        ProtectControlGroups=yes RestrictSUIDSGID=yes CapabilityBoundingSet= SystemCallFilter=@system-service
        Restart=on-failure KillSignal=SIGTERM EnvironmentFile=-/etc/chesslens/chesslens.env)
    for f in "${common[@]}" StateDirectory=chesslens PrivateDevices=yes MemoryDenyWriteExecute=yes \
        RestartSec=5s TimeoutStopSec=60s; do
        grep -qxF "$f" "$dir/chesslens-coordinator.service" || { echo "coordinator unit: no line $f"; return 1; }
    done
    for f in "${common[@]}" PrivateDevices=no DevicePolicy=closed 'DeviceAllow=char-nvidia-frontend rw' \
        'DeviceAllow=char-nvidia rw' 'DeviceAllow=char-nvidia-uvm rw' Environment=CHESSLENS_DEVICES=%i Environment=CHESSLENS_BACKEND=cuda \
        EnvironmentFile=-/etc/chesslens/worker-%i.env RestartSec=10s TimeoutStopSec=300s; do
        grep -qxF "$f" "$dir/chesslens-worker@.service" || { echo "worker unit: no line $f"; return 1; }
    done

    # 3. the variables
    local keys unit k
    for unit in chesslens-coordinator.service chesslens-worker@0.service; do
        keys=$(exec_line "$root" "$unit" --keys) || return 1
        for k in $keys; do
            grep -q "^Environment=$k=" "$root/etc/systemd/system/${unit/@0/@}" ||
                { echo "$unit: ExecStart= reads \$$k, which has no default in the unit"; return 1; }
        done
        printf '%s\n' "$keys" >>"$root/read-keys"
    done
    while read -r k; do
        grep -qxF "$k" "$root/read-keys" || { echo "chesslens.env sets $k, which no unit reads"; return 1; }
    done < <(sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/\1/p' "$dir/chesslens.env")

    # 4. run them as systemd would (here as root: User= needs systemd)
    local port pc pw rc workers
    port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    mkdir -p "$root/var/lib/chesslens"
    printf '# a CPU-only worker (docs/DEPLOY.md)\nCHESSLENS_BACKEND=cpu\nCHESSLENS_THREADS=1\n' \
        >"$root/etc/chesslens/worker-0.env"
    local here_=(--set "CHESSLENS_DB=$root/var/lib/chesslens/chesslens.db"
        --set "CHESSLENS_BIND=tcp://127.0.0.1:$port" --set "CHESSLENS_COORDINATOR=tcp://127.0.0.1:$port")
    start_unit "$root" chesslens-coordinator.service "${here_[@]}"
    pc=$!
    start_unit "$root" chesslens-worker@0.service "${here_[@]}"
    pw=$!
    for _ in $(seq 100); do
        workers=$("$bin/cli/chesslens" workers --coordinator "tcp://127.0.0.1:$port" --timeout 2 2>&1 || true)
        grep -q "^$(hostname)-0 *cpu .* 1 *connected" <<<"$workers" && break
        if ! kill -0 "$pc" 2>/dev/null || ! kill -0 "$pw" 2>/dev/null; then
            break
        fi
        sleep 0.1
    done
    if ! grep -q "^$(hostname)-0 *cpu .* 1 *connected" <<<"$workers"; then
        echo "$workers"
        cat "$root/chesslens-coordinator.service.log" "$root/chesslens-worker@0.service.log"
        kill -KILL "$pc" "$pw" 2>/dev/null || true
        echo "the worker unit did not connect as $(hostname)-0 (cpu, 1 thread)"
        return 1
    fi
    for p in "$pw:worker" "$pc:coordinator"; do
        kill -TERM "${p%:*}"
        rc=0
        timeout 30 tail --pid="${p%:*}" -f /dev/null || { echo "${p#*:} ran on after SIGTERM"; return 1; }
        wait "${p%:*}" || rc=$?
        [ "$rc" = 0 ] || { echo "the ${p#*:} exited $rc on SIGTERM: systemd would call it failed"; return 1; }
    done
    [ -f "$root/var/lib/chesslens/chesslens.db" ] || { echo "no database in the state directory"; return 1; }
    echo "ok: installed, verified, exposure within bounds, hardened, variables consistent, ran and stopped cleanly"
}
# start_unit ROOT UNIT ARGS...: its ExecStart= in its WorkingDirectory=, in the background
start_unit() {
    local root=$1 unit=$2 argv env cwd v
    shift 2
    mapfile -d '' argv < <(exec_line "$root" "$unit" "$@")
    mapfile -d '' env < <(exec_line "$root" "$unit" --env "$@")
    cwd=$(exec_line "$root" "$unit" --cwd)
    mkdir -p "$cwd"
    # systemd starts a service with only its own variables (the sanitizers' options of a
    # sanitizer build are passed on, so that a finding still fails the run)
    local pass=()
    for v in ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS; do
        if [ -n "${!v:-}" ]; then
            pass+=("$v=${!v}")
        fi
    done
    (cd "$cwd" && exec env -i PATH=/usr/bin:/bin "${pass[@]}" "${env[@]}" "${argv[@]}") >"$root/$unit.log" 2>&1 &
}

# 1-4 on the real files
if ! check_units "$src/deploy/systemd" "$tmp/real.log"; then
    cat "$tmp/real.log"
    fail "deploy/systemd does not pass"
fi
cat "$tmp/real.log"

# 5. broken copies: FILE (under deploy/systemd)|a sed expression|what it breaks
broken_copies "$src/deploy/systemd" check_units "$tmp" \
    "chesslens-coordinator.service|s/^ProtectSystem=strict/ProtectSytem=strict/|a misspelt directive (verify)" \
    "chesslens-worker@.service|s/^NoNewPrivileges=yes/NoNewPrivileges=maybe/|a bad boolean (verify)" \
    "chesslens-worker@.service|s#^ExecStart=/usr/local/bin/chesslens-worker#ExecStart=/usr/local/bin/chesslens-workr#|a binary that does not exist (verify)" \
    "chesslens-coordinator.service|s/^\\[Service\\]/[Servce]/|a misspelt section (verify)" \
    "chesslens-coordinator.service|/^Protect/d|the Protect*= hardening gone (security, grep)" \
    "chesslens-worker@.service|/^PrivateTmp=yes/d|PrivateTmp= gone (grep)" \
    "chesslens.env|s/^CHESSLENS_THREADS=4/CHESSLENS_THREAD=4/|a misspelt setting (variables)" \
    "chesslens-worker@.service|s/ --threads / --thread /|a flag the worker does not know (run)" \
    "chesslens-worker@.service|s/^Environment=CHESSLENS_WORKER_ID=%H-%i/Environment=CHESSLENS_WORKER_ID=%H/|worker ids not per instance (run)" \
    "chesslens.sysusers|s/^u chesslens/x chesslens/|a bad sysusers line (systemd-sysusers)"
echo "every broken copy fails ($SECONDS s)"
