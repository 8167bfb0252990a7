// Writes the Kubernetes OpenAPI (v2) document that kustomize carries inside its binary (it
// merges patches by the schema's keys) to a JSON file: the schema tests/deploy/validate-k8s.cjs
// checks manifests against, offline. The kustomize binary is pinned (tools/package.json) and
// install-tools.sh checks the digest of what this writes, so the schema is pinned with it.
//
//   node extract-openapi.cjs KUSTOMIZE_BINARY OUT.json
//
// The binary embeds it gzip-compressed; this tries each gzip header in the file and keeps the
// member that is an OpenAPI document titled Kubernetes.
"use strict";
const fs = require("fs");
const zlib = require("zlib");

const [binary, out] = process.argv.slice(2);
if (!binary || !out) {
    console.error("usage: node extract-openapi.cjs KUSTOMIZE_BINARY OUT.json");
    process.exit(2);
}
const bytes = fs.readFileSync(binary);
const magic = Buffer.from([0x1f, 0x8b, 0x08]);
for (let at = bytes.indexOf(magic); at >= 0; at = bytes.indexOf(magic, at + 1)) {
    let text;
    try {
        // gunzip stops at the end of the member; the rest of the binary after it is ignored
        text = zlib.gunzipSync(bytes.subarray(at)).toString("utf8");
    } catch (e) {
        continue; // three bytes that only look like a gzip header
    }
    let doc;
    try {
        doc = JSON.parse(text);
    } catch (e) {
        continue;
    }
    if (doc.swagger === "2.0" && doc.info && doc.info.title === "Kubernetes" && doc.definitions) {
        fs.writeFileSync(out, JSON.stringify(doc));
        console.log(`${out}: Kubernetes ${doc.info.version}, ` +
            `${Object.keys(doc.definitions).length} definitions`);
        process.exit(0);
    }
}
console.error(`extract-openapi: no Kubernetes OpenAPI document in ${binary}`);
process.exit(1);
