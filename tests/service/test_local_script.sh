#!/usr/bin/env bash
# deploy/local/run-sweep.sh as a user runs it: a coordinator and two worker processes on a free
# loopback port run a small sweep to the end (exit 0, every task done, the values stored), and
# nothing it started is left running; then a run stopped by SIGTERM half-way leaves nothing
# running either, and the same command afterwards completes the sweep.
#   test_local_script.sh SOURCE_DIR BINARY_DIR SCRATCH_DIR
set -euo pipefail
src=$1 bin=$2 tmp=$3
rm -rf "$tmp" && mkdir -p "$tmp"
PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export PORT
cl=$bin/cli/chesslens
fail() { echo "test_local_script: $*" >&2; exit 1; }
# what a run started: the coordinator (--bind) and workers (--connect) name the port, the waiter
# the sweep
left_running() { pgrep -f -- "127.0.0.1:$PORT" >/dev/null || pgrep -f -- "chesslens wait local" >/dev/null; }
query() { "$cl" query --db "$1" --format csv "$2" | tail -n 1 | tr -d '\r'; }

cat >"$tmp/spec.json" <<JSON
{"name": "local", "model": "$src/models/chess-tiny", "dataset": "g", "games": [0, 12],
 "analyses": [
   {"kind": "patch", "patch": "resid_pre", "cutoffs": [12, 16],
    "corrupt": {"position": "last", "with": "each_legal_alternative"},
    "metric": {"kind": "logit_diff", "tokens": ["clean_top", "corrupt_top"]}},
   {"kind": "predictions", "top_k": 3}]}
JSON

# 1. a whole run
db=$tmp/whole.db
"$cl" games generate --n 12 --seed 5 --max-tokens 40 --db "$db" --dataset g >/dev/null 2>&1
CHESSLENS_BIN=$bin LOG_DIR=$tmp bash "$src/deploy/local/run-sweep.sh" "$tmp/spec.json" "$db" 2 1 \
    >"$tmp/whole.out" 2>&1 || { cat "$tmp/whole.out"; fail "run-sweep.sh exited $?"; }
grep -q "sweep 'local' finished" "$tmp/whole.out" || { cat "$tmp/whole.out"; fail "no summary"; }
total=$(query "$db" "SELECT count(*) FROM task")
done_=$(query "$db" "SELECT count(*) FROM task WHERE state = 'done'")
values=$(query "$db" "SELECT count(*) FROM patch_value")
[ "$total" -gt 2 ] && [ "$done_" = "$total" ] && [ "$values" -gt 0 ] ||
    fail "$done_ of $total tasks done, $values patch values"
sleep 0.5
if left_running; then fail "processes of the whole run are still running"; fi

# 2. stopped half-way by SIGTERM, then run again
db=$tmp/stopped.db
"$cl" games generate --n 12 --seed 5 --max-tokens 40 --db "$db" --dataset g >/dev/null 2>&1
CHESSLENS_BIN=$bin LOG_DIR=$tmp bash "$src/deploy/local/run-sweep.sh" "$tmp/spec.json" "$db" 2 1 \
    >"$tmp/stopped.out" 2>&1 &
script=$!
for _ in $(seq 600); do # until the sweep exists (up to 60 s)
    [ -f "$db" ] && [ "$(query "$db" "SELECT count(*) FROM sweep")" = 1 ] 2>/dev/null && break
    sleep 0.1
done
kill -TERM "$script"
status=0
wait "$script" || status=$?
[ "$status" -ne 0 ] || [ "$(query "$db" "SELECT count(*) FROM task WHERE state != 'done'")" = 0 ] ||
    fail "the stopped run exited 0 with the sweep unfinished"
sleep 0.5
if left_running; then fail "processes of the stopped run are still running"; fi
CHESSLENS_BIN=$bin LOG_DIR=$tmp bash "$src/deploy/local/run-sweep.sh" "$tmp/spec.json" "$db" 2 1 \
    >"$tmp/again.out" 2>&1 || { cat "$tmp/again.out"; fail "the second run exited $?"; }
[ "$(query "$db" "SELECT count(*) FROM task WHERE state = 'done'")" = "$total" ] ||
    fail "the second run did not complete the sweep"
[ "$(query "$db" "SELECT count(*) FROM patch_value")" = "$values" ] ||
    fail "the resumed sweep stored another number of values than the whole run"
echo "test_local_script: ok ($total tasks, $values patch values, stop and resume)"
