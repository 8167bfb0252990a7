// What the Dockerfile linters (dockerfile-utils, dockerfilelint) do not check in chesslens'
// Dockerfiles, and what no build can check here (no container engine runs on these machines):
//
//   - every ${ARG} in a FROM line is declared before the first FROM; COPY --from names an
//     earlier stage;
//   - every file COPY takes from the build context exists in it (the repository root) and is
//     not left out by the Dockerfile's ignore file; every file COPY --from=build takes from
//     /build exists in this machine's build directory (where CMake puts it);
//   - the final stage runs as a numeric non-root user, and ENTRYPOINT and CMD are in exec form
//     (JSON), so that the program is the container's main process and gets SIGTERM itself; the
//     entrypoint is a file the final stage copies in.
//
//   node check-dockerfile.cjs DOCKERFILE CONTEXT BUILD_DIR [--packages | --copy-context DEST]
//
// --packages prints each stage's apt-get install packages ("STAGE pkg pkg ..."), and
// --copy-context copies CONTEXT into DEST without what the ignore file (DOCKERFILE.dockerignore)
// leaves out, as the build context would be. The tools are found in $CHESSLENS_TOOLS.
"use strict";
const fs = require("fs");
const path = require("path");
const { createRequire } = require("module");

const tools = process.env.CHESSLENS_TOOLS || "/opt/chesslens-tools";
const { DockerfileParser } = createRequire(path.join(tools, "package.json"))("dockerfile-ast");

const [file, context, buildDir, flag, dest] = process.argv.slice(2);
if (!file || !context || !buildDir) {
    console.error("usage: node check-dockerfile.cjs DOCKERFILE CONTEXT BUILD_DIR [--packages | --copy-context DEST]");
    process.exit(2);
}
const problems = [];
const dockerfile = DockerfileParser.parse(fs.readFileSync(file, "utf8"));
const instructions = dockerfile.getInstructions();
const args = (i) => i.getArguments().map((a) => a.getValue());
const line = (i) => `${path.basename(file)}:${i.getRange().start.line + 1}`;

// --- the ignore file: Docker's patterns (path.Match plus **), as far as chesslens uses them --
const ignoreFile = `${file}.dockerignore`;
const patterns = fs.existsSync(ignoreFile)
    ? fs.readFileSync(ignoreFile, "utf8").split("\n").map((l) => l.trim())
        .filter((l) => l && !l.startsWith("#"))
    : [];
