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
    assert "-c /tmp/constraints/serve.txt -c /tmp/constraints/cuda12.txt" in text
    assert '"${whl}[tensorrt-build]"' in text and "torch" not in text.replace("no torch", "")
    assert 'ENTRYPOINT ["/opt/inspyrenet/build-engines.sh"]' in text
    assert "build-engine" in (REPO / "scripts" / "build-engines.sh").read_text()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    tree = dependency_tree(project["dependencies"] + project["optional-dependencies"]["tensorrt-build"])
    assert "tensorrt-cu12" in tree and not ({"torch", "torch-tensorrt", "transparent-background"} & tree)


def dockerfile_instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in (REPO / name).read_text().splitlines():
        if raw.lstrip().startswith("#") and not current:
            continue
        current += raw.rstrip("\\").strip() + " "
        if not raw.endswith("\\"):
            if current.strip():
                word, _, rest = current.strip().partition(" ")
                lines.append((word.upper(), rest))
            current = ""
    return lines


@pytest.mark.parametrize("name", ["Dockerfile.serve", "Dockerfile.build"])
def test_images_install_the_wheel_by_path_with_constraints_as_a_user_of_their_own(name):
    text = (REPO / name).read_text()
    assert not text.startswith("# syntax")  # BuildKit would fetch a frontend image: offline builds fail
    instructions = dockerfile_instructions(name)
    froms = [args for word, args in instructions if word == "FROM"]
    assert all(f.startswith(("${PYTHON_IMAGE}", "cpu-runtime", "gpu-runtime")) for f in froms), froms
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in text  # one Python base for every image
    installs = [args for word, args in instructions if word == "RUN" and "pip install" in args]
    assert installs
    for run in installs:
        for command in run.split("pip install")[1:]:
            assert "-c /tmp/constraints/serve.txt" in command, command  # every install pinned
        assert "--find-links" not in run and "inspyrenet-engines" not in run  # the wheel by its path
    users = [args for word, args in instructions if word == "USER"]
    assert users and all(u.strip() not in ("0", "root") for u in users)
    entrypoints = [args for word, args in instructions if word == "ENTRYPOINT"]
    assert entrypoints and all(e.strip().startswith("[") for e in entrypoints)  # exec form: signals reach it


def test_serving_image_runs_the_serving_only_command_on_a_bundle_verified_at_build():
    instructions = dockerfile_instructions("Dockerfile.serve")
    assert [a for w, a in instructions if w == "ENTRYPOINT"] == ['["inspyrenet-serve"]'] * 2
    verifies = [a for w, a in instructions if w == "RUN" and "verify" in a]
    assert verifies == ['["inspyrenet-serve", "verify", "/bundle", "--prune"]'] * 2
    assert sum("INSPYRENET_VERIFY=0" in a for w, a in instructions if w == "ENV") == 2
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["inspyrenet-serve"] == "serving.cli:main"
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert ignored[0:2] == ["# Build context of Dockerfile.serve and Dockerfile.build: only what they COPY.", "*"]
    assert "artifacts/*/model.ts" in ignored and "artifacts/*/model.fp16.onnx*" in ignored
    assert not any(line.startswith("!") and ("tests" in line or ".git" in line) for line in ignored)


def constraints(*names: str) -> dict[str, str]:
    pins = {}
    for name in names or ("cuda12.txt",):
        for line in (REPO / "constraints" / name).read_text().splitlines():
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
    assert "cuda-bindings==12.9.10" in extras["tensorrt"] and "cuda-bindings==12.9.10" in extras["tensorrt-build"]
    for dockerfile in ("Dockerfile.serve", "Dockerfile.build"):
        text = (REPO / dockerfile).read_text()
        assert "cuda12.txt" in text and "==11." not in text, dockerfile  # no second pin
    assert "-c constraints/cuda12.txt" in (REPO / "scripts" / "test.sh").read_text()


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


# The first releases of each action that run on Node 24 (GitHub retires Node 20 on its runners).
NODE24 = {"actions/checkout": 5, "actions/upload-artifact": 6}


def test_build_workflow_uses_actions_on_node24():
    import re

    text = (REPO / ".github" / "workflows" / "build-engines.yml").read_text()
    uses = re.findall(r"uses: ([\w-]+/[\w-]+)@([0-9a-f]{40}) # v(\d+)\.", text)
    assert uses and {name for name, _, _ in uses} <= set(NODE24)
    assert all(int(major) >= NODE24[name] for name, _, major in uses), uses


def test_build_workflow_checks_inputs_first_and_runs_the_image_as_its_own_user():
    import yaml

    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "build-engines.yml").read_text())
    jobs = workflow["jobs"]
    assert jobs["bundles"]["needs"] == "inputs" and "gpu-l4" not in jobs["inputs"]["runs-on"]
    check = jobs["inputs"]["steps"][0]["run"]
    assert "ARTIFACT_URI" in check and "SERVE_IMAGE" in check and "CHECKPOINT" in check
    engine_run = next(s["run"] for s in jobs["engines"]["steps"] if "--gpus all" in s.get("run", ""))
    assert "--user" not in engine_run  # a uid the image does not know: no HOME, no cache, pwd lookups fail
    assert "-v inspyrenet-build-cache:/cache" in engine_run  # a named volume: outlives the wiped checkout
    assert "$PWD" not in engine_run


