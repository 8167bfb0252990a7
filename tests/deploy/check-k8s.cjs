// What a schema cannot see in chesslens' rendered Kubernetes manifests: that the parts fit
// together. The worker and the submit Job connect to the coordinator's Service at the port the
// coordinator binds, the Services select the coordinator's pod, the database lives on the
// persistent volume, the ConfigMaps are mounted where the commands read them, GPU workers ask
// for exactly one GPU (and CPU workers for none), every pod runs as a non-root user with a
// read-only root file system and every container has resources.
//
//   node check-k8s.cjs gpu|cpu RENDERED.yaml            check; exit 1 with a line per problem
//   node check-k8s.cjs gpu|cpu RENDERED.yaml --extract DIR
//                                                       check, then write what test_k8s.sh
//                                                       runs as the pods would: DIR/pods.json
//                                                       and the ConfigMaps' files
// The tools are found in $CHESSLENS_TOOLS (default /opt/chesslens-tools).
"use strict";
const fs = require("fs");
const path = require("path");
const { createRequire } = require("module");

const tools = process.env.CHESSLENS_TOOLS || "/opt/chesslens-tools";
const YAML = createRequire(path.join(tools, "package.json"))("yaml");

const [variant, file, flag, outDir] = process.argv.slice(2);
if (!["gpu", "cpu"].includes(variant) || !file || (flag && (flag !== "--extract" || !outDir))) {
    console.error("usage: node check-k8s.cjs gpu|cpu RENDERED.yaml [--extract DIR]");
    process.exit(2);
}
const objects = YAML.parseAllDocuments(fs.readFileSync(file, "utf8")).map((d) => d.toJS())
    .filter((o) => o !== null);
const problems = [];
const check = (ok, msg) => {
    if (!ok) {
        problems.push(msg);
    }
    return ok;
};
const find = (kind, name) => objects.find((o) => o.kind === kind && o.metadata.name === name);
const findPrefix = (kind, prefix) =>
    objects.find((o) => o.kind === kind && o.metadata.name.startsWith(prefix));
const matches = (selector, labels) =>
    Object.entries(selector || {}).every(([k, v]) => labels && labels[k] === v);
const flagValue = (args, name) => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : undefined;
};
// Kubernetes' $(NAME) expansion of a container's args from its env
const expand = (s, env) => s.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, n) => {
    const e = (env || []).find((x) => x.name === n);
    return e && e.value !== undefined ? e.value : m;
});
const envValue = (c, name) => ((c.env || []).find((e) => e.name === name) || {}).value;

// --- every object, pod and container -------------------------------------------------------
for (const o of objects) {
    check(o.metadata.labels && o.metadata.labels["app.kubernetes.io/part-of"] === "chesslens" ||
          o.kind === "ConfigMap", `${o.kind}/${o.metadata.name}: no part-of: chesslens label`);
    if (o.kind !== "Namespace") {
        check(o.metadata.namespace === "chesslens", `${o.kind}/${o.metadata.name}: not in namespace chesslens`);
    }
}
const workloads = objects.filter((o) => ["StatefulSet", "Deployment", "Job"].includes(o.kind));
for (const w of workloads) {
    const pod = w.spec.template.spec;
    const name = `${w.kind}/${w.metadata.name}`;
    const psc = pod.securityContext || {};
    check(psc.runAsNonRoot === true && psc.runAsUser === 10001,
          `${name}: the pod must run as the image's user 10001 with runAsNonRoot`);
    check(psc.seccompProfile && psc.seccompProfile.type === "RuntimeDefault",
          `${name}: no RuntimeDefault seccomp profile`);
    check(pod.automountServiceAccountToken === false, `${name}: mounts a service account token`);
    check(matches(w.spec.selector && w.spec.selector.matchLabels, w.spec.template.metadata.labels) ||
          w.kind === "Job", `${name}: the selector does not match the pod template's labels`);
    for (const c of [...(pod.initContainers || []), ...pod.containers]) {
        const cname = `${name} container ${c.name}`;
        const sc = c.securityContext || {};
        check(sc.allowPrivilegeEscalation === false, `${cname}: allowPrivilegeEscalation is not false`);
        check(sc.readOnlyRootFilesystem === true, `${cname}: the root file system is not read-only`);
        check(sc.capabilities && JSON.stringify(sc.capabilities.drop) === '["ALL"]',
              `${cname}: capabilities are not all dropped`);
        check(c.image === `chesslens:${variant === "gpu" ? "cuda" : "cpu"}`,
              `${cname}: image ${c.image}, not the ${variant} image`);
        const r = c.resources || {};
        check(r.requests && r.requests.cpu && r.requests.memory && r.limits && r.limits.memory,
              `${cname}: no cpu and memory requests and memory limit`);
        const tmp = (c.volumeMounts || []).find((m) => m.mountPath === "/tmp");
        check(tmp && (pod.volumes || []).some((v) => v.name === tmp.name && v.emptyDir) ||
              w.kind === "Job", `${cname}: no writable /tmp (an emptyDir) under a read-only root`);
        for (const m of c.volumeMounts || []) {
            check((pod.volumes || []).some((v) => v.name === m.name) ||
                  (w.spec.volumeClaimTemplates || []).some((t) => t.metadata.name === m.name),
                  `${cname}: mounts ${m.name}, which is no volume of the pod`);
        }
    }
}

