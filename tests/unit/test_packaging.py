"""What the images and the workflow install and run, read from their files.

No torch in the serving tree, one pin per package, the images' instructions, the workflow's jobs.
"""

from __future__ import annotations

import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.harness import REPO
from tests.project_files import constraints, dependency_tree, dockerfile_instructions


def test_serving_install_has_no_torch():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    tree = dependency_tree(project["dependencies"])
    assert {"litserve", "onnxruntime", "numpy", "pillow"} <= tree
    heavy = {"torch", "torchvision", "transparent-background", "triton"} & tree
    assert not heavy, f"the serving install pulls in {heavy}"
    build_tree = dependency_tree(project["optional-dependencies"]["build"])
    assert "torch" in build_tree  # the walk does follow dependencies


def test_dockerfile_build_is_the_torch_free_engine_step():
    text = (REPO / "Dockerfile.build").read_text()
    assert "-c /tmp/constraints/serve.txt -c /tmp/constraints/cuda12.txt" in text
    assert '"${whl}[tensorrt-build]"' in text
    assert "torch" not in text.replace("no torch", "")
    assert 'ENTRYPOINT ["/opt/inspyrenet/build-engines.sh"]' in text
    assert "build-engine" in (REPO / "scripts" / "build-engines.sh").read_text()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    tree = dependency_tree(project["dependencies"] + project["optional-dependencies"]["tensorrt-build"])
    assert "tensorrt-cu12" in tree
    assert not ({"torch", "torch-tensorrt", "transparent-background"} & tree)


@pytest.mark.parametrize("name", ["Dockerfile.serve", "Dockerfile.build"])
def test_images_install_the_wheel_by_path_with_constraints_as_a_user_of_their_own(name):
    text = (REPO / name).read_text()
    assert not text.startswith("# syntax")  # BuildKit would fetch a frontend image: offline builds fail
    instructions = dockerfile_instructions(name)
    from_args = [args for word, args in instructions if word == "FROM"]
    assert all(f.startswith(("${PYTHON_IMAGE}", "cpu-runtime", "gpu-runtime")) for f in from_args), from_args
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in text  # one Python base for every image
    installs = [args for word, args in instructions if word == "RUN" and "pip install" in args]
    assert installs
    for run in installs:
        for command in run.split("pip install")[1:]:
            assert "-c /tmp/constraints/serve.txt" in command, command  # every install pinned
        assert "--find-links" not in run
        assert "inspyrenet-engines" not in run  # the wheel by its path
    users = [args for word, args in instructions if word == "USER"]
    assert users
    assert all(u.strip() not in ("0", "root") for u in users)
    entrypoints = [args for word, args in instructions if word == "ENTRYPOINT"]
    assert entrypoints
    assert all(e.strip().startswith("[") for e in entrypoints)  # exec form: signals reach it


def test_serving_image_runs_the_serving_only_command_on_a_bundle_verified_at_build():
    instructions = dockerfile_instructions("Dockerfile.serve")
    assert [a for w, a in instructions if w == "ENTRYPOINT"] == ['["inspyrenet-serve"]'] * 2
    verifies = [a for w, a in instructions if w == "RUN" and "verify" in a]
    assert verifies == [  # the cpu image keeps one artifact (int8 when it passed), the gpu image its fallbacks
        '["inspyrenet-serve", "verify", "/bundle", "--prune", "--prune-fallbacks"]',
        '["inspyrenet-serve", "verify", "/bundle", "--prune"]',
    ]
    assert sum("INSPYRENET_VERIFY=0" in a for w, a in instructions if w == "ENV") == 2
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["inspyrenet-serve"] == "serving.cli:main"
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert ignored[0:2] == ["# Build context of Dockerfile.serve and Dockerfile.build: only what they COPY.", "*"]
    assert "artifacts/*/model.ts" in ignored
    assert "artifacts/*/model.fp16.onnx*" in ignored
    assert not any(line.startswith("!") and ("tests" in line or ".git" in line) for line in ignored)


def test_the_cuda12_stack_is_pinned_once_and_agrees():
    pins = constraints()
    tensorrt = {name: version for name, version in pins.items() if name.startswith("tensorrt")}
    assert len(tensorrt) >= 4, tensorrt
    assert len(set(tensorrt.values())) == 1, tensorrt  # one TensorRT version
    assert all(name.endswith(("cu12", "cu12-libs", "cu12-bindings")) for name in tensorrt)  # CUDA 12 builds
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    for extra in ("tensorrt", "tensorrt-build"):
        for requirement in map(Requirement, extras[extra]):
            name = canonicalize_name(requirement.name)
            assert name in pins or requirement.specifier, f"{name} ({extra}) is pinned nowhere"
            assert not (name in pins and requirement.specifier), f"{name} is pinned twice"
    assert "cuda-bindings==12.9.10" in extras["tensorrt"]
    assert "cuda-bindings==12.9.10" in extras["tensorrt-build"]
    for dockerfile in ("Dockerfile.serve", "Dockerfile.build"):
        text = (REPO / dockerfile).read_text()
        assert "cuda12.txt" in text, dockerfile
        assert "==11." not in text, dockerfile  # no second pin
    assert "-c constraints/cuda12.txt" in (REPO / "scripts" / "install.sh").read_text()