def run_script(
    script: str, tmp_path, env: dict, args=(), fail_on: str = ""
) -> tuple[subprocess.CompletedProcess, list[str]]:
    """scripts/SCRIPT with `inspyrenet` replaced by a stub that records its arguments (and fails on FAIL_ON)."""
    stub_dir = tmp_path / "bin"
    stub_dir.mkdir()
    calls = tmp_path / "calls"
    stub = stub_dir / "inspyrenet"
    stub.write_text(
        f'#!/bin/sh\necho "$*" >> {calls}\n'
        f'case "$*" in *"{fail_on or "@never@"}"*) exit 1;; esac\n'
        f'case "$*" in published*) exit "${{PUBLISHED_STATUS:-3}}";; esac\nexit 0\n'
    )
    stub.chmod(0o755)
    full_env = {"PATH": f"{stub_dir}:/usr/bin:/bin", "OUT_DIR": str(tmp_path / "out"), **env}
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / script), *args], capture_output=True, text=True, env=full_env
    )
    return result, (calls.read_text().splitlines() if calls.exists() else [])


def test_cpu_build_script_builds_both_modes_without_tensorrt_then_publishes_per_mode(tmp_path):
    result, calls = run_script("build-bundles.sh", tmp_path, {"PUBLISH_URI": "gs://acme-bundles/cpu"})
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    assert calls == [
        f"build --mode base --checkpoint official --out {out}/base --no-tensorrt",
        f"build --mode fast --checkpoint official --out {out}/fast --no-tensorrt",
        f"publish {out}/base gs://acme-bundles/cpu/base",
        f"publish {out}/fast gs://acme-bundles/cpu/fast",
    ]


def test_cpu_build_script_stops_at_a_failed_build_and_publishes_nothing(tmp_path):
    result, calls = run_script(
        "build-bundles.sh", tmp_path, {"PUBLISH_URI": "gs://acme-bundles/cpu"}, fail_on="--mode base "
    )
    assert result.returncode != 0
    assert len(calls) == 1 and calls[0].startswith("build --mode base")


def test_engine_script_pulls_adds_required_engines_then_publishes(tmp_path):
    env = {
        "SOURCE_URI": "gs://acme-bundles/cpu",
        "PUBLISH_URI": "gs://acme-bundles/bundles",
        "ENGINE_FLAGS": "--hardware-compatible",
    }
    result, calls = run_script("build-engines.sh", tmp_path, env)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    assert calls == [
        f"pull gs://acme-bundles/cpu/base/latest {out}/base",
        f"published {out}/base gs://acme-bundles/bundles/base",
        f"build-engine {out}/base --require-tensorrt --hardware-compatible",
        f"pull gs://acme-bundles/cpu/fast/latest {out}/fast",
        f"published {out}/fast gs://acme-bundles/bundles/fast",
        f"build-engine {out}/fast --require-tensorrt --hardware-compatible",
        f"publish {out}/base gs://acme-bundles/bundles/base",
        f"publish {out}/fast gs://acme-bundles/bundles/fast",
    ]


def test_engine_script_retried_skips_the_modes_already_published(tmp_path):
    """A retried Cloud Run task: the first attempt published everything; nothing is rebuilt or republished."""
    env = {"SOURCE_URI": "gs://acme-bundles/cpu", "PUBLISH_URI": "gs://acme-bundles/bundles", "PUBLISHED_STATUS": "0"}
    result, calls = run_script("build-engines.sh", tmp_path, env)
    assert result.returncode == 0, result.stderr
    assert not any(c.startswith(("build-engine", "publish ")) for c in calls), calls
    assert result.stdout.count("already published (a retried task)") == 2


def test_engine_script_stops_when_the_published_check_fails(tmp_path):
    env = {"SOURCE_URI": "gs://acme-bundles/cpu", "PUBLISH_URI": "gs://acme-bundles/bundles", "PUBLISHED_STATUS": "1"}
    result, calls = run_script("build-engines.sh", tmp_path, env, args=("fast",))
    assert result.returncode == 1
    assert not any(c.startswith(("build-engine", "publish ")) for c in calls), calls


@pytest.mark.parametrize(
    ("env", "args", "words"),
    [
        ({"SOURCE_URI": "s3://b/cpu"}, (), "SOURCE_URI must be gs://BUCKET/PREFIX"),
        (
            {"SOURCE_URI": "gs://acme-bundles/cpu", "PUBLISH_URI": "gs://B A D"},
            (),
            "PUBLISH_URI must be gs://BUCKET/PREFIX",
        ),
        ({"SOURCE_URI": "gs://acme-bundles/cpu"}, ("large",), "unknown mode 'large'"),
        ({}, ("fast",), "no bundle at"),
    ],
)
def test_engine_script_refuses_bad_inputs_before_any_work(tmp_path, env, args, words):
    result, calls = run_script("build-engines.sh", tmp_path, env, args=args)
    assert result.returncode == 2 and words in result.stderr and calls == []


def test_engine_script_stops_when_an_engine_cannot_be_built(tmp_path):
    (tmp_path / "out" / "fast").mkdir(parents=True)
    (tmp_path / "out" / "fast" / "manifest.json").write_text("{}")
    result, calls = run_script(
        "build-engines.sh",
        tmp_path,
        {"PUBLISH_URI": "gs://acme-bundles/bundles"},
        args=("fast",),
        fail_on="build-engine",
    )
    assert result.returncode != 0
    assert calls == [
        f"published {tmp_path / 'out'}/fast gs://acme-bundles/bundles/fast",
        f"build-engine {tmp_path / 'out'}/fast --require-tensorrt",
    ]
