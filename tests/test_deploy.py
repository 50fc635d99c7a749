"""Cloud Run deployment files: the service definition and the business-hours scheduler."""

from __future__ import annotations

import os
import string
import subprocess

import pytest
import yaml

from tests.conftest import REPO

SERVICE_VALUES = dict(
    SERVICE="cutouts",
    IMAGE="europe-docker.pkg.dev/acme-prod/r/serve:1",
    MIN_INSTANCES="0",
    SERVICE_ACCOUNT="cutouts-serve@acme-prod.iam.gserviceaccount.com",
)
JOB_VALUES = dict(
    JOB="engines",
    BUILD_IMAGE="europe-docker.pkg.dev/acme-prod/r/build:1",
    PUBLISH_URI="gs://acme-bundles/bundles",
    SOURCE_URI="gs://acme-bundles/bundles/cpu",
    SERVICE_ACCOUNT="engine-builder@acme-prod.iam.gserviceaccount.com",
)


def render(name: str, values: dict) -> str:
    return string.Template((REPO / "deploy" / "cloudrun" / name).read_text()).substitute(values)


def rendered_service(min_instances: str = "1") -> dict:
    return yaml.safe_load(render("service.yaml", {**SERVICE_VALUES, "MIN_INSTANCES": min_instances}))


def test_service_runs_one_warm_l4_with_health_probes():
    service = rendered_service("0")
    assert service["kind"] == "Service" and service["metadata"]["name"] == "cutouts"
    template = service["spec"]["template"]
    annotations = template["metadata"]["annotations"]
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


def test_service_min_instances_only_at_service_level_with_its_own_account():
    """The scheduler sets the service-level value; a revision-level one would fight it on every deploy."""
    service = rendered_service("1")
    assert service["metadata"]["annotations"]["run.googleapis.com/minScale"] == "1"
    revision = service["spec"]["template"]["metadata"]["annotations"]
    assert not any(key.endswith("minScale") for key in revision), revision
    assert service["spec"]["template"]["spec"]["serviceAccountName"] == SERVICE_VALUES["SERVICE_ACCOUNT"]
    assert "quota" in (REPO / "deploy" / "cloudrun" / "service.yaml").read_text()  # maxScale's cost is said


