#!/usr/bin/env bash
# Install the project with the build and dev extras into $VENV (default .venv): what the tests,
# the lint gate and the image check run on. Skipped when nothing it reads has changed since the
# last install into that venv. scripts/test.sh and .ci/run call it.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
# torch/torchvision pinned: on the development and CI machines these exact versions install
# from local disk instead of a multi-GB download.
stamp="$VENV/.inspyrenet-install-$(cat pyproject.toml constraints/*.txt | sha256sum | cut -c1-16)"
if [ ! -e "$stamp" ]; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        -c constraints/serve.txt -c constraints/cuda12.txt torch==2.14.1 torchvision==0.29.1 -e '.[build,dev]'
    rm -f "$VENV"/.inspyrenet-install-* && touch "$stamp"
fi
