#!/usr/bin/env bash
# The Kubernetes manifests of deploy/k8s, checked without a cluster (none runs here).
#   test_k8s.sh manifests SOURCE_DIR BINARY_DIR SCRATCH_DIR
#     1. yamllint over the sources; the base and the cpu overlay rendered by kustomize 4.5.4
#        and validated against the Kubernetes schemas (validate-k8s.cjs: the strict v1.21.2
#        OpenAPI, and kubernetes-models' recent ones), then checked for how the parts fit
#        (check-k8s.cjs);
#     2. the same checks on broken copies, each of which must fail: a test that cannot fail
#        proves nothing.
#   test_k8s.sh pods SOURCE_DIR BINARY_DIR SCRATCH_DIR
#     3. the cpu overlay's containers run as their pods would, with this build's binaries and
#        the image's entrypoint: the dataset init container, the coordinator, two workers and
#        the submit Job's command, which must see the ConfigMap's sweep (its games cut to the
#        first 20, to keep the test short) to the end with exit 0; then every process stops on
#        SIGTERM with exit 0, as a pod's deletion stops it.
# Needs tests/deploy/install-tools.sh (fails, does not skip, without it).
set -euo pipefail
mode=$1 src=$2 bin=$3 tmp=$4
here=$src/tests/deploy
test_name="test_k8s $mode"
# shellcheck source=tests/deploy/lib.sh
. "$here/lib.sh"
need_tools "$kustomize" "$openapi" yamllint node
rm -rf "$tmp" && mkdir -p "$tmp"

# Every check on one copy of deploy/k8s (K8S), its output in LOG. Exit status 0 when all pass.
check_tree() {
    local k8s=$1 log=$2
    {
        yamllint --strict -c "$here/yamllint.yaml" "$k8s" &&
            "$kustomize" build "$k8s/base" >"$log.base.yaml" &&
            "$kustomize" build "$k8s/overlays/cpu" >"$log.cpu.yaml" &&
            node "$here/validate-k8s.cjs" "$openapi" "$log.base.yaml" "$log.cpu.yaml" &&
            node "$here/check-k8s.cjs" gpu "$log.base.yaml" &&
            node "$here/check-k8s.cjs" cpu "$log.cpu.yaml"
    } >"$log" 2>&1
}

manifests() {
    # 1. the real files
    if ! check_tree "$src/deploy/k8s" "$tmp/real.log"; then
        cat "$tmp/real.log"
        fail "deploy/k8s does not pass"
    fi
    cat "$tmp/real.log"
    echo "the real files pass ($SECONDS s)"
    # 2. broken copies: FILE (under deploy/k8s)|a sed expression|what it breaks
    broken_copies "$src/deploy/k8s" check_tree "$tmp" \
        "base/coordinator.yaml|s/^  replicas: 1$/  replica: 1/|a misspelt field (schema, strict)" \
        "base/worker.yaml|s/GracePeriodSeconds: 300/GracePeriodSeconds: \"300\"/|a string for an integer (schema)" \
        "base/submit-job.yaml|s#^apiVersion: batch/v1#apiVersion: batch/v2#|an API version Kubernetes has not got (schema)" \
        "base/coordinator.yaml|s/type: ClusterIP/type: Cluster/|a value outside an enum (kubernetes-models)" \
        "base/worker.yaml|s#tcp://chesslens-coordinator:5555#tcp://coordinator:5555#|workers connecting to no Service (fit)" \
        "base/worker.yaml|s#nvidia.com/gpu: 1#nvidia.com/gpu: 2#|a GPU worker asking for two GPUs (fit)" \
        "base/coordinator.yaml|s#--db\", \"/var/lib/chesslens/#--db\", \"/tmp/#|the database off the persistent volume (fit)" \
        "base/coordinator.yaml|s/readOnlyRootFilesystem: true/readOnlyRootFilesystem: false/|a writable root file system (fit)" \
        "overlays/cpu/worker-cpu.yaml|s/value: cpu/value: cuda/|CPU workers on the CUDA backend (fit)" \
        "overlays/cpu/kustomization.yaml|s#limits/nvidia.com~1gpu#limits/amd.com~1gpu#|an overlay removing what the base has not (kustomize)" \
        "base/kustomization.yaml|s/  - network-policy.yaml/  - network-policy.yml/|a resource file that does not exist (kustomize)" \
        "base/namespace.yaml|s/^  name: chesslens/   name: chesslens/|broken YAML indentation (yamllint)"
    echo "every broken copy fails ($SECONDS s)"
}

