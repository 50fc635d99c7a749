#!/usr/bin/env bash
# The lint gate (.ci/run runs it): the pre-commit hooks on the whole tree (ruff check, ruff format,
# codespell, YAML, large files, private keys), then mypy on serving/ and pipeline/.
# Configuration: .pre-commit-config.yaml, pyproject.toml ([tool.ruff], [tool.mypy]).
# Needs the dev extra (scripts/test.sh installs it); pre-commit installs its hooks from the package index once.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
"$VENV/bin/pre-commit" run --all-files --show-diff-on-failure
"$VENV/bin/mypy"
echo "lint: the pre-commit hooks and mypy (serving/, pipeline/) are clean"
