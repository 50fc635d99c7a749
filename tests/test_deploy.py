"""Cloud Run deployment files: the service definition and the business-hours scheduler."""

from __future__ import annotations

import os
import shlex
import string
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO


def rendered_service(min_instances: str = "1") -> dict:
    template = string.Template((REPO / "deploy" / "cloudrun" / "service.yaml").read_text())
    text = template.substitute(SERVICE="cutouts", IMAGE="europe-docker.pkg.dev/p/r/serve:1", MIN_INSTANCES=min_instances)
    return yaml.safe_load(text)


def test_service_runs_one_warm_l4_with_health_probes():
    service = rendered_service("0")
    assert service["kind"] == "Service" and service["metadata"]["name"] == "cutouts"
    template = service["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/minScale"] == "0"
    assert annotations["run.googleapis.com/cpu-throttling"] == "false"  # CPU always allocated
    assert annotations["run.googleapis.com/startup-cpu-boost"] == "true"
    spec = template["spec"]
    assert spec["nodeSelector"]["run.googleapis.com/accelerator"] == "nvidia-l4"
    container = spec["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    env = {item["name"]: item["value"] for item in container["env"]}
    assert spec["containerConcurrency"] == int(env["INSPYRENET_MAX_BATCH_SIZE"])
    startup, liveness = container["startupProbe"], container["livenessProbe"]
    assert startup["httpGet"]["path"] == "/health" and liveness["httpGet"]["path"] == "/health"
    budget = startup["initialDelaySeconds"] + startup["periodSeconds"] * startup["failureThreshold"]
    assert budget >= 60  # covers a cold start (the baseline's took 40-60 s; ours is seconds)
    assert container["ports"][0]["containerPort"] == 8080


@pytest.fixture()
def gcloud_stub(tmp_path) -> tuple[dict, Path]:
    """A fake gcloud on PATH that records each call; 'describe' fails (the jobs do not exist yet)."""
    log = tmp_path / "calls"
    stub = tmp_path / "bin" / "gcloud"
    stub.parent.mkdir()
    stub.write_text(f'#!/usr/bin/env bash\nprintf "%q " "$@" >> {log}\necho >> {log}\n'
                    '[ "$3" = describe ] && exit 1\nexit 0\n')
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{stub.parent}{os.pathsep}{os.environ['PATH']}"}
    return env, log


def run_scheduler(env, *args):
    return subprocess.run(["bash", str(REPO / "deploy" / "scheduler.sh"), *args], env=env,
                          capture_output=True, text=True)


def test_scheduler_creates_warm_and_cold_jobs(gcloud_stub):
    env, log = gcloud_stub
    result = run_scheduler(env, "--project", "acme", "--region", "europe-west4", "--service", "cutouts",
                           "--service-account", "sched@acme.iam.gserviceaccount.com",
                           "--start-hour", "7", "--end-hour", "20", "--time-zone", "Europe/Berlin")
    assert result.returncode == 0, result.stderr
    calls = [shlex.split(line) for line in log.read_text().splitlines()]
    creates = [c for c in calls if c[:4] == ["scheduler", "jobs", "create", "http"]]
    assert [c[4] for c in creates] == ["cutouts-warm", "cutouts-cold"]
    warm, cold = (dict(zip(c[5::2], c[6::2])) for c in creates)
    assert warm["--schedule"] == "0 7 * * 1-5" and cold["--schedule"] == "0 20 * * 1-5"
    assert warm["--time-zone"] == "Europe/Berlin" and warm["--project"] == "acme"
    assert warm["--uri"] == ("https://run.googleapis.com/v2/projects/acme/locations/europe-west4/services/cutouts"
                             "?updateMask=scaling.minInstanceCount")
    assert warm["--http-method"] == "PATCH"
    assert warm["--message-body"] == '{"scaling":{"minInstanceCount":1}}'
    assert cold["--message-body"] == '{"scaling":{"minInstanceCount":0}}'
    assert warm["--oauth-service-account-email"] == "sched@acme.iam.gserviceaccount.com"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--region", "r", "--service", "s", "--service-account", "a"], "--project is required"),
        (["--project", "p", "--region", "r", "--service", "s", "--service-account", "a", "--start-hour", "25"],
         "hours are 0-23"),
        (["--colour", "blue"], "unknown argument"),
    ],
)
def test_scheduler_refuses_bad_arguments(gcloud_stub, args, words):
    env, log = gcloud_stub
    result = run_scheduler(env, *args)
    assert result.returncode == 2 and words in result.stderr
    assert not log.exists()  # nothing was scheduled


def test_build_job_runs_the_gpu_engine_step_on_an_l4():
    template = string.Template((REPO / "deploy" / "cloudrun" / "build-job.yaml").read_text())
    job = yaml.safe_load(template.substitute(
        JOB="engines", BUILD_IMAGE="europe-docker.pkg.dev/p/r/build:1", PUBLISH_URI="gs://b/bundles",
        SOURCE_URI="gs://b/bundles/cpu", SERVICE_ACCOUNT="builder@p.iam.gserviceaccount.com"))
    assert job["kind"] == "Job" and job["apiVersion"] == "run.googleapis.com/v1"
    task = job["spec"]["template"]["spec"]["template"]
    spec = task["spec"]
    assert spec["nodeSelector"]["run.googleapis.com/accelerator"] == "nvidia-l4"
    execution = job["spec"]["template"]["metadata"]["annotations"]
    assert execution["run.googleapis.com/gpu-zonal-redundancy-disabled"] == "true"
    assert spec["maxRetries"] == 0 and spec["timeoutSeconds"] >= 1800
    container = spec["containers"][0]
    assert container["image"] == "europe-docker.pkg.dev/p/r/build:1"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["args"] == ["base", "fast"]  # scripts/build-engines.sh: build-engine --require-tensorrt
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["PUBLISH_URI"] == "gs://b/bundles" and env["SOURCE_URI"] == "gs://b/bundles/cpu"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert env["OUT_DIR"] in mounts


RENDERED = {
    "build-job.yaml": (["run", "jobs", "replace"], dict(
        JOB="engines", BUILD_IMAGE="europe-docker.pkg.dev/p/r/build:1", PUBLISH_URI="gs://b/bundles",
        SOURCE_URI="gs://b/bundles/cpu", SERVICE_ACCOUNT="builder@p.iam.gserviceaccount.com")),
    "service.yaml": (["run", "services", "replace"], dict(
        SERVICE="cutouts", IMAGE="europe-docker.pkg.dev/p/r/serve:1", MIN_INSTANCES="0")),
}


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_gcloud_parses_the_rendered_deploy_file(name, tmp_path):
    """gcloud itself reads each rendered file: with no configuration it parses it, then asks for a project."""
    import shutil

    gcloud = shutil.which("gcloud")
    if gcloud is None:
        pytest.skip("gcloud is not installed here")
    command, values = RENDERED[name]
    rendered = tmp_path / name
    rendered.write_text(string.Template((REPO / "deploy" / "cloudrun" / name).read_text()).substitute(values))
    config = tmp_path / "gcloud-config"
    config.mkdir()
    result = subprocess.run([gcloud, *command, str(rendered), "--region", "europe-west4"],
                            capture_output=True, text=True, timeout=120,
                            env={"PATH": "/usr/bin:/bin", "CLOUDSDK_CONFIG": str(config), "HOME": str(tmp_path)})
    assert result.returncode != 0  # no credentials and no project here
    assert "Failed to parse" not in result.stderr and "Invalid" not in result.stderr, result.stderr
    assert "namespacesId" in result.stderr or "project" in result.stderr.lower(), result.stderr
