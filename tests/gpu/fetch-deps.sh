#!/usr/bin/env bash
# Prepares, on a Debian machine with network access, what tests/gpu/device-check.sh needs on a
# GPU machine that reaches no package registry: the Debian packages of the engine's libraries
# (OpenBLAS, jansson, cmocka, pkg-config), downloaded into build-gpu-deps/debs (ignored by git;
# pass it to the device tool's carry list). device-check.sh unpacks them there.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=build-gpu-deps/debs
rm -rf "$out" && mkdir -p "$out"
cd "$out"
apt-get download libopenblas-dev libopenblas-pthread-dev libopenblas0-pthread libopenblas0 \
    libgfortran5 libjansson-dev libjansson4 libcmocka-dev libcmocka0 pkgconf pkgconf-bin \
    libpkgconf3
ls -la
du -sh .
