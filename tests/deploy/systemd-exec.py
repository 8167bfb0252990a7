#!/usr/bin/env python3
"""The command line and environment systemd would start a unit's ExecStart= with, for running
it by hand where systemd is not the init (tests/deploy/test_systemd.sh). It follows systemd's
rules for what the chesslens units use: the specifiers %i %I %H %S %C %%; Environment=
assignments, then the EnvironmentFile= files in order (a later setting wins, a leading '-'
makes a missing file fine, file settings override Environment=); in ExecStart=, ${NAME} is
replaced inside its word and $NAME alone as a word is split at whitespace into words (none when
empty). Paths in the unit (EnvironmentFile=, the binary) are looked up under ROOT.

  systemd-exec.py ROOT UNIT_NAME [--set NAME=VALUE]... [--env | --keys | --cwd]

UNIT_NAME is e.g. chesslens-worker@0.service (read from ROOT/etc/systemd/system/, a template
for an instance). --set overrides after everything (the test's stand-in for this machine's
paths and ports). Prints the argv NUL-separated; --env the environment as NAME=VALUE lines
(NUL-separated), --keys every variable ExecStart= reads, one a line, --cwd WorkingDirectory= (under ROOT).
"""
import os
import re
import shlex
import socket
import sys


def fail(msg):
    print(f"systemd-exec: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    args = sys.argv[1:]
    if len(args) < 2:
        fail("usage: systemd-exec.py ROOT UNIT_NAME [--set NAME=VALUE]... [--env|--keys|--cwd]")
    root, name = args[0], args[1]
    sets, mode, rest = [], "argv", args[2:]
    while rest:
        a = rest.pop(0)
        if a == "--set" and rest:
            sets.append(rest.pop(0))
        elif a in ("--env", "--keys", "--cwd"):
            mode = a[2:]
        else:
            fail(f"unknown argument {a}")

    m = re.fullmatch(r"([^@]+)@([^.]*)\.service", name)
    instance = m.group(2) if m else ""
    unit_file = f"{m.group(1)}@.service" if m else name
    path = os.path.join(root, "etc/systemd/system", unit_file)
    service = {}
    section = None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line
                continue
            key, _, value = line.partition("=")
            if section == "[Service]":
                service.setdefault(key, []).append(value)

    spec = {"i": instance, "I": instance, "H": socket.gethostname(), "S": "/var/lib",
            "C": "/var/cache", "%": "%"}

    def specifiers(s):
        def one(mt):
            if mt.group(1) not in spec:
                fail(f"{unit_file}: specifier %{mt.group(1)} is not handled here")
            return spec[mt.group(1)]
        return re.sub(r"%(.)", one, s)

    env = {}
    for assignment in service.get("Environment", []):
        for word in shlex.split(specifiers(assignment)):
            k, _, v = word.partition("=")
            env[k] = v
    for ef in service.get("EnvironmentFile", []):
        optional = ef.startswith("-")
        ef = specifiers(ef.lstrip("-"))
        try:
            with open(os.path.join(root, ef.lstrip("/"))) as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            if optional:
                continue
            fail(f"{ef} missing (EnvironmentFile= without '-')")
        for n, line in enumerate(lines, 1):
            s = line.strip()
            if not s or s[0] in "#;":
                continue
            k, eq, v = s.partition("=")
            if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k.strip()):
                fail(f"{ef}:{n}: not NAME=VALUE: {line}")
            env[k.strip()] = v.strip()
    for s in sets:
        k, _, v = s.partition("=")
        env[k] = v

    execs = service.get("ExecStart", [])
    if len(execs) != 1:
        fail(f"{unit_file}: {len(execs)} ExecStart= lines, this handles one")
    words = specifiers(execs[0]).split()
    keys = []
    argv = []
    for w in words:
        whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", w)
        if whole:
            keys.append(whole.group(1))
            argv.extend(env.get(whole.group(1), "").split())
            continue

        def braced(mt):
            keys.append(mt.group(1))
            return env.get(mt.group(1), "")
        argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", braced, w))
    argv[0] = os.path.join(root, argv[0].lstrip("/"))

    if mode == "keys":
        print("\n".join(keys))
    elif mode == "env":
        sys.stdout.write("".join(f"{k}={v}\0" for k, v in env.items()))
    elif mode == "cwd":
        print(os.path.join(root, specifiers(service.get("WorkingDirectory", ["/"])[-1]).lstrip("/")))
    else:
        sys.stdout.write("".join(a + "\0" for a in argv))


main()
