#!/usr/bin/env bash
# Install the project (build + dev extras) into .venv and run the test suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -k image -x, or scripts/test.sh -m "not slow"
# (the fast tier: no real model, no command that imports torch).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
# torch/torchvision pinned: on the development and CI machines these exact
# versions install from local disk instead of a multi-GB download. The install is
# skipped when nothing it reads has changed since the last one in this venv.
stamp="$VENV/.inspyrenet-install-$(cat pyproject.toml constraints/*.txt | sha256sum | cut -c1-16)"
if [ ! -e "$stamp" ]; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        -c constraints/serve.txt -c constraints/cuda12.txt torch==2.14.1 torchvision==0.29.1 -e '.[build,dev]'
    rm -f "$VENV"/.inspyrenet-install-* && touch "$stamp"
fi

# Which kernels this CPU gives torch: without native fp16 (AVX512 alone), the fp16
# check runs emulated (pipeline/export/fp16_emulation.py) so the suite's time does not depend on it.
# The fast tier runs no fp16 check: it prints the CPU alone.
if [[ " $* " == *"not slow"* ]]; then
    echo "cpu: $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
else
    "$VENV/bin/python" -c 'import torch
from pipeline.export.fp16_emulation import cpu_model, native_fp16_slowdown
print(f"cpu: {cpu_model()}; torch CPU capability {torch.backends.cpu.get_cpu_capability()}; "
      f"native fp16 conv {native_fp16_slowdown():.1f}x the time of fp32")'
fi

status=0
"$VENV/bin/python" -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests (exit 5): nothing matched the selection" >&2
    exit 0
fi
exit "$status"
