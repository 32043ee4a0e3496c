#!/usr/bin/env bash
# Refresh the hash-locked environments (requirements*.lock) from the pins in requirements*.txt, for Linux x86_64 and
# Python 3.11 (what CI tests). Run from the repository root after changing a pin: pip install uv==0.13.9 && envs/lock.sh
# Every lock is resolved within requirements-gpu.lock's versions (-c), so one package has one version in all of them.
set -euo pipefail
cd "$(dirname "$0")/.."
compile() {
    uv pip compile --quiet --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
        "$@"
}
compile requirements-gpu.txt -o requirements-gpu.lock
compile requirements.txt -c requirements-gpu.lock -o requirements.lock
compile requirements-dev.txt -c requirements-gpu.lock -o requirements-dev.lock
compile requirements-login.txt -c requirements-gpu.lock -o requirements-login.lock