def test_serving_tensorrt_extra_has_no_torch():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = [r for r in project["optional-dependencies"]["tensorrt"] if not r.startswith("cuda-bindings")]
    tree = dependency_tree(runtime)
    assert "tensorrt-lean-cu12" in tree
    assert not ({"torch", "torch-tensorrt"} & tree)


def test_build_workflow_runs_the_cpu_half_then_only_the_engines_on_the_l4():
    import yaml

    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "build-engines.yml").read_text())
    assert workflow["permissions"] == {"contents": "read"}
    jobs = workflow["jobs"]
    assert "gpu-l4" not in jobs["bundles"]["runs-on"]
    assert "gpu-l4" in jobs["engines"]["runs-on"]
    assert jobs["engines"]["needs"] == "bundles"
    assert jobs["serve"]["needs"] == "engines"
    assert "gpu-l4" not in jobs["serve"]["runs-on"]

    def runs(job: str) -> list[str]:
        return [(s.get("run", "") + s.get("uses", "")) for s in jobs[job]["steps"]]

    assert any("scripts/build-bundles.sh base fast" in t for t in runs("bundles"))
    engine_steps = runs("engines")
    build_image = next(i for i, t in enumerate(engine_steps) if "docker build -f Dockerfile.build" in t)
    engines = next(i for i, t in enumerate(engine_steps) if "--gpus all" in t)
    assert build_image < engines
    assert "SOURCE_URI" in engine_steps[engines]
    assert "base fast" in engine_steps[engines]
    assert not any("torch" in t or "inspyrenet build " in t for t in engine_steps)  # the L4 compiles, nothing else
    for job in ("bundles", "engines"):
        upload = next(s for s in jobs[job]["steps"] if "upload-artifact" in s.get("uses", ""))
        assert upload["if"] == "always()"
        assert "parity" in upload["with"]["path"]
    serve = runs("serve")[-1]
    assert "inspyrenet pull" in serve
    assert "docker build -f Dockerfile.serve" in serve
    assert "docker push" in serve
    steps = [s for job in jobs.values() for s in job["steps"]]
    assert all("@" in s["uses"] and len(s["uses"].split("@")[1]) == 40 for s in steps if "uses" in s)


# The first releases of each action that run on Node 24 (GitHub retires Node 20 on its runners).
NODE24 = {"actions/checkout": 5, "actions/upload-artifact": 6}


WORKFLOWS = ("build-engines.yml", "pull-request.yml")


@pytest.mark.parametrize("workflow", WORKFLOWS)
def test_workflows_use_actions_on_node24(workflow):
    import re

    text = (REPO / ".github" / "workflows" / workflow).read_text()
    uses = re.findall(r"uses: ([\w-]+/[\w-]+)@([0-9a-f]{40}) # v(\d+)\.", text)
    assert uses
    assert {name for name, _, _ in uses} <= set(NODE24)
    assert all(int(major) >= NODE24[name] for name, _, major in uses), uses


def test_build_workflow_checks_inputs_first_and_runs_the_image_as_its_own_user():
    import yaml

    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "build-engines.yml").read_text())
    jobs = workflow["jobs"]
    assert jobs["bundles"]["needs"] == "inputs"
    assert "gpu-l4" not in jobs["inputs"]["runs-on"]
    check = jobs["inputs"]["steps"][0]["run"]
    assert "ARTIFACT_URI" in check
    assert "SERVE_IMAGE" in check
    assert "CHECKPOINT" in check
    engine_run = next(s["run"] for s in jobs["engines"]["steps"] if "--gpus all" in s.get("run", ""))
    assert "--user" not in engine_run  # a uid the image does not know: no HOME, no cache, pwd lookups fail
    assert "-v inspyrenet-build-cache:/cache" in engine_run  # a named volume: outlives the wiped checkout
    assert "$PWD" not in engine_run


def test_pull_requests_get_the_lint_gate_and_the_unit_tier():
    import yaml

    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "pull-request.yml").read_text())
    assert workflow["permissions"] == {"contents": "read"}
    assert list(workflow[True]) == ["pull_request"]  # YAML reads the key `on` as True
    (job,) = workflow["jobs"].values()
    assert not any("self-hosted" in label for label in [job["runs-on"]])  # never a project machine for a PR
    runs = [step.get("run", "") for step in job["steps"]]
    assert runs[1:] == ["./scripts/install.sh", "./scripts/lint.sh", "./scripts/test.sh tests/unit --durations=10"]
    checkout = job["steps"][0]
    assert checkout["uses"].startswith("actions/checkout@")
    assert checkout["with"]["persist-credentials"] is False
    assert sorted(p.name for p in (REPO / ".github" / "workflows").iterdir()) == sorted(WORKFLOWS)


def test_the_commit_hooks_run_the_ruff_the_dev_extra_pins():
    import yaml

    dev = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    (ruff,) = [pin for pin in dev if pin.startswith("ruff==")]
    hooks = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())["repos"][0]["hooks"]
    ruff_hooks = [hook for hook in hooks if hook["entry"].startswith("ruff ")]
    assert [hook["id"] for hook in ruff_hooks] == ["ruff-check", "ruff-format"]
    assert all(hook["additional_dependencies"] == [ruff] for hook in ruff_hooks)  # CI and a commit format alike