pods() {
    # 3. the cpu overlay's pods, run here. The pod's paths become directories under $tmp (the
    # volume, the mounted ConfigMaps, the image's models), the Service's name 127.0.0.1 and a
    # free port; the image's entrypoint runs from a copy that finds the binaries in $tmp/bin.
    "$kustomize" build "$src/deploy/k8s/overlays/cpu" >"$tmp/cpu.yaml"
    node "$here/check-k8s.cjs" cpu "$tmp/cpu.yaml" --extract "$tmp/pod" >/dev/null
    mkdir -p "$tmp/bin" "$tmp/pv" "$tmp/tmpdir"
    ln -s "$bin/cli/chesslens" "$bin/cli/chesslens-coordinator" "$bin/worker/chesslens-worker" "$tmp/bin/"
    sed "s#/usr/local/bin/#$tmp/bin/#g" "$src/deploy/container/entrypoint.sh" >"$tmp/bin/chesslens-entrypoint"
    chmod +x "$tmp/bin/chesslens-entrypoint"
    local port service pod_port
    port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    read -r service pod_port < <(node -e 'const p = JSON.parse(require("fs").readFileSync(process.argv[1]));
        console.log(p.service, p.port)' "$tmp/pod/pods.json")
    rewrites=("/var/lib/chesslens/=$tmp/pv/" "/etc/chesslens/dataset/=$tmp/pod/"
        "/etc/chesslens/sweep/=$tmp/pod/" "tcp://*:$pod_port=tcp://127.0.0.1:$port"
        "tcp://$service:$pod_port=tcp://127.0.0.1:$port")
    # the image's models are the repository's; the first 20 games keep the run short
    sed -i "s#/opt/chesslens/models/#$src/models/#" "$tmp/pod/sweep.json"
    /usr/bin/python3 - "$tmp/pod/sweep.json" <<'PY'
import json, sys
spec = json.load(open(sys.argv[1]))
spec["games"] = [spec["games"][0], min(spec["games"][1], spec["games"][0] + 20)]
json.dump(spec, open(sys.argv[1], "w"))
PY
    pids=()
    trap kill_pods EXIT

    run dataset "$tmp/dataset.log"
    wait "${pids[0]}" || { cat "$tmp/dataset.log"; fail "the dataset init container failed"; }
    pids=()
    run coordinator "$tmp/coordinator.log"
    # $(POD_NAME) is what Kubernetes fills in from the pod's name (a fieldRef)
    # shellcheck disable=SC2016
    run worker "$tmp/worker-1.log" '$(POD_NAME)=chesslens-worker-pod-1'
    # shellcheck disable=SC2016
    run worker "$tmp/worker-2.log" '$(POD_NAME)=chesslens-worker-pod-2'
    run submit "$tmp/submit.log"
    local submit=${pids[3]} rc=0 i p
    # until the Job's command ends; the coordinator or a worker ending first is a failure
    # (the command would wait for them for ever, as it does for a restarting coordinator)
    for ((i = 0; i < 3600; i++)); do
        kill -0 "$submit" 2>/dev/null || break
        for p in 0 1 2; do
            if ! kill -0 "${pids[p]}" 2>/dev/null; then
                local who=coordinator
                [ "$p" = 0 ] || who="worker-$p"
                tail -n 20 "$tmp/$who.log"
                fail "the $who ended before the sweep did"
            fi
        done
        sleep 0.1
    done
    kill -0 "$submit" 2>/dev/null && fail "the submit Job's command did not finish in 360 s"
    wait "$submit" || rc=$?
    if [ "$rc" != 0 ]; then
        cat "$tmp/submit.log" "$tmp/coordinator.log"
        fail "the submit Job's command exited $rc"
    fi
    grep -q "sweep 'demo' finished" "$tmp/submit.log" || { cat "$tmp/submit.log"; fail "no summary from wait"; }
    "$bin/cli/chesslens" workers --coordinator "tcp://127.0.0.1:$port" >"$tmp/workers.txt"
    if ! grep -q chesslens-worker-pod-1 "$tmp/workers.txt" || ! grep -q chesslens-worker-pod-2 "$tmp/workers.txt"; then
        cat "$tmp/workers.txt"
        fail "the workers do not show under their pods' names"
    fi
    stop "${pids[1]}" "worker 1"
    stop "${pids[2]}" "worker 2"
    stop "${pids[0]}" coordinator
    local tasks
    tasks=$("$bin/cli/chesslens" query --db "$tmp/pv/chesslens.db" --format csv \
        "SELECT count(*) || ' ' || sum(state = 'done') FROM task" | tail -n 1 | tr -d '\r')
    if [ "${tasks% *}" != "${tasks#* }" ] || [ "${tasks% *}" -lt 4 ]; then
        fail "tasks (all, done): $tasks"
    fi
    echo "pods: dataset, coordinator, 2 workers and the submit Job ran the sweep: tasks (all, done) $tasks; every process stopped on SIGTERM with exit 0 ($SECONDS s)"
}

# run ROLE LOG [FROM=TO...]: one container of pods.json in the background; an argv without a
# command goes through the image's entrypoint, as the image's ENTRYPOINT makes it
run() {
    local role=$1 log=$2 argv env
    shift 2
    mapfile -d '' argv < <(node "$here/pod-argv.cjs" "$tmp/pod/pods.json" "$role" "${rewrites[@]}" "$@")
    mapfile -d '' env < <(node "$here/pod-argv.cjs" "$tmp/pod/pods.json" "$role" --env "${rewrites[@]}" "$@")
    if [ "${argv[0]#/}" = "${argv[0]}" ]; then
        argv=("$tmp/bin/chesslens-entrypoint" "${argv[@]}")
    fi
    env "${env[@]}" PATH="$tmp/bin:$PATH" TMPDIR="$tmp/tmpdir" "${argv[@]}" >"$log" 2>&1 &
    pids+=($!)
}

# what is still running when the test ends (a failure): killed
kill_pods() {
    local p
    for p in "${pids[@]}"; do
        kill -KILL "$p" 2>/dev/null || true
    done
}

# stop PID NAME: SIGTERM, then it must exit 0 within 30 s, as within a pod's grace period
stop() {
    kill -TERM "$1"
    for _ in $(seq 300); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$1" 2>/dev/null; then
        fail "$2 still runs 30 s after SIGTERM"
    fi
    local rc=0
    wait "$1" || rc=$?
    [ "$rc" = 0 ] || fail "$2 exited $rc on SIGTERM (a pod's stop would be reported as failed)"
}

case "$mode" in
manifests) manifests ;;
pods) pods ;;
*) fail "mode $mode: manifests or pods" ;;
esac
