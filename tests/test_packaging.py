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


def test_dockerfile_build_is_lint_clean_and_builds_with_tensorrt_required():
    result = subprocess.run([hadolint(), str(REPO / "Dockerfile.build")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    text = (REPO / "Dockerfile.build").read_text()
    assert "FROM nvidia/cuda:12." in text and "-c constraints/cuda12.txt" in text
    script = (REPO / "scripts" / "build-bundles.sh").read_text()
    assert "--require-tensorrt" in script and 'ENTRYPOINT ["/src/scripts/build-bundles.sh"]' in text


def constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints" / "cuda12.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            pins[canonicalize_name(requirement.name)] = spec.version
    return pins


def test_the_cuda12_stack_is_pinned_once_and_agrees():
    pins = constraints()
    tensorrt = {name: version for name, version in pins.items() if name.startswith("tensorrt")}
    assert len(tensorrt) >= 4 and len(set(tensorrt.values())) == 1, tensorrt  # one TensorRT version
    assert all(name.endswith(("cu12", "cu12-libs", "cu12-bindings")) for name in tensorrt)  # CUDA 12 builds
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    for extra in ("tensorrt", "tensorrt-build"):
        for requirement in map(Requirement, extras[extra]):
            name = canonicalize_name(requirement.name)
            assert name in pins or requirement.specifier, f"{name} ({extra}) is pinned nowhere"
            assert not (name in pins and requirement.specifier), f"{name} is pinned twice"
    assert "cuda-bindings<13,>=12.6" in extras["tensorrt"] or any(
        r.startswith("cuda-bindings") and "<13" in r for r in extras["tensorrt"])
    for dockerfile in ("Dockerfile.serve", "Dockerfile.build"):
        text = (REPO / dockerfile).read_text()
        assert "cuda12.txt" in text and "==11." not in text, dockerfile  # no second pin
    assert "-c constraints/cuda12.txt" in (REPO / "scripts" / "test.sh").read_text()


def test_serving_tensorrt_extra_has_no_torch():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = [r for r in project["optional-dependencies"]["tensorrt"] if not r.startswith("cuda-bindings")]
    tree = dependency_tree(runtime)
    assert "tensorrt-lean-cu12" in tree and not ({"torch", "torch-tensorrt"} & tree)


def zizmor() -> str:
    return installed_tool("zizmor")


def test_build_workflow_passes_zizmor():
    workflow = REPO / ".github" / "workflows" / "build-engines.yml"
    result = subprocess.run([zizmor(), "--offline", "--no-progress", str(workflow)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_build_workflow_runs_the_job_in_order_on_an_l4_runner():
    import yaml

    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "build-engines.yml").read_text())
    job = workflow["jobs"]["build"]
    assert "self-hosted" in job["runs-on"] and "gpu-l4" in job["runs-on"]
    assert workflow["permissions"] == {"contents": "read"}
    steps = job["steps"]
    text = [(s.get("run", "") + s.get("uses", "")) for s in steps]

    def index(words: str) -> int:
        return next(i for i, t in enumerate(text) if words in t)

    build_image = index("docker build -f Dockerfile.build")
    bundles = index("--gpus all")
    upload = index("actions/upload-artifact")
    publish = index(" publish ")
    serve = index("docker build -f Dockerfile.serve")
    assert build_image < bundles < upload < publish < serve
    assert "base fast" in text[bundles]
    assert steps[upload]["if"] == "always()" and "parity" in steps[upload]["with"]["path"]
    assert "docker push" in text[serve] and "cp -r out/base artifacts/base" in text[serve]
    assert all("@" in s["uses"] and len(s["uses"].split("@")[1]) == 40 for s in steps if "uses" in s)


def run_build_script(tmp_path, env: dict, fail_mode: str = "") -> tuple[subprocess.CompletedProcess, list[str]]:
    """scripts/build-bundles.sh with `inspyrenet` replaced by a stub that records its arguments."""
    stub_dir = tmp_path / "bin"
    stub_dir.mkdir()
    calls = tmp_path / "calls"
    stub = stub_dir / "inspyrenet"
    stub.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n'
                    f'case "$*" in *"--mode {fail_mode} "*) [ -n "{fail_mode}" ] && exit 1;; esac\nexit 0\n')
    stub.chmod(0o755)
    full_env = {"PATH": f"{stub_dir}:/usr/bin:/bin", "OUT_DIR": str(tmp_path / "out"), **env}
    result = subprocess.run(["bash", str(REPO / "scripts" / "build-bundles.sh")], capture_output=True, text=True,
                            env=full_env)
    return result, (calls.read_text().splitlines() if calls.exists() else [])


def test_build_script_builds_both_modes_with_tensorrt_required_then_publishes(tmp_path):
    result, calls = run_build_script(tmp_path, {"PUBLISH_URI": "gs://b/bundles", "BUILD_FLAGS": "--hardware-compatible"})
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    assert calls == [
        f"build --mode base --checkpoint official --out {out}/base --tensorrt --require-tensorrt --hardware-compatible",
        f"build --mode fast --checkpoint official --out {out}/fast --tensorrt --require-tensorrt --hardware-compatible",
        f"publish {out}/base gs://b/bundles",
        f"publish {out}/fast gs://b/bundles",
    ]


def test_build_script_stops_at_a_failed_build_and_publishes_nothing(tmp_path):
    result, calls = run_build_script(tmp_path, {"PUBLISH_URI": "gs://b/bundles"}, fail_mode="base")
    assert result.returncode != 0
    assert len(calls) == 1 and calls[0].startswith("build --mode base")
