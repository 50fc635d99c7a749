#!/usr/bin/env bash
# remove.bg's npm client, pinned by tests/clients/removebg-node/package-lock.json, for
# tests/integration/test_removebg_clients.py (the PyPI client comes with the dev extra). Needs npm;
# without it this says so and exits 0, and those tests skip with the same reason.
set -euo pipefail
cd "$(dirname "$0")/../tests/clients/removebg-node"
if ! command -v npm >/dev/null; then
    echo "test clients: npm is missing: the npm remove.bg client's tests skip" >&2
    exit 0
fi
npm ci --no-audit --no-fund --loglevel=error
