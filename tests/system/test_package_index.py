"""Every pin exists on the package index, for the images' Python and platform."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from tests.project_files import constraints

# Every image installs on python:3.11-slim-bookworm (manylinux x86_64).
IMAGE_PYTHON = "3.11"


# Debian bookworm's glibc is 2.36: every manylinux tag up to it (pip does not expand them itself).
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(36, 16, -1)] + ["manylinux2014_x86_64"]


PLATFORM_ARGS = [arg for platform in PLATFORMS for arg in ("--platform", platform)]


# TensorRT's front packages are source-only stubs on PyPI, and the builder's wheels are on NVIDIA's
# index: these are checked as listed on the index, not downloaded.
STUBS = ("tensorrt-cu12", "tensorrt-cu12-libs", "tensorrt-cu12-bindings", "tensorrt-lean-cu12")


def pip_dry_run(work: Path, requirements: list[str], timeout: float) -> subprocess.CompletedProcess:
    """pip's resolution-free look-up of ``requirements`` as the images' pip sees them; report in WORK/report.json."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--quiet",
            "--ignore-installed",
            "--no-deps",
            "--target",
            str(work / "t"),
            *PLATFORM_ARGS,
            "--python-version",
            IMAGE_PYTHON,
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--report",
            str(work / "report.json"),
            *requirements,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow  # asks the package index about every pin
def test_every_pin_exists_on_the_index_for_the_images_python(tmp_path):
    """One resolution-free lookup of every pin of both constraint files, as the images' pip would see them."""
    import json

    pins = constraints("serve.txt", "cuda12.txt")
    assert "onnxruntime" in pins and "nvidia-cudnn-cu12" in pins and "tensorrt-lean-cu12" in pins
    requirements = [f"{name}=={version}" for name, version in pins.items() if name not in STUBS]
    result = pip_dry_run(tmp_path, requirements, timeout=600)
    if result.returncode != 0 and "No matching distribution" not in result.stderr:
        pytest.skip(f"the package index cannot be reached: {result.stderr.strip().splitlines()[-1:]}")
    assert result.returncode == 0, result.stderr[-2000:]
    found = {
        canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"]
        for i in json.loads((tmp_path / "report.json").read_text())["install"]
    }
    assert all(found.get(name) == version for name, version in pins.items() if name in found)
    for name in STUBS:
        listing = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "index",
                "versions",
                name,
                "--python-version",
                IMAGE_PYTHON,
                *PLATFORM_ARGS,
                "--disable-pip-version-check",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert pins[name] in listing.stdout, f"{name}=={pins[name]} is not on the index: {listing.stdout[-300:]}"


@pytest.mark.slow  # asks the package index about every pin
def test_onnxruntime_gpu_pin_is_the_cuda12_build():
    """Its [cuda] extra must pull the -cu12 NVIDIA runtime wheels (1.27 and later pull CUDA 13)."""
    import json
    import tempfile

    version = constraints()["onnxruntime-gpu"]
    with tempfile.TemporaryDirectory() as work:
        result = pip_dry_run(Path(work), [f"onnxruntime-gpu=={version}"], timeout=300)
        if result.returncode != 0:
            if "No matching distribution" in result.stderr:
                pytest.fail(f"onnxruntime-gpu=={version} is not on the index: {result.stderr[-500:]}")
            pytest.skip(f"the package index cannot be reached: {result.stderr.strip().splitlines()[-1:]}")
        metadata_ = json.loads(Path(work, "report.json").read_text())["install"][0]["metadata"]
    cuda = [r for r in metadata_.get("requires_dist", []) if 'extra == "cuda"' in r]
    assert cuda and all("-cu12" in r for r in cuda), cuda