const regexes = patterns.map((p) => {
    if (/[![\]\\]/.test(p)) {
        problems.push(`${ignoreFile}: pattern ${p}: exceptions (!), classes ([]) and escapes are not handled by this check`);
    }
    const body = p.replace(/^\/+|\/+$/g, "").split("/").map((seg) => seg === "**" ? "(?:.*)"
        : seg.replace(/[.+^${}()|]/g, "\\$&").replace(/\*/g, "[^/]*").replace(/\?/g, "[^/]"))
        .join("/").replace(/\(\?:\.\*\)\//g, "(?:.*/)?");
    return new RegExp(`^${body}$`);
});
// a path is left out when it or a directory above it matches a pattern
const ignored = (rel) => {
    const parts = rel.split("/");
    for (let n = 1; n <= parts.length; n++) {
        const prefix = parts.slice(0, n).join("/");
        if (regexes.some((r) => r.test(prefix))) {
            return true;
        }
    }
    return false;
};

// --- stages, ARGs, COPY ----------------------------------------------------------------------
const globalArgs = new Set();
const stages = []; // { name, instructions }
for (const i of instructions) {
    const kw = i.getKeyword();
    if (kw === "ARG" && stages.length === 0) {
        globalArgs.add(args(i)[0].split("=")[0]);
    } else if (kw === "FROM") {
        const a = args(i);
        for (const m of a[0].matchAll(/\$\{?([A-Za-z_][A-Za-z0-9_]*)/g)) {
            if (!globalArgs.has(m[1])) {
                problems.push(`${line(i)}: FROM uses \${${m[1]}}, which no ARG before the first FROM declares`);
            }
        }
        const name = a.length === 3 && a[1].toUpperCase() === "AS" ? a[2] : null;
        if (name && stages.some((s) => s.name === name)) {
            problems.push(`${line(i)}: stage ${name} is declared twice`);
        }
        stages.push({ name, instructions: [] });
    } else if (stages.length > 0) {
        stages[stages.length - 1].instructions.push(i);
    }
}
if (stages.length < 2) {
    problems.push(`${path.basename(file)}: not a multi-stage build (${stages.length} stage)`);
}
stages.forEach((stage, si) => {
    for (const i of stage.instructions) {
        if (i.getKeyword() !== "COPY" && i.getKeyword() !== "ADD") {
            continue;
        }
        // flags (--from=, --chown=) are not among the arguments
        const words = args(i);
        const fromFlag = i.getFromFlag ? i.getFromFlag() : null;
        const from = fromFlag ? fromFlag.getValue() : "";
        const sources = words.slice(0, -1);
        if (from) {
            const earlier = stages.slice(0, si).some((s, k) => s.name === from || String(k) === from);
            if (!earlier) {
                problems.push(`${line(i)}: COPY --from=${from}: no earlier stage of that name`);
                continue;
            }
            for (const s of sources) {
                if (!s.startsWith("/build/")) {
                    problems.push(`${line(i)}: COPY --from=${from} ${s}: not under /build, the build directory`);
                } else if (!fs.existsSync(path.join(buildDir, s.slice("/build/".length)))) {
                    problems.push(`${line(i)}: COPY --from=${from} ${s}: the build makes no such file ` +
                        `(${path.join(buildDir, s.slice("/build/".length))} is missing)`);
                }
            }
        } else {
            for (const s of sources) {
                const rel = path.normalize(s).replace(/^\.\/?/, "");
                if (rel === "" || rel === ".") {
                    continue; // the whole context
                }
                if (!fs.existsSync(path.join(context, rel))) {
                    problems.push(`${line(i)}: COPY ${s}: not in the build context`);
                } else if (ignored(rel)) {
                    problems.push(`${line(i)}: COPY ${s}: left out of the context by ${path.basename(ignoreFile)}`);
                }
            }
        }
    }
});

// --- the final stage -----------------------------------------------------------------------
const final = stages[stages.length - 1] || { instructions: [] };
const last = (kw) => final.instructions.filter((i) => i.getKeyword() === kw).pop();
const user = last("USER");
const uid = user ? args(user)[0].split(":")[0] : undefined;
if (!user || !/^[0-9]+$/.test(uid) || uid === "0") {
    problems.push(`${path.basename(file)}: the final stage must run as a numeric non-root USER (runAsNonRoot checks it)`);
}
const execForm = (kw) => {
    const i = last(kw);
    if (!i) {
        problems.push(`${path.basename(file)}: no ${kw} in the final stage`);
        return null;
    }
    const raw = i.getArgumentsContent ? i.getArgumentsContent() : args(i).join(" ");
    try {
        const v = JSON.parse(raw);
        if (!Array.isArray(v) || v.some((x) => typeof x !== "string")) {
            throw new Error("not an array of strings");
        }
        return v;
    } catch (e) {
        problems.push(`${line(i)}: ${kw} is not in exec form (a JSON array): ${raw}`);
        return null;
    }
};
const entrypoint = execForm("ENTRYPOINT");
execForm("CMD");
if (entrypoint) {
    const copied = final.instructions.filter((i) => i.getKeyword() === "COPY")
        .some((i) => { const w = args(i); return w[w.length - 1] === entrypoint[0]; });
    if (!copied) {
        problems.push(`${path.basename(file)}: ENTRYPOINT ${entrypoint[0]} is no file the final stage copies in`);
    }
}

for (const p of problems) {
    console.log(p);
}
if (problems.length > 0) {
    process.exit(1);
}
if (flag === "--packages") {
    stages.forEach((stage, si) => {
        const pkgs = [];
        for (const i of stage.instructions.filter((x) => x.getKeyword() === "RUN")) {
            const w = args(i);
            for (let k = w.indexOf("install"); k >= 0 && k < w.length; k = w.indexOf("install", k + 1)) {
                if (w[k - 1] !== "apt-get") {
                    continue;
                }
                for (let j = k + 1; j < w.length && w[j] !== "&&" && w[j] !== "\\"; j++) {
                    if (!w[j].startsWith("-")) {
                        pkgs.push(w[j]);
                    }
                }
            }
        }
        console.log(`${stage.name || si} ${pkgs.join(" ")}`);
    });
} else if (flag === "--copy-context") {
    const copy = (rel) => {
        const from = path.join(context, rel);
        if (rel && ignored(rel)) {
            return;
        }
        const st = fs.lstatSync(from);
        if (st.isDirectory()) {
            fs.mkdirSync(path.join(dest, rel), { recursive: true });
            for (const name of fs.readdirSync(from)) {
                copy(rel ? `${rel}/${name}` : name);
            }
        } else if (st.isFile() || st.isSymbolicLink()) {
            fs.cpSync(from, path.join(dest, rel), { verbatimSymlinks: true });
        }
    };
    copy("");
} else {
    console.log(`ok: ${path.basename(file)}: stages, ARGs, COPY sources, user and entrypoint`);
}
