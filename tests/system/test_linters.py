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


# One planted fault per hook; the words are built so that the hooks pass on this file itself.
PLANTED = {
    "unused.py": ("ruff check", "import os\n"),
    "spacing.py": ("ruff format", "x=1\n"),
    "notes.md": ("spelling (codespell)", "The server will rec" + "ieve the image.\n"),
    "broken.yaml": ("YAML parses", "steps: [build, serve\n"),
    "weights.bin": ("no large files added", None),
    "deploy.pem": (
        "no private keys",
        "-----BEGIN RSA " + "PRIVATE KEY-----\nMIIB\n-----END RSA " + "PRIVATE KEY-----\n",
    ),
}


def hook_results(output: str) -> dict[str, str]:
    """pre-commit's summary lines, 'name.....Passed', as {name: Passed|Failed}."""
    results = {}
    for line in output.splitlines():
        name, dots, verdict = line.rpartition("..")
        if dots and verdict.strip(".") in ("Passed", "Failed", "(no files to check)Skipped"):
            results[name.rstrip(".")] = verdict.strip(".")
    return results


def run_hooks(repo: Path) -> subprocess.CompletedProcess:
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    return subprocess.run(
        [installed_tool("pre-commit"), "run", "--all-files", "--color", "never"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_commit_hooks_pass_a_clean_tree_and_each_catches_its_fault(tmp_path):
    for name in (".pre-commit-config.yaml", "pyproject.toml"):
        shutil.copy(REPO / name, tmp_path / name)
    (tmp_path / "clean.py").write_text('"""A module."""\n\nVALUE = 1\n')
    clean = run_hooks(tmp_path)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert set(hook_results(clean.stdout).values()) <= {"Passed", "(no files to check)Skipped"}, clean.stdout

    faulty = tmp_path / "faulty"
    faulty.mkdir()
    for name in (".pre-commit-config.yaml", "pyproject.toml"):
        shutil.copy(REPO / name, faulty / name)
    for name, (_, text) in PLANTED.items():
        if text is None:
            (faulty / name).write_bytes(bytes(range(256)) * 2400)  # 600 kB: over the 500 kB limit
        else:
            (faulty / name).write_text(text)
    result = run_hooks(faulty)
    assert result.returncode == 1, result.stdout + result.stderr
    verdicts = hook_results(result.stdout)
    for name, (hook, _) in PLANTED.items():
        assert verdicts.get(hook) == "Failed", (hook, result.stdout)
        if hook != "ruff format":  # the others name the file they refused; ruff format rewrites it
            assert name in result.stdout, (name, result.stdout)
    assert (faulty / "spacing.py").read_text() == "x = 1\n"
