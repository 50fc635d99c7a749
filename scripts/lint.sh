#!/usr/bin/env bash
# The lint gate (.ci/run runs it): ruff lint and format check on the whole tree, mypy on serving/.
# Configuration: pyproject.toml ([tool.ruff], [tool.mypy]). Needs the dev extra (scripts/test.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
"$VENV/bin/mypy"
echo "lint: ruff check, ruff format --check and mypy (serving/) are clean"
