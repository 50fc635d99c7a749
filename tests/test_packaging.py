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


def test_dockerfile_build_is_the_torch_free_engine_step():
    result = subprocess.run([hadolint(), str(REPO / "Dockerfile.build")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    text = (REPO / "Dockerfile.build").read_text()
    assert "FROM nvidia/cuda:12." in text and "-c constraints/cuda12.txt" in text
    assert '".[tensorrt-build]"' in text and "torch" not in text.replace("no torch", "")
    assert 'ENTRYPOINT ["/src/scripts/build-engines.sh"]' in text
    assert "build-engine" in (REPO / "scripts" / "build-engines.sh").read_text()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    tree = dependency_tree(project["dependencies"] + project["optional-dependencies"]["tensorrt-build"])
    assert "tensorrt-cu12" in tree and not ({"torch", "torch-tensorrt", "transparent-background"} & tree)


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


# The Python each image installs the pins with: the serving image's GPU target (Ubuntu 22.04,
# python3.11) and the build image (Ubuntu 24.04, python3.12); both manylinux x86_64.
IMAGE_PYTHONS = {"Dockerfile.serve": "3.11", "Dockerfile.build": "3.12"}
PLATFORM = "manylinux_2_28_x86_64"


def index_versions(name: str, python: str) -> list[str]:
    """Versions of ``name`` the package index offers for ``python`` on PLATFORM; skip when unreachable."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "index", "versions", name, "--python-version", python, "--platform", PLATFORM,
         "--disable-pip-version-check"],
        capture_output=True, text=True, timeout=120,
    )
    if result.returncode != 0 and ("No matching distribution" not in result.stderr):
        pytest.skip(f"the package index cannot be reached: {result.stderr.strip().splitlines()[-1:]}")
    for line in result.stdout.splitlines():
        if line.startswith("Available versions:"):
            return [v.strip() for v in line.split(":", 1)[1].split(",")]
    return []


@pytest.mark.parametrize("dockerfile, python", sorted(IMAGE_PYTHONS.items()))
def test_every_pin_exists_for_the_image_that_installs_it(dockerfile, python):
    text = (REPO / dockerfile).read_text()
    assert f"python{python}" in text, f"{dockerfile} no longer installs Python {python}: update IMAGE_PYTHONS"
    missing = [f"{name}=={version}" for name, version in constraints().items()
               if version not in index_versions(name, python)]
    assert not missing, f"pinned in constraints/cuda12.txt but not on the index for Python {python}: {missing}"


def test_onnxruntime_gpu_pin_is_the_cuda12_build():
    """Its [cuda] extra must pull the -cu12 NVIDIA runtime wheels (1.27 and later pull CUDA 13)."""
    import json
    import tempfile

    version = constraints()["onnxruntime-gpu"]
    with tempfile.TemporaryDirectory() as work:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed", "--no-deps",
             "--target", work, "--platform", PLATFORM, "--python-version", "3.11", "--only-binary=:all:",
             "--disable-pip-version-check", "--report", f"{work}/report.json", f"onnxruntime-gpu=={version}"],
            capture_output=True, text=True, timeout=300,
        )
        if result.returncode != 0:
            if "No matching distribution" in result.stderr:
                pytest.fail(f"onnxruntime-gpu=={version} is not on the index: {result.stderr[-500:]}")
            pytest.skip(f"the package index cannot be reached: {result.stderr.strip().splitlines()[-1:]}")
        metadata_ = json.loads(Path(work, "report.json").read_text())["install"][0]["metadata"]
    cuda = [r for r in metadata_.get("requires_dist", []) if "extra == \"cuda\"" in r]
    assert cuda and all("-cu12" in r for r in cuda), cuda


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


def test_build_workflow_runs_the_cpu_half_then_only_the_engines_on_the_l4():
    import yaml

    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "build-engines.yml").read_text())
    assert workflow["permissions"] == {"contents": "read"}
    jobs = workflow["jobs"]
    assert "gpu-l4" not in jobs["bundles"]["runs-on"] and "gpu-l4" in jobs["engines"]["runs-on"]
    assert jobs["engines"]["needs"] == "bundles" and jobs["serve"]["needs"] == "engines"
    assert "gpu-l4" not in jobs["serve"]["runs-on"]

    def runs(job: str) -> list[str]:
        return [(s.get("run", "") + s.get("uses", "")) for s in jobs[job]["steps"]]

    assert any("scripts/build-bundles.sh base fast" in t for t in runs("bundles"))
    engine_steps = runs("engines")
    build_image = next(i for i, t in enumerate(engine_steps) if "docker build -f Dockerfile.build" in t)
    engines = next(i for i, t in enumerate(engine_steps) if "--gpus all" in t)
    assert build_image < engines and "SOURCE_URI" in engine_steps[engines] and "base fast" in engine_steps[engines]
    assert not any("torch" in t or "inspyrenet build " in t for t in engine_steps)  # the L4 compiles, nothing else
    for job in ("bundles", "engines"):
        upload = next(s for s in jobs[job]["steps"] if "upload-artifact" in s.get("uses", ""))
        assert upload["if"] == "always()" and "parity" in upload["with"]["path"]
    serve = runs("serve")[-1]
    assert "inspyrenet pull" in serve and "docker build -f Dockerfile.serve" in serve and "docker push" in serve
    steps = [s for job in jobs.values() for s in job["steps"]]
    assert all("@" in s["uses"] and len(s["uses"].split("@")[1]) == 40 for s in steps if "uses" in s)


def run_script(script: str, tmp_path, env: dict, args=(), fail_on: str = "") -> tuple[subprocess.CompletedProcess, list[str]]:
    """scripts/SCRIPT with `inspyrenet` replaced by a stub that records its arguments (and fails on FAIL_ON)."""
    stub_dir = tmp_path / "bin"
    stub_dir.mkdir()
    calls = tmp_path / "calls"
    stub = stub_dir / "inspyrenet"
    stub.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n'
                    f'case "$*" in *"{fail_on or "@never@"}"*) exit 1;; esac\nexit 0\n')
    stub.chmod(0o755)
    full_env = {"PATH": f"{stub_dir}:/usr/bin:/bin", "OUT_DIR": str(tmp_path / "out"), **env}
    result = subprocess.run(["bash", str(REPO / "scripts" / script), *args], capture_output=True, text=True,
                            env=full_env)
    return result, (calls.read_text().splitlines() if calls.exists() else [])


def test_cpu_build_script_builds_both_modes_without_tensorrt_then_publishes_per_mode(tmp_path):
    result, calls = run_script("build-bundles.sh", tmp_path, {"PUBLISH_URI": "gs://b/cpu"})
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    assert calls == [
        f"build --mode base --checkpoint official --out {out}/base --no-tensorrt",
        f"build --mode fast --checkpoint official --out {out}/fast --no-tensorrt",
        f"publish {out}/base gs://b/cpu/base",
        f"publish {out}/fast gs://b/cpu/fast",
    ]


def test_cpu_build_script_stops_at_a_failed_build_and_publishes_nothing(tmp_path):
    result, calls = run_script("build-bundles.sh", tmp_path, {"PUBLISH_URI": "gs://b/cpu"}, fail_on="--mode base ")
    assert result.returncode != 0
    assert len(calls) == 1 and calls[0].startswith("build --mode base")


def test_engine_script_pulls_adds_required_engines_then_publishes(tmp_path):
    env = {"SOURCE_URI": "gs://b/cpu", "PUBLISH_URI": "gs://b/bundles", "ENGINE_FLAGS": "--hardware-compatible"}
    result, calls = run_script("build-engines.sh", tmp_path, env)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    assert calls == [
        f"pull gs://b/cpu/base/latest {out}/base",
        f"build-engine {out}/base --require-tensorrt --hardware-compatible",
        f"pull gs://b/cpu/fast/latest {out}/fast",
        f"build-engine {out}/fast --require-tensorrt --hardware-compatible",
        f"publish {out}/base gs://b/bundles/base",
        f"publish {out}/fast gs://b/bundles/fast",
    ]


def test_engine_script_stops_when_an_engine_cannot_be_built(tmp_path):
    result, calls = run_script("build-engines.sh", tmp_path, {"PUBLISH_URI": "gs://b/bundles"}, args=("fast",),
                               fail_on="build-engine")
    assert result.returncode != 0
    assert calls == [f"build-engine {tmp_path / 'out'}/fast --require-tensorrt"]