// --- the coordinator -----------------------------------------------------------------------
const sts = find("StatefulSet", "chesslens-coordinator");
const svc = find("Service", "chesslens-coordinator");
const coordinator = sts && sts.spec.template.spec.containers.find((c) => c.name === "coordinator");
let bindPort;
if (check(sts && svc && coordinator, "no coordinator StatefulSet, Service or container")) {
    check(sts.spec.replicas === 1, "the coordinator StatefulSet must have exactly 1 replica");
    const governing = find("Service", sts.spec.serviceName);
    check(governing && governing.spec.clusterIP === "None" &&
          matches(governing.spec.selector, sts.spec.template.metadata.labels),
          `spec.serviceName ${sts.spec.serviceName}: no headless Service selecting the coordinator`);
    check(matches(svc.spec.selector, sts.spec.template.metadata.labels) &&
          Object.keys(svc.spec.selector || {}).length > 0,
          "the coordinator Service does not select the coordinator's pod");
    const args = coordinator.args || [];
    check(args[0] === "coordinator", "the coordinator container does not run `coordinator`");
    const bind = flagValue(args, "--bind") || "";
    const m = /^tcp:\/\/\*:(\d+)$/.exec(bind);
    if (check(m, `--bind ${bind}: not tcp://*:PORT (every address of the pod)`)) {
        bindPort = Number(m[1]);
    }
    const port = (coordinator.ports || []).find((p) => p.containerPort === bindPort);
    check(port, `the coordinator binds port ${bindPort} but declares no such containerPort`);
    const sport = svc.spec.ports[0];
    check(port && sport && (sport.targetPort === port.name || sport.targetPort === bindPort),
          "the coordinator Service's targetPort is not the port the coordinator binds");
    for (const probe of ["readinessProbe", "livenessProbe", "startupProbe"]) {
        const p = coordinator[probe];
        check(p && p.tcpSocket && (p.tcpSocket.port === port.name || p.tcpSocket.port === bindPort),
              `the coordinator's ${probe} is not a tcpSocket probe of its port`);
    }
    const db = flagValue(args, "--db") || "";
    const dataMount = (coordinator.volumeMounts || []).find((mt) =>
        (sts.spec.volumeClaimTemplates || []).some((t) => t.metadata.name === mt.name));
    check(dataMount && db.startsWith(dataMount.mountPath + "/"),
          `--db ${db} is not on the persistent volume (volumeClaimTemplates)`);
    const init = (sts.spec.template.spec.initContainers || []).find((c) => c.name === "dataset");
    check(init && envValue(init, "CHESSLENS_DB") === db,
          "the dataset init container does not write the database the coordinator opens");
}

// --- the workers and the Job connect to that Service ----------------------------------------
const endpoint = svc && bindPort !== undefined
    ? `tcp://${svc.metadata.name}:${svc.spec.ports[0].port}` : undefined;
