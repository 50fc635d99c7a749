"""The real gcloud reads the rendered deploy files and the scheduler's calls.

With an empty configuration gcloud parses its input, then asks for credentials: a parse error means the
file or the flags are wrong.
"""

from __future__ import annotations

import subprocess

import pytest
import yaml

from tests.harness import REPO
from tests.project_files import (
    BATCH_VALUES,
    GPU_CHECK_VALUES,
    JOB_VALUES,
    SERVICE_CPU_VALUES,
    SERVICE_VALUES,
    render,
)


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
    assert patch.returncode != 0, patch.stderr
    assert "Invalid choice: 'patch'" in patch.stderr, patch.stderr
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
    assert headers.returncode != 0, headers.stderr
    assert "unrecognized arguments:\n  --headers" in headers.stderr, headers.stderr
    post = gcloud_run(
        ["scheduler", "jobs", "create", "http", "cutouts-warm", *SCHEDULER_FLAGS, "--http-method", "POST"], tmp_path
    )
    assert post.returncode != 0, post.stderr
    assert NO_CREDENTIALS in post.stderr, post.stderr  # the check tells the two apart
    # The new script runs no command at all: every call goes through the client library.
    assert "subprocess" not in (REPO / "deploy" / "scheduler.py").read_text()


RENDERED = {
    "batch-job.yaml": (["run", "jobs", "replace"], BATCH_VALUES),
    "build-job.yaml": (["run", "jobs", "replace"], JOB_VALUES),
    "gpu-check-job.yaml": (["run", "jobs", "replace"], GPU_CHECK_VALUES),
    "service.yaml": (["run", "services", "replace"], SERVICE_VALUES),
    "service-cpu.yaml": (["run", "services", "replace"], SERVICE_CPU_VALUES),
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
    assert result.returncode != 0, result.stderr
    assert "Failed to parse" in result.stderr, result.stderr


def dry_run_commands(script: str, *args: str) -> list[list[str]]:
    """The gcloud commands a deploy script prints with --dry-run, split as the shell would."""
    import shlex

    from tests.harness import REPO

    result = subprocess.run(
        [str(REPO / "deploy" / script), *args, "--dry-run"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    commands = [shlex.split(line) for line in result.stdout.splitlines() if line.strip()]
    assert commands
    assert all(command[0] == "gcloud" for command in commands)
    return commands


@pytest.mark.slow  # runs gcloud in a new process per command
def test_gcloud_parses_every_monitoring_command(tmp_path):
    """The logs-based metrics, alert policies and dashboard commands of deploy/monitoring.sh (their files'
    contents are parsed by the API's types: tests/system/test_monitoring.py)."""
    commands = dry_run_commands(
        "monitoring.sh",
        *("--project", "acme-prod", "--service", "cutouts", "--service-cpu", "cutouts-cpu"),
        *("--notification-channel", "projects/acme-prod/notificationChannels/123"),
    )
    assert [command[1:4] for command in commands].count(["alpha", "monitoring", "policies"]) == 5
    for command in commands:
        result = gcloud_run(command[1:], tmp_path)
        assert result.returncode != 0, (command, result.stderr)
        assert NO_CREDENTIALS in result.stderr, (command, result.stderr)


@pytest.mark.slow  # runs gcloud in a new process
def test_gcloud_parses_the_budget_command_and_has_no_daily_period(tmp_path):
    (command,) = dry_run_commands(
        "budget.sh",
        *("--billing-account", "01ABCD-23EF45-6789AB", "--project", "acme-prod"),
        *("--notification-channel", "projects/acme-prod/notificationChannels/42"),
    )
    assert "--budget-amount=3100USD" in command
    assert "--threshold-rule=percent=1.0,basis=forecasted-spend" in command
    result = gcloud_run(command[1:], tmp_path)
    assert result.returncode != 0, result.stderr
    assert NO_CREDENTIALS in result.stderr, result.stderr
    # Why the script turns $100 a day into a month's budget: gcloud itself refuses a daily period.
    daily = [arg if not arg.startswith("--calendar-period") else "--calendar-period=day" for arg in command[1:]]
    refused = gcloud_run(daily, tmp_path)
    assert "Invalid choice: 'day'" in refused.stderr
    assert "month, quarter, year" in refused.stderr


@pytest.mark.slow  # runs gcloud in a new process per command
def test_gcloud_parses_every_rollback_command(tmp_path):
    """The plan's rollback: the scheduler's jobs deleted, service-level min instances 0, traffic to a revision."""
    commands = dry_run_commands(
        "rollback.sh",
        *("--project", "acme-prod", "--region", "europe-west4", "--service", "cutouts"),
        *("--to-revision", "cutouts-00041-abc"),
    )
    assert [c[1:5] for c in commands] == [
        ["scheduler", "jobs", "delete", "cutouts-warm"],
        ["scheduler", "jobs", "delete", "cutouts-cold"],
        ["run", "services", "update", "cutouts"],
        ["run", "services", "update-traffic", "cutouts"],
    ]
    assert "--min=0" in commands[2]  # the service-level value the scheduler sets, not --min-instances
    for command in commands:
        result = gcloud_run(command[1:], tmp_path)
        assert result.returncode != 0, (command, result.stderr)
        assert NO_CREDENTIALS in result.stderr, (command, result.stderr)
