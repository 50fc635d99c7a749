"""The GPU engine step in a venv of the build image's install (the wheel with its [tensorrt] extra, both
constraint files): validate, build-engine and gpu-check run there, without torch.

Dockerfile.build adds two GPU-only packages this venv leaves out: TensorRT's builder (NVIDIA's index, out
of reach here) and onnxruntime-gpu in place of onnxruntime (the same module; its CUDA 12 wheels are
3.7 GB). scripts/image-check.sh runs gpu-check in the built image itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import REPO, linked_copy


def run(command: list, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def engine_step_venv(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("engine-step")
    built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", work / "wheel", REPO])
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next((work / "wheel").glob("*.whl"))
    venv = work / "venv"
    assert run([sys.executable, "-m", "venv", venv]).returncode == 0
    constraints = ["-c", REPO / "constraints" / "serve.txt", "-c", REPO / "constraints" / "cuda12.txt"]
    pip = [venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    installed = run([*pip, *constraints, f"{wheel}[tensorrt]"])
    assert installed.returncode == 0, installed.stderr[-3000:]
    return venv


def test_the_engine_step_runs_in_the_build_images_install_without_torch(engine_step_venv, fast_bundle, tmp_path):
    inspyrenet = engine_step_venv / "bin" / "inspyrenet"
    assert run([engine_step_venv / "bin" / "python", "-c", "import torch"]).returncode != 0  # no torch there
    copy = linked_copy(fast_bundle, tmp_path / "bundle")

    validated = run([inspyrenet, "validate", copy])
    assert validated.returncode == 0, validated.stdout[-2000:] + validated.stderr[-3000:]
    assert "parity references: stored in the bundle" in validated.stderr
    report = json.loads((copy / "parity" / "report.json").read_text())
    assert report["references"] == "stored in the bundle"
    assert report["passed"] is True
    islands = next(b for b in report["backends"] if b["backend"] == "pytorch-fp16-islands")
    assert islands["status"] == "skipped"
    assert "needs torch" in islands["reason"]

    skipped = run([inspyrenet, "build-engine", copy])
    assert skipped.returncode == 0, skipped.stderr
    assert "TensorRT artifact skipped: " in skipped.stdout + skipped.stderr, skipped.stderr
    required = run([inspyrenet, "build-engine", copy, "--require-tensorrt"])
    lines = (required.stdout + required.stderr).strip().splitlines()
    assert required.returncode == 1, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: "), lines

    checked = run([inspyrenet, "gpu-check", copy, "--out", tmp_path / "check"])
    summary = json.loads(checked.stdout)
    assert checked.returncode == 3, checked.stderr[-2000:]
    assert summary["status"] == "no GPU", checked.stderr[-2000:]
    assert summary["environment"]["tensorrt-lean-cu12"]
    assert summary["environment"]["cuda-bindings"].startswith("12.")
    for stage in ("bundle", "engine_build", "tensorrt", "onnxruntime_cuda"):
        assert summary[stage]["skipped"].startswith("no GPU: ")
    assert json.loads((tmp_path / "check" / "gpu-check.json").read_text()) == summary
