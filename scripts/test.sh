#!/usr/bin/env bash
# Install the project (build + dev extras, scripts/install.sh) and run the test suite: every tier,
# tests/unit, tests/integration and tests/system, on every core (pytest-xdist, one file per worker
# at a time, so a module's server starts once).
#   scripts/test.sh                  every tier
#   scripts/test.sh tests/unit       the fast tier (in-process, the toy bundle)
# Extra arguments go to pytest (e.g. -k image -x). Environment: VENV (default .venv),
# TEST_WORKERS (default: the number of cores; 0 runs in this process), INSPYRENET_TEST_BUNDLE and
# INSPYRENET_TEST_BUNDLE_LOG (a fast bundle built before, and its build's stderr: tests/conftest.py).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
VENV="$VENV" ./scripts/install.sh
./scripts/install-browser-tools.sh  # Chromium and acorn for tests/integration/test_web_client.py
./scripts/install-test-clients.sh  # remove.bg's npm client for tests/integration/test_removebg_clients.py

# The machine: CPUs differ 3x from one run to the next, and some have no native fp16.
flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -xE 'avx2|avx512f|avx512_fp16|amx_tile' | paste -sd, - || true)
echo "cpu: $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores, ${flags:-no AVX2}"
# Beyond the unit tier, how fast this CPU runs fp16 in torch: without native fp16 the fp16 check
# runs emulated (pipeline/export/fp16_emulation.py), so the suite's time does not depend on it.
if [[ " $* " != *" tests/unit"* && " $* " != *"not slow"* ]]; then
    "$VENV/bin/python" -c 'import torch
from pipeline.export.fp16_emulation import native_fp16_slowdown
print(f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}; "
      f"native fp16 conv {native_fp16_slowdown():.1f}x the time of fp32")'
fi

workers=()
if [[ " $* " != *" -n "* && " $* " != *" --numprocesses"* ]]; then
    workers=(-n "${TEST_WORKERS:-$(nproc)}" --dist loadfile)
fi
status=0
"$VENV/bin/python" -m pytest "${workers[@]}" "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests (exit 5): nothing matched the selection" >&2
    exit 0
fi
exit "$status"
