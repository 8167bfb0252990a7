#!/usr/bin/env bash
# Runs one sweep through the distributed service on this machine: a chesslens-coordinator and
# WORKERS chesslens-worker processes on a loopback port, `chesslens submit`, `chesslens wait`
# (with its progress bar), prints the sweep's status and the rows it stored in each result
# view, then stops everything it started -- also on Ctrl-C or an error.
#
#   deploy/local/run-sweep.sh SPEC.json DB [WORKERS] [THREADS]
#
# The database must hold the spec's dataset (chesslens games generate|import). Rerun after an
# interruption and the sweep resumes: the coordinator finds it in DB and hands out what is left.
# Environment: CHESSLENS_BIN (default build/release), PORT (default: a free one), LOG_DIR
# (default: next to DB). Exit code: that of `chesslens wait` (0 only without dead tasks).
set -euo pipefail
if [ $# -lt 2 ]; then
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
spec=$1 db=$2 workers=${3:-2} threads=${4:-1}
bin=${CHESSLENS_BIN:-build/release}
log_dir=${LOG_DIR:-$(dirname "$db")}
port=${PORT:-$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
endpoint=tcp://127.0.0.1:$port
export CHESSLENS_COORDINATOR=$endpoint

pids=()
# shellcheck disable=SC2317 # run by the EXIT trap
stop_all() {
    # the last started first: the waiter and the workers (a stopping worker returns its tasks
    # to the coordinator, so that must still be up), then the coordinator; SIGTERM, and SIGKILL
    # for what is still there after 5 s
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        pid=${pids[i]}
        kill -TERM "$pid" 2>/dev/null || continue
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
}
trap stop_all EXIT
trap 'exit 130' INT TERM

"$bin/cli/chesslens-coordinator" --db "$db" --bind "$endpoint" 2>"$log_dir/coordinator.log" &
pids+=($!)
for i in $(seq "$workers"); do
    "$bin/worker/chesslens-worker" --connect "$endpoint" --threads "$threads" \
        --id "$(hostname)-local-$i" 2>"$log_dir/worker-$i.log" &
    pids+=($!)
done
echo "coordinator on $endpoint, $workers workers (logs in $log_dir)"
sweep=$("$bin/cli/chesslens" submit "$spec")
"$bin/cli/chesslens" workers
# in the background, so that a signal to this script is handled at once (bash runs a trap only
# after the foreground command it waits for has ended)
"$bin/cli/chesslens" wait "$sweep" &
pids+=($!)
rc=0
wait "$!" || rc=$?

# the summary: the sweep's tasks by state (dead ones with their errors), and the rows it stored
# in each result view (docs/STORE.md); the name is [A-Za-z0-9._-] (the coordinator checks it)
"$bin/cli/chesslens" status "$sweep" || true
"$bin/cli/chesslens" query --db "$db" "
SELECT 'patch_effects' AS view, count(*) AS rows FROM patch_effects WHERE sweep = '$sweep'
UNION ALL SELECT 'legal_stats', count(*) FROM legal_stats WHERE sweep = '$sweep'
UNION ALL SELECT 'neuron_stats', count(*) FROM neuron_stats WHERE sweep = '$sweep'
UNION ALL SELECT 'predictions', count(*) FROM predictions WHERE sweep = '$sweep'" || true
exit "$rc"
