"""Cloud Run deployment files as their readers see them: the service, the jobs, the scheduler's API calls."""

from __future__ import annotations

import pytest
import yaml

from tests.harness import REPO
from tests.project_files import BATCH_VALUES, JOB_VALUES, SCHEDULE_ARGS, SERVICE_CPU_VALUES, SERVICE_VALUES, render


def rendered_service(min_instances: str = "1") -> dict:
    return yaml.safe_load(render("service.yaml", {**SERVICE_VALUES, "MIN_INSTANCES": min_instances}))


def test_service_runs_one_warm_l4_with_health_probes():
    service = rendered_service("0")
    assert service["kind"] == "Service"
    assert service["metadata"]["name"] == "cutouts"
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
    assert startup["httpGet"]["path"] == "/health"
    assert liveness["httpGet"]["path"] == "/health"
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


def test_build_job_runs_the_gpu_engine_step_on_an_l4():
    job = yaml.safe_load(render("build-job.yaml", JOB_VALUES))
    assert job["kind"] == "Job"
    assert job["apiVersion"] == "run.googleapis.com/v1"
    task = job["spec"]["template"]["spec"]["template"]
    spec = task["spec"]
    assert spec["nodeSelector"]["run.googleapis.com/accelerator"] == "nvidia-l4"
    assert spec["serviceAccountName"] == JOB_VALUES["SERVICE_ACCOUNT"]
    container = spec["containers"][0]
    assert container["image"] == JOB_VALUES["BUILD_IMAGE"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["args"] == ["base", "fast"]  # scripts/build-engines.sh: build-engine --require-tensorrt
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["PUBLISH_URI"] == JOB_VALUES["PUBLISH_URI"]
    assert env["SOURCE_URI"] == JOB_VALUES["SOURCE_URI"]
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


def test_batch_job_runs_parallel_gpu_tasks_of_the_serving_image():
    job = yaml.safe_load(render("batch-job.yaml", BATCH_VALUES))
    assert job["kind"] == "Job"
    assert job["metadata"]["name"] == "cutouts-batch"
    execution = job["spec"]["template"]
    assert (execution["spec"]["taskCount"], execution["spec"]["parallelism"]) == (12, 4)
    assert execution["metadata"]["annotations"]["run.googleapis.com/gpu-zonal-redundancy-disabled"] == "true"
    spec = execution["spec"]["template"]["spec"]
    assert spec["nodeSelector"]["run.googleapis.com/accelerator"] == "nvidia-l4"
    assert spec["serviceAccountName"] == BATCH_VALUES["SERVICE_ACCOUNT"]
    assert spec["maxRetries"] >= 1
    assert spec["timeoutSeconds"] <= 3600
    container = spec["containers"][0]
    assert container["image"] == BATCH_VALUES["IMAGE"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
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
    assert result.exit_code == 1, result.output
    assert "no-bundle" in result.output, result.output
    assert "Usage" not in result.output, result.output


def test_gpu_deployments_require_the_gpu_and_the_cpu_image_never_does():
    """The L4 service and the batch job refuse to serve on the CPU; the CPU target (the backup) must not."""
    service = rendered_service()["spec"]["template"]["spec"]["containers"][0]
    batch = yaml.safe_load(render("batch-job.yaml", BATCH_VALUES))["spec"]["template"]["spec"]["template"]["spec"]
    for container in (service, batch["containers"][0]):
        assert {item["name"]: item["value"] for item in container["env"]}["INSPYRENET_REQUIRE_GPU"] == "1"
    assert "INSPYRENET_REQUIRE_GPU" not in (REPO / "Dockerfile.serve").read_text()


def test_gpu_check_job_runs_the_build_image_check_on_one_l4():
    from tests.project_files import GPU_CHECK_VALUES

    job = yaml.safe_load(render("gpu-check-job.yaml", GPU_CHECK_VALUES))["spec"]["template"]["spec"]["template"]
    spec = job["spec"]
    container = spec["containers"][0]
    assert spec["nodeSelector"]["run.googleapis.com/accelerator"] == "nvidia-l4"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["image"] == GPU_CHECK_VALUES["BUILD_IMAGE"]
    assert container["command"] == ["inspyrenet"]
    args = container["args"]
    assert args[:2] == ["gpu-check", GPU_CHECK_VALUES["BUNDLE_URI"]]
    assert args[args.index("--out") + 1] == GPU_CHECK_VALUES["REPORT_URI"]
    assert spec["timeoutSeconds"] >= float(args[args.index("--budget") + 1]) + 120  # the pull and the start


# Cloud Run's vCPU -> memory table (docs.cloud.google.com/run/docs/configuring/services/cpu).
CLOUD_RUN_MEMORY_GIB = {1: (0.5, 4), 2: (0.5, 8), 4: (2, 16), 6: (4, 24), 8: (4, 32)}


def test_cpu_backup_service_runs_one_inference_on_every_vcpu_without_a_gpu():
    service = yaml.safe_load(render("service-cpu.yaml", SERVICE_CPU_VALUES))
    assert service["metadata"]["name"] == "cutouts-cpu"
    assert service["metadata"]["annotations"]["run.googleapis.com/minScale"] == "0"  # a backup scales to zero
    template = service["spec"]["template"]
    assert not any(key.endswith("minScale") for key in template["metadata"]["annotations"])
    assert template["metadata"]["annotations"]["run.googleapis.com/cpu-throttling"] == "false"
    spec = template["spec"]
    assert "nodeSelector" not in spec
    assert spec["serviceAccountName"] == SERVICE_CPU_VALUES["SERVICE_ACCOUNT"]
    container = spec["containers"][0]
    limits = container["resources"]["limits"]
    assert "nvidia.com/gpu" not in limits
    env = {item["name"]: item["value"] for item in container["env"]}
    assert "INSPYRENET_REQUIRE_GPU" not in env
    assert env["INSPYRENET_BACKEND"] == "auto"
    # Concurrency matched to what runs at once, and that one inference on every vCPU.
    assert spec["containerConcurrency"] == int(env["INSPYRENET_WORKERS"]) * int(env["INSPYRENET_MAX_BATCH_SIZE"])
    assert int(env["INSPYRENET_THREADS"]) == int(limits["cpu"]) // int(env["INSPYRENET_WORKERS"])
    low, high = CLOUD_RUN_MEMORY_GIB[int(limits["cpu"])]
    assert low <= int(limits["memory"].removesuffix("Gi")) <= high
    assert float(env["INSPYRENET_REQUEST_TIMEOUT"]) < spec["timeoutSeconds"]
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/health"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
