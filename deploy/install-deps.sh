#!/usr/bin/env bash
# Installs everything chesslens needs on a fresh Debian 12 machine (run as root). Safe to run
# again: apt-get skips what is already installed.
#
#   build:     cmake, pkg-config, a C compiler, clang-format (format check), clang and its
#              libFuzzer runtime (fuzz targets)
#   libraries: ZeroMQ, msgpack-c, SQLite, OpenBLAS, jansson, cmocka
#   reference: python3-torch + python3-numpy (the PyTorch reference behind the golden tests and
#              the benchmark baselines), python3-pandas (reading results from Python, as the
#              README shows), stockfish (a cross-check for move generation)
#   report:    chromium and fonts-dejavu-core (the headless-browser test of the HTML report;
#              DejaVu has the chess glyphs of the board plot), locales (the plot test's check
#              that numbers are written the same under a comma locale)
#   cluster:   slurm-wlm and munge (the test of deploy/slurm starts a one-node Slurm cluster)
#   faults:    faketime and libfaketime (the test of wall clock jumps under the coordinator and
#              workers, tests/service/test_checklist_clock.c)
#   deploy:    systemd, shellcheck and yamllint, and the pinned npm validators of the deployment
#              files (tests/deploy/install-tools.sh: kustomize, the Kubernetes schemas, two
#              Dockerfile linters, into /opt/chesslens-tools)
# The CUDA Toolkit is optional and not installed here: the GPU backend is built when nvcc exists.
set -euo pipefail

packages=(
    build-essential cmake pkg-config git clang libclang-rt-14-dev clang-format
    libzmq3-dev libmsgpack-dev libsqlite3-dev sqlite3 libopenblas-dev libjansson-dev libcmocka-dev
    python3 python3-torch python3-numpy python3-pandas stockfish
    chromium fonts-dejavu-core locales slurm-wlm munge systemd shellcheck yamllint
    faketime libfaketime
)

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps.sh: run as root (apt-get needs it)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${packages[@]}"
bash "$(dirname "$0")/../tests/deploy/install-tools.sh"