const dep = find("Deployment", "chesslens-worker");
const worker = dep && dep.spec.template.spec.containers.find((c) => c.name === "worker");
if (check(dep && worker, "no worker Deployment or container")) {
    const args = (worker.args || []).map((a) => expand(a, worker.env));
    check(args[0] === "worker", "the worker container does not run `worker`");
    check(flagValue(args, "--connect") === endpoint,
          `the worker connects to ${flagValue(args, "--connect")}, the coordinator is at ${endpoint}`);
    const backend = flagValue(args, "--backend");
    const gpus = ((worker.resources || {}).limits || {})["nvidia.com/gpu"];
    if (variant === "gpu") {
        check(backend === "cuda", `GPU workers run --backend ${backend}`);
        check(gpus === 1, `a GPU worker must ask for exactly one GPU (nvidia.com/gpu: ${gpus})`);
        check(flagValue(args, "--devices") === "0", "a GPU worker's one GPU is device 0 in its pod");
    } else {
        check(backend === "cpu", `CPU workers run --backend ${backend}`);
        check(gpus === undefined, "a CPU worker asks for a GPU");
        check(!(dep.spec.template.spec.tolerations || []).some((t) => t.key === "nvidia.com/gpu"),
              "CPU workers tolerate the GPU nodes' taint");
    }
    check(/^\d+$/.test(flagValue(args, "--threads") || ""), "the worker's --threads is not a number");
    check(dep.spec.template.spec.terminationGracePeriodSeconds >= 120,
          "workers get less than 120 s to finish their task when stopped");
}
const job = find("Job", "chesslens-submit");
const submit = job && job.spec.template.spec.containers[0];
const sweepMap = findPrefix("ConfigMap", "chesslens-sweep");
const datasetMap = findPrefix("ConfigMap", "chesslens-dataset");
if (check(job && submit && sweepMap && datasetMap, "no submit Job or sweep and dataset ConfigMaps")) {
    check(envValue(submit, "CHESSLENS_COORDINATOR") === endpoint,
          `the submit Job connects to ${envValue(submit, "CHESSLENS_COORDINATOR")}, the coordinator is at ${endpoint}`);
    const volume = job.spec.template.spec.volumes.find((v) => v.configMap &&
        v.configMap.name === sweepMap.metadata.name);
    const mount = volume && submit.volumeMounts.find((m) => m.name === volume.name);
    const cmd = (submit.command || []).join(" ");
    check(mount && cmd.includes(`${mount.mountPath}/sweep.json`),
          "the submit Job's command does not read sweep.json where the sweep ConfigMap is mounted");
    check(/chesslens submit .*&& chesslens wait/.test(cmd), "the submit Job does not submit, then wait");
    let spec = {};
    try {
        spec = JSON.parse(sweepMap.data["sweep.json"]);
    } catch (e) {
        check(false, `sweep.json in the ConfigMap is not JSON: ${e.message}`);
    }
    check(typeof spec.model === "string" && spec.model.startsWith("/opt/chesslens/models/"),
          `the sweep's model ${spec.model} is not in the image (/opt/chesslens/models/)`);
    const script = datasetMap.data["dataset.sh"] || "";
    check(script.includes(`--dataset ${spec.dataset} `) || script.includes(`--dataset ${spec.dataset}\n`),
          `dataset.sh does not make the sweep's dataset ${spec.dataset}`);
    const init = sts && (sts.spec.template.spec.initContainers || []).find((c) => c.name === "dataset");
    const dvol = sts && sts.spec.template.spec.volumes.find((v) => v.configMap &&
        v.configMap.name === datasetMap.metadata.name);
    const dmount = init && dvol && init.volumeMounts.find((m) => m.name === dvol.name);
    check(dmount && (init.command || []).includes(`${dmount.mountPath}/dataset.sh`),
          "the init container does not run dataset.sh where the dataset ConfigMap is mounted");
}

// --- the network policy lets the clients in ------------------------------------------------
const policy = objects.find((o) => o.kind === "NetworkPolicy" && sts && o.spec.podSelector.matchLabels &&
    matches(o.spec.podSelector.matchLabels, sts.spec.template.metadata.labels));
check(policy && policy.spec.ingress.some((rule) =>
    (rule.ports || []).some((p) => p.port === bindPort) &&
    (rule.from || []).some((f) => [dep, job].every((w) => w &&
        matches(f.podSelector.matchLabels, w.spec.template.metadata.labels)))),
      "no NetworkPolicy lets the workers and the submit Job reach the coordinator's port");

for (const p of problems) {
    console.log(`${file} (${variant}): ${p}`);
}
if (problems.length > 0) {
    process.exit(1);
}
console.log(`check-k8s: ${file} (${variant}): the parts fit`);

if (flag === "--extract") {
    // what test_k8s.sh runs: each container's command line as Kubernetes would start it
    fs.mkdirSync(outDir, { recursive: true });
    fs.writeFileSync(path.join(outDir, "sweep.json"), sweepMap.data["sweep.json"]);
    fs.writeFileSync(path.join(outDir, "dataset.sh"), datasetMap.data["dataset.sh"]);
    const init = sts.spec.template.spec.initContainers.find((c) => c.name === "dataset");
    const line = (c) => ({
        argv: [...(c.command || []), ...(c.args || []).map((a) => expand(a, c.env))],
        env: Object.fromEntries((c.env || []).filter((e) => e.value !== undefined)
            .map((e) => [e.name, e.value])),
    });
    fs.writeFileSync(path.join(outDir, "pods.json"), JSON.stringify({
        service: svc.metadata.name,
        port: bindPort,
        dataset: line(init),
        coordinator: line(coordinator),
        worker: line(worker),
        submit: line(submit),
    }, null, 1));
}
