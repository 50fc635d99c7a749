"""The Dockerfiles under hadolint and the workflow under zizmor: the linters their readers trust."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import REPO


def installed_tool(name: str) -> str:
    """A command-line tool from the [dev] extra (in the venv's bin, or on PATH)."""
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(found).exists():
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]')")
    return found


def hadolint() -> str:
    return installed_tool("hadolint")


def test_dockerfile_serve_is_lint_clean():
    result = subprocess.run([hadolint(), str(REPO / "Dockerfile.serve")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_build_is_lint_clean():
    result = subprocess.run([hadolint(), str(REPO / "Dockerfile.build")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def zizmor() -> str:
    return installed_tool("zizmor")


@pytest.mark.parametrize("workflow", ["build-engines.yml", "pull-request.yml"])
def test_workflows_pass_zizmor(workflow):
    workflow = REPO / ".github" / "workflows" / workflow
    result = subprocess.run([zizmor(), "--offline", "--no-progress", str(workflow)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
