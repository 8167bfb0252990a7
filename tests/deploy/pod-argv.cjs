// One container's command line from the pods.json that check-k8s.cjs --extract writes, with
// the pod's paths and addresses replaced by this machine's (FROM=TO, plain substring
// replacements, in order), printed NUL-separated for bash's `mapfile -d ''`. With --env, the
// container's environment as NAME=VALUE instead, after the same replacements.
//
//   node pod-argv.cjs PODS.json ROLE [--env] [FROM=TO...]
"use strict";
const fs = require("fs");

const args = process.argv.slice(2);
const [file, role] = args;
const env = args.includes("--env");
const pairs = args.slice(2).filter((a) => a !== "--env").map((a) => {
    const i = a.indexOf("=");
    return [a.slice(0, i), a.slice(i + 1)];
});
const pods = JSON.parse(fs.readFileSync(file, "utf8"));
if (!pods[role]) {
    console.error(`pod-argv: no container ${role} in ${file}`);
    process.exit(2);
}
const rewrite = (s) => pairs.reduce((acc, [from, to]) => acc.split(from).join(to), s);
const words = env
    ? Object.entries(pods[role].env).map(([k, v]) => `${k}=${rewrite(v)}`)
    : pods[role].argv.map(rewrite);
process.stdout.write(words.map((w) => w + "\0").join(""));
