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


# What pip prints when it cannot reach the index: only these skip. Anything else (a full disk, a
# resolution that fails) is a failure: "Connection broken: OSError(28, ...)" is a full disk, not the network.
NETWORK_ERRORS = (
    "NewConnectionError",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "ConnectTimeoutError",
    "Read timed out",
    "ProxyError",
)


def index_unreachable(stderr: str) -> bool:
    return "No space left on device" not in stderr and any(error in stderr for error in NETWORK_ERRORS)


def skip_if_unreachable(result: subprocess.CompletedProcess) -> None:
    if result.returncode != 0 and index_unreachable(result.stderr):
        pytest.skip(f"the package index cannot be reached: {result.stderr.strip().splitlines()[-1:]}")


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
    assert "onnxruntime" in pins
    assert "nvidia-cudnn-cu12" in pins
    assert "tensorrt-lean-cu12" in pins
    requirements = [f"{name}=={version}" for name, version in pins.items() if name not in STUBS]
    result = pip_dry_run(tmp_path, requirements, timeout=600)
    skip_if_unreachable(result)
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
        skip_if_unreachable(result)
        assert result.returncode == 0, f"onnxruntime-gpu=={version}: {result.stderr[-500:]}"
        metadata_ = json.loads(Path(work, "report.json").read_text())["install"][0]["metadata"]
    cuda = [r for r in metadata_.get("requires_dist", []) if 'extra == "cuda"' in r]
    assert cuda, cuda
    assert all("-cu12" in r for r in cuda), cuda


SERVE, CUDA12 = ["-c", "constraints/serve.txt"], ["-c", "constraints/cuda12.txt"]
TORCH = ["torch==2.14.1", "torchvision==0.29.1"]
# Every install the README, the scripts and the Dockerfiles document: (constraints and packages, extras).
# scripts/install.sh's ([build,dev] with both constraint files) is not repeated here: every test run,
# this one included, runs in what it installed; the serving image's cpu target installs the base alone,
# a subset of the gpu target's resolution below.
DOCUMENTED_INSTALLS = {
    "quickstart (README)": ([*SERVE, *TORCH], "build"),
    # Dockerfile.build with TENSORRT_BUILDER=none installs the same (its builder is on NVIDIA's index only).
    "serving image gpu target, build image": ([*SERVE, *CUDA12, "onnxruntime-gpu[cuda,cudnn]"], "tensorrt"),
}


@pytest.fixture(scope="module")
def project_wheel(tmp_path_factory) -> Path:
    from tests.harness import REPO

    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if built.returncode != 0:
        pytest.skip(f"cannot build the project's wheel here: {built.stderr.strip().splitlines()[-1:]}")
    return next(out.glob("*.whl"))


def resolve(wheel: Path, args: list[str], extras: str) -> subprocess.CompletedProcess:
    """pip's full resolution of one install, nothing installed (this machine's Python is the images' 3.11)."""
    from tests.harness import REPO

    target = f"{wheel}[{extras}]" if extras else str(wheel)
    return subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed"]
        + ["--disable-pip-version-check", *args, target],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )


@pytest.mark.slow  # resolves every documented install against the package index
def test_every_documented_install_resolves(project_wheel):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = dict(
            zip(DOCUMENTED_INSTALLS, pool.map(lambda item: resolve(project_wheel, *item), DOCUMENTED_INSTALLS.values()))
        )
    failed = {name: r.stderr.strip().splitlines()[-3:] for name, r in results.items() if r.returncode != 0}
    unreachable = {name: failed[name] for name, r in results.items() if name in failed and index_unreachable(r.stderr)}
    if unreachable:
        pytest.skip(f"the package index cannot be reached: {unreachable}")
    assert not failed, failed


@pytest.mark.slow  # resolves an install against the package index
def test_the_build_extra_and_the_tensorrt_builder_do_not_install_together(project_wheel):
    """Why no document offers .[build,tensorrt-build]: torch 2.14 is a CUDA 13 build and needs cuda-bindings 13;
    the CUDA 12 TensorRT route pins cuda-bindings 12.9.10 (the L4's driver 535 runs CUDA 12)."""
    result = resolve(project_wheel, [*SERVE, *CUDA12, *TORCH], "build,tensorrt-build")
    skip_if_unreachable(result)
    assert result.returncode != 0
    assert "ResolutionImpossible" in result.stderr
    assert "cuda-bindings" in result.stderr


def test_only_an_unreachable_index_skips(tmp_path):
    """pip against a closed port skips these tests; a full disk (pip's own words, as CI once saw them) fails them."""
    closed = subprocess.run(
        [sys.executable, "-m", "pip", "--isolated", "download", "--no-deps", "--retries", "1", "--timeout", "5"]
        + ["-d", str(tmp_path), "--index-url", "http://127.0.0.1:9/simple", "--disable-pip-version-check"]
        + ["inspyrenet-nothing==1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert closed.returncode != 0, closed.stderr
    assert index_unreachable(closed.stderr), closed.stderr
    full_disk = (
        'ERROR: Could not install packages due to an OSError: ("Connection broken: '
        "OSError(28, 'No space left on device')\", OSError(28, 'No space left on device'))"
    )
    assert not index_unreachable(full_disk)
    assert not index_unreachable("ERROR: ResolutionImpossible: conflicting dependencies")
