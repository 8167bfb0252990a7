// Validates rendered Kubernetes manifests (a multi-document YAML file, e.g. `kustomize build`
// output) against two sets of Kubernetes schemas, offline:
//
//   1. strict, Kubernetes v1.21.2: the OpenAPI document kustomize carries (install-tools.sh
//      extracts it), turned into JSON Schema here and checked with ajv. Strict as kubeconform's
//      -strict is: an object may hold only the fields its type defines, so a misspelt field
//      (`replica:`, `livenesProbe:`), which the API server would drop or refuse, fails here.
//      apiVersion and kind must name a type the document defines.
//   2. kubernetes-models 4.5.1: the JSON schemas of a recent Kubernetes release (types up to
//      about 1.33), compiled to validators by that package. Not strict about unknown fields,
//      but it checks types, required fields and enums against a current API as well.
//
//   node validate-k8s.cjs OPENAPI.json MANIFESTS.yaml...
//
// Prints one line per error (file, document, kind/name, JSON path, message); exit 1 on any.
// The tools are found in $CHESSLENS_TOOLS (default /opt/chesslens-tools).
"use strict";
const fs = require("fs");
const path = require("path");
const { createRequire } = require("module");

const tools = process.env.CHESSLENS_TOOLS || "/opt/chesslens-tools";
const toolsRequire = createRequire(path.join(tools, "package.json"));
const YAML = toolsRequire("yaml");
const Ajv = toolsRequire("ajv");

const [openapiFile, ...files] = process.argv.slice(2);
if (!openapiFile || files.length === 0) {
    console.error("usage: node validate-k8s.cjs OPENAPI.json MANIFESTS.yaml...");
    process.exit(2);
}

// --- the OpenAPI document as strict JSON Schema ------------------------------------------
const openapi = JSON.parse(fs.readFileSync(openapiFile, "utf8"));
const QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity";
const byKind = new Map(); // "apps/v1 Deployment" -> definition name

// One OpenAPI schema node into JSON Schema: x- extensions dropped (after reading what they
// say), int-or-string and quantities as the union of types the API server accepts, and
// additionalProperties: false on every object whose fields are listed.
function convert(node) {
    if (Array.isArray(node)) {
        return node.map(convert);
    }
    if (node === null || typeof node !== "object") {
        return node;
    }
    if (node.format === "int-or-string") {
        return { anyOf: [{ type: "string" }, { type: "integer" }] };
    }
    const open = node["x-kubernetes-preserve-unknown-fields"] === true;
    const out = {};
    for (const [key, value] of Object.entries(node)) {
        if (key.startsWith("x-")) {
            continue;
        }
        if (key === "properties") {
            out.properties = {};
            for (const [name, sub] of Object.entries(value)) {
                out.properties[name] = convert(sub);
            }
        } else if (key === "items" || key === "additionalProperties" || key === "allOf" ||
                   key === "anyOf" || key === "oneOf" || key === "not") {
            out[key] = convert(value);
        } else {
            out[key] = value; // type, format, required, enum, $ref, description, ...
        }
    }
    if (out.properties && out.additionalProperties === undefined && !open) {
        out.additionalProperties = false;
    }
    return out;
}

const definitions = {};
for (const [name, def] of Object.entries(openapi.definitions)) {
    definitions[name] = convert(def);
    for (const gvk of def["x-kubernetes-group-version-kind"] || []) {
        const apiVersion = gvk.group ? `${gvk.group}/${gvk.version}` : gvk.version;
        byKind.set(`${apiVersion} ${gvk.kind}`, name);
    }
}
// a quantity is written as a string ("512Mi") or a number (nvidia.com/gpu: 1)
definitions[QUANTITY] = { anyOf: [{ type: "string" }, { type: "number" }] };

const ajv = new Ajv({ allErrors: true, strictTypes: false, strictRequired: false });
const int = (lo, hi) => ({ type: "number", validate: (x) => Number.isInteger(x) && x >= lo && x <= hi });
ajv.addFormat("int32", int(-2147483648, 2147483647));
ajv.addFormat("int64", int(-Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER));
ajv.addFormat("double", { type: "number", validate: () => true });
ajv.addFormat("float", { type: "number", validate: () => true });
ajv.addFormat("byte", /^[A-Za-z0-9+/]*={0,2}$/);
ajv.addFormat("date-time", /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/);
ajv.addSchema({ $id: "k8s", definitions });
const strictValidators = new Map();

// --- kubernetes-models ---------------------------------------------------------------------
function modelsValidate(doc) {
    const [group, version] = doc.apiVersion.includes("/") ? doc.apiVersion.split("/")
        : [null, doc.apiVersion];
    let mod;
    try {
        mod = toolsRequire(`kubernetes-models/${group ? group + "/" : ""}${version}/${doc.kind}`);
    } catch (e) {
        return [`kubernetes-models: no type ${doc.apiVersion} ${doc.kind}`];
    }
    try {
        new mod[doc.kind](doc).validate();
    } catch (e) {
        return [`kubernetes-models: ${e.message}`];
    }
    return [];
}

// --- the manifests -------------------------------------------------------------------------
let errors = 0;
let checked = 0;
for (const file of files) {
    const docs = YAML.parseAllDocuments(fs.readFileSync(file, "utf8"));
    docs.forEach((d, i) => {
        const where = `${file}: document ${i + 1}`;
        const report = (what, msg) => {
            console.log(`${where} (${what}): ${msg}`);
            errors++;
        };
        if (d.errors.length > 0) {
            d.errors.forEach((e) => report("YAML", e.message));
            return;
        }
        const doc = d.toJS();
        if (doc === null) {
            return; // an empty document (a trailing ---)
        }
        const what = `${doc.kind}/${doc.metadata && doc.metadata.name}`;
        if (typeof doc.apiVersion !== "string" || typeof doc.kind !== "string") {
            report(what, "no apiVersion or kind");
            return;
        }
        const def = byKind.get(`${doc.apiVersion} ${doc.kind}`);
        if (!def) {
            report(what, `Kubernetes v1.21.2 has no type ${doc.apiVersion} ${doc.kind}`);
        } else {
            if (!strictValidators.has(def)) {
                strictValidators.set(def, ajv.compile({ $ref: `k8s#/definitions/${def}` }));
            }
            const validate = strictValidators.get(def);
            if (!validate(doc)) {
                for (const e of validate.errors) {
                    const extra = e.params && e.params.additionalProperty
                        ? ` '${e.params.additionalProperty}'` : "";
                    report(what, `v1.21.2 strict: ${e.instancePath || "/"} ${e.message}${extra}`);
                }
            }
        }
        modelsValidate(doc).forEach((msg) => report(what, msg));
        checked++;
    });
}
if (checked === 0) {
    console.log("validate-k8s: no Kubernetes object found");
    errors++;
}
console.log(`validate-k8s: ${checked} objects, ${errors} errors`);
process.exit(errors > 0 ? 1 : 0);