def scheduler(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import sys

    return subprocess.run(
        ["bash", str(REPO / "deploy" / "scheduler.sh"), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable, **(env or {})},
        timeout=120,
    )


SCHEDULE_ARGS = [
    "--project",
    "acme-prod",
    "--region",
    "europe-west4",
    "--service",
    "cutouts",
    "--service-account",
    "cutouts-scheduler@acme-prod.iam.gserviceaccount.com",
    "--start-hour",
    "7",
    "--end-hour",
    "20",
    "--time-zone",
    "Europe/Berlin",
]


@pytest.mark.slow  # runs gcloud or the scheduler script in a new process
def test_scheduler_jobs_are_what_the_cloud_scheduler_api_accepts():
    """--dry-run prints the jobs as the API's JSON; the client library's own message types parse them strictly."""
    import json

    scheduler_v1 = pytest.importorskip("google.cloud.scheduler_v1")
    result = scheduler(*SCHEDULE_ARGS, "--dry-run")
    assert result.returncode == 0, result.stderr
    warm, cold = (
        scheduler_v1.Job.from_json(json.dumps(j), ignore_unknown_fields=False) for j in json.loads(result.stdout)
    )
    assert warm.name == "projects/acme-prod/locations/europe-west4/jobs/cutouts-warm"
    assert cold.name.endswith("/jobs/cutouts-cold")
    assert (warm.schedule, cold.schedule) == ("0 7 * * 1-5", "0 20 * * 1-5")
    assert warm.time_zone == "Europe/Berlin"
    for job, instances in ((warm, 1), (cold, 0)):
        target = job.http_target
        assert target.http_method == scheduler_v1.HttpMethod.PATCH
        assert target.uri == (
            "https://run.googleapis.com/v2/projects/acme-prod/locations/europe-west4/services/cutouts"
            "?updateMask=scaling.minInstanceCount"
        )
        assert json.loads(target.body) == {"scaling": {"minInstanceCount": instances}}
        assert target.oauth_token.service_account_email == "cutouts-scheduler@acme-prod.iam.gserviceaccount.com"
        assert job.retry_config.retry_count >= 3  # one failed call must not leave an L4 warm all night
        assert job.retry_config.min_backoff_duration.total_seconds() >= 10  # proto-plus gives timedelta


@pytest.mark.slow  # runs gcloud or the scheduler script in a new process
def test_scheduler_without_credentials_fails_in_one_line(tmp_path):
    pytest.importorskip("google.cloud.scheduler_v1")
    env = {
        "HOME": str(tmp_path),
        "CLOUDSDK_CONFIG": str(tmp_path),
        "GOOGLE_APPLICATION_CREDENTIALS": "",
        "GCE_METADATA_HOST": "127.0.0.1:9",
        "GCE_METADATA_IP": "127.0.0.1:9",
        "NO_GCE_CHECK": "True",
    }
    result = scheduler(*SCHEDULE_ARGS, env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("error: no Google credentials") and result.stderr.count("\n") == 1, result.stderr


@pytest.mark.slow  # runs gcloud or the scheduler script in a new process
@pytest.mark.parametrize(
    ("args", "words"),
    [
        (
            ["--region", "europe-west4", "--service", "s", "--service-account", "a@p.iam.gserviceaccount.com"],
            "--project",
        ),
        ([*SCHEDULE_ARGS, "--start-hour", "25"], "hours are 0-23"),
        ([*SCHEDULE_ARGS, "--time-zone", "Mars/Olympus"], "not an IANA time zone"),
        ([*SCHEDULE_ARGS, "--days", "mon; rm -rf /"], "not a cron day-of-week field"),
        ([*SCHEDULE_ARGS, "--service-account", "someone@example.com"], "not a service account email"),
        ([*SCHEDULE_ARGS, "--colour", "blue"], "unrecognized arguments"),
    ],
)
def test_scheduler_refuses_bad_arguments(args, words):
    pytest.importorskip("google.cloud.scheduler_v1")
    result = scheduler(*args, "--dry-run")
    assert result.returncode == 2 and words in result.stderr and result.stdout == ""


def test_scheduler_creates_then_updates_in_place(tmp_path):
    """Idempotent re-runs: the real client (REST transport) against a loopback recorder of Cloud Scheduler's API."""
    import http.server
    import json
    import threading

    scheduler_v1 = pytest.importorskip("google.cloud.scheduler_v1")
    import importlib.util

    from google.auth.credentials import AnonymousCredentials

    spec = importlib.util.spec_from_file_location("deploy_scheduler", REPO / "deploy" / "scheduler.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    existing: dict[str, dict] = {}
    calls: list[tuple[str, str]] = []

    class Api(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def answer(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            calls.append(("GET", self.path))
            name = self.path.split("?")[0].removeprefix("/v1/")
            if name in existing:
                self.answer(200, existing[name])
            else:
                self.answer(404, {"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}})

        def do_POST(self):
            calls.append(("POST", self.path))
            job = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            existing[job["name"]] = job
            self.answer(200, job)

        def do_PATCH(self):
            calls.append(("PATCH", self.path))
            name = self.path.split("?")[0].removeprefix("/v1/")
            existing[name] = {**existing[name], **json.loads(self.rfile.read(int(self.headers["Content-Length"])))}
            self.answer(200, existing[name])

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = scheduler_v1.CloudSchedulerClient(
            credentials=AnonymousCredentials(),
            transport="rest",
            client_options={"api_endpoint": f"http://127.0.0.1:{server.server_port}"},
        )
        assert module.main(SCHEDULE_ARGS, client=client) == 0
        first = list(calls)
        calls.clear()
        assert module.main(SCHEDULE_ARGS, client=client) == 0
    finally:
        server.shutdown()
    parent = "/v1/projects/acme-prod/locations/europe-west4/jobs"
    assert [(m, p.split("?")[0]) for m, p in first] == [
        ("GET", f"{parent}/cutouts-warm"),
        ("POST", parent),
        ("GET", f"{parent}/cutouts-cold"),
        ("POST", parent),
    ]
    assert [m for m, _ in calls] == ["GET", "PATCH", "GET", "PATCH"]
    assert all("updateMask=" in p for m, p in calls if m == "PATCH")
    stored = existing["projects/acme-prod/locations/europe-west4/jobs/cutouts-warm"]
    # The REST transport sends enums as numbers: 6 is HttpMethod.PATCH.
    assert stored["httpTarget"]["httpMethod"] in ("PATCH", scheduler_v1.HttpMethod.PATCH.value)
    assert stored["retryConfig"]["retryCount"] == 5


def gcloud_run(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    """The real gcloud with an empty configuration: it parses its input, then asks for credentials."""
    import shutil

    gcloud = shutil.which("gcloud")
    if gcloud is None:
        pytest.skip("gcloud is not installed here")
    config = tmp_path / "gcloud-config"
    config.mkdir(exist_ok=True)
    return subprocess.run(
        [gcloud, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "CLOUDSDK_CONFIG": str(config), "HOME": str(tmp_path)},
    )


NO_CREDENTIALS = "You do not currently have an active account selected"
SCHEDULER_FLAGS = [
    "--project",
    "acme-prod",
    "--location",
    "europe-west4",
    "--schedule",
    "0 7 * * 1-5",
    "--uri",
    "https://run.googleapis.com/v2/projects/acme-prod/locations/europe-west4/services/cutouts",
    "--oauth-service-account-email",
    "cutouts-scheduler@acme-prod.iam.gserviceaccount.com",
]


@pytest.mark.slow  # runs gcloud or the scheduler script in a new process
def test_gcloud_cannot_create_a_patch_target_which_is_why_the_scheduler_uses_the_client_library(tmp_path):
    """The old deploy/scheduler.sh's calls, given to the real gcloud: refused before any credentials are asked for."""
    patch = gcloud_run(
        ["scheduler", "jobs", "create", "http", "cutouts-warm", *SCHEDULER_FLAGS, "--http-method", "PATCH"], tmp_path
    )
    assert patch.returncode != 0 and "Invalid choice: 'patch'" in patch.stderr, patch.stderr
    headers = gcloud_run(
        [
            "scheduler",
            "jobs",
            "update",
            "http",
            "cutouts-warm",
            *SCHEDULER_FLAGS,
            "--headers",
            "Content-Type=application/json",
        ],
        tmp_path,
    )
    assert headers.returncode != 0 and "unrecognized arguments:\n  --headers" in headers.stderr, headers.stderr
    post = gcloud_run(
        ["scheduler", "jobs", "create", "http", "cutouts-warm", *SCHEDULER_FLAGS, "--http-method", "POST"], tmp_path
    )
    assert post.returncode != 0 and NO_CREDENTIALS in post.stderr, post.stderr  # the check tells the two apart
    # The new script runs no command at all: every call goes through the client library.
    assert "subprocess" not in (REPO / "deploy" / "scheduler.py").read_text()


def test_build_job_runs_the_gpu_engine_step_on_an_l4():
    job = yaml.safe_load(render("build-job.yaml", JOB_VALUES))
    assert job["kind"] == "Job" and job["apiVersion"] == "run.googleapis.com/v1"
    task = job["spec"]["template"]["spec"]["template"]
    spec = task["spec"]
    assert spec["nodeSelector"]["run.googleapis.com/accelerator"] == "nvidia-l4"
    assert spec["serviceAccountName"] == JOB_VALUES["SERVICE_ACCOUNT"]
    container = spec["containers"][0]
    assert container["image"] == JOB_VALUES["BUILD_IMAGE"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["args"] == ["base", "fast"]  # scripts/build-engines.sh: build-engine --require-tensorrt
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["PUBLISH_URI"] == JOB_VALUES["PUBLISH_URI"] and env["SOURCE_URI"] == JOB_VALUES["SOURCE_URI"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert env["OUT_DIR"] in mounts


def test_build_job_fits_cloud_runs_gpu_task_limits_and_survives_maintenance():
    job = yaml.safe_load(render("build-job.yaml", JOB_VALUES))
    execution = job["spec"]["template"]
    # Where Cloud Run reads it: the execution template (the task template has no metadata in the v1 schema).
    assert execution["metadata"]["annotations"]["run.googleapis.com/gpu-zonal-redundancy-disabled"] == "true"
    assert "metadata" not in execution["spec"]["template"]
    spec = execution["spec"]["template"]["spec"]
    assert 1800 <= spec["timeoutSeconds"] <= 3600  # 1 h: the most a GPU task may run
    assert spec["maxRetries"] >= 1  # GPU tasks are not live-migrated; the entrypoint skips published modes


BATCH_VALUES = dict(
    JOB="cutouts-batch",
    IMAGE="europe-docker.pkg.dev/acme-prod/r/serve:1",
    SOURCE_URI="gs://acme-uploads/2026-11",
    DESTINATION_URI="gs://acme-cutouts/2026-11",
    OUTPUT="rgba",
    FORMAT="webp",
    TASKS="12",
    PARALLELISM="4",
    SERVICE_ACCOUNT="cutouts-batch@acme-prod.iam.gserviceaccount.com",
)


def test_batch_job_runs_parallel_gpu_tasks_of_the_serving_image():
    job = yaml.safe_load(render("batch-job.yaml", BATCH_VALUES))
    assert job["kind"] == "Job" and job["metadata"]["name"] == "cutouts-batch"
    execution = job["spec"]["template"]
    assert (execution["spec"]["taskCount"], execution["spec"]["parallelism"]) == (12, 4)
    assert execution["metadata"]["annotations"]["run.googleapis.com/gpu-zonal-redundancy-disabled"] == "true"
    spec = execution["spec"]["template"]["spec"]
    assert spec["nodeSelector"]["run.googleapis.com/accelerator"] == "nvidia-l4"
    assert spec["serviceAccountName"] == BATCH_VALUES["SERVICE_ACCOUNT"]
    assert spec["maxRetries"] >= 1 and spec["timeoutSeconds"] <= 3600
    container = spec["containers"][0]
    assert container["image"] == BATCH_VALUES["IMAGE"] and container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["args"] == [
        "batch",
        "gs://acme-uploads/2026-11",
        "gs://acme-cutouts/2026-11",
        "--output",
        "rgba",
        "--format",
        "webp",
    ]


def test_batch_job_arguments_are_what_the_batch_command_accepts(tmp_path):
    """The job's args, given to the serving command itself: they parse (it stops at the missing bundle)."""
    from click.testing import CliRunner

    from serving.cli import main

    args = yaml.safe_load(render("batch-job.yaml", BATCH_VALUES))["spec"]["template"]["spec"]["template"]["spec"][
        "containers"
    ][0]["args"]
    local = [args[0], str(tmp_path / "in"), str(tmp_path / "out"), *args[3:]]
    (tmp_path / "in").mkdir()
    result = CliRunner().invoke(main, local, env={"INSPYRENET_ARTIFACTS": str(tmp_path / "no-bundle")})
    assert result.exit_code == 1 and "no-bundle" in result.output and "Usage" not in result.output, result.output


RENDERED = {
    "batch-job.yaml": (["run", "jobs", "replace"], BATCH_VALUES),
    "build-job.yaml": (["run", "jobs", "replace"], JOB_VALUES),
    "service.yaml": (["run", "services", "replace"], SERVICE_VALUES),
}


@pytest.mark.slow  # runs gcloud or the scheduler script in a new process
@pytest.mark.parametrize("name", sorted(RENDERED))
def test_gcloud_parses_the_rendered_deploy_file(name, tmp_path):
    """gcloud itself reads each rendered file: it parses it, then stops at the missing credentials."""
    command, values = RENDERED[name]
    rendered = tmp_path / name
    rendered.write_text(render(name, values))
    result = gcloud_run([*command, str(rendered), "--region", "europe-west4", "--project", "acme-prod"], tmp_path)
    assert result.returncode != 0  # no credentials here
    assert NO_CREDENTIALS in result.stderr, result.stderr


@pytest.mark.slow  # runs gcloud or the scheduler script in a new process
def test_gcloud_rejects_the_zonal_redundancy_annotation_on_the_task_template(tmp_path):
    """The check above can fail: the build job's old annotation placement is a parse error for gcloud."""
    job = yaml.safe_load(render("build-job.yaml", JOB_VALUES))
    job["spec"]["template"]["spec"]["template"]["metadata"] = {
        "annotations": {"run.googleapis.com/gpu-zonal-redundancy-disabled": "true"}
    }
    rendered = tmp_path / "old-build-job.yaml"
    rendered.write_text(yaml.safe_dump(job))
    result = gcloud_run(
        ["run", "jobs", "replace", str(rendered), "--region", "europe-west4", "--project", "acme-prod"], tmp_path
    )
    assert result.returncode != 0 and "Failed to parse" in result.stderr, result.stderr
