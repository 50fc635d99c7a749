"""deploy/scheduler.sh, run as an operator runs it: its dry run, its refusals, no credentials."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.harness import REPO
from tests.project_files import SCHEDULE_ARGS


def scheduler(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import sys

    return subprocess.run(
        ["bash", str(REPO / "deploy" / "scheduler.sh"), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable, **(env or {})},
        timeout=120,
    )


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
    assert result.stderr.startswith("error: no Google credentials"), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


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
    assert result.returncode == 2
    assert words in result.stderr
    assert result.stdout == ""
