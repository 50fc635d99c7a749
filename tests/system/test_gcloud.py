"""The real gcloud reads the rendered deploy files and the scheduler's calls.

With an empty configuration gcloud parses its input, then asks for credentials: a parse error means the
file or the flags are wrong.
"""

from __future__ import annotations

import subprocess

import pytest
import yaml

from tests.harness import REPO
from tests.project_files import BATCH_VALUES, GPU_CHECK_VALUES, JOB_VALUES, SERVICE_VALUES, render


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


RENDERED = {
    "batch-job.yaml": (["run", "jobs", "replace"], BATCH_VALUES),
    "build-job.yaml": (["run", "jobs", "replace"], JOB_VALUES),
    "gpu-check-job.yaml": (["run", "jobs", "replace"], GPU_CHECK_VALUES),
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
