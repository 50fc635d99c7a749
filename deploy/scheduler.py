"""Warm by day, scale to zero at night: two Cloud Scheduler jobs that set the Cloud Run
service's service-level minimum instances to 1 at the start of business hours and back
to 0 at the end (min instances are billed while idle).

Each job PATCHes the Cloud Run Admin API (v2 ``services.patch`` with
``updateMask=scaling.minInstanceCount``). gcloud's ``scheduler jobs create http`` refuses
``--http-method PATCH``; the Cloud Scheduler API accepts it, so the jobs are written through
Google's own client library (google-cloud-scheduler). Re-running updates the jobs in place.
Each job retries a failed call (an L4 left warm all night, or cold all day, costs more than
a retry). ``--dry-run`` prints the jobs as the API's JSON without calling it.

    deploy/scheduler.sh --project P --region R --service S --service-account SA
        [--start-hour 8] [--end-hour 19] [--days 1-5] [--time-zone Europe/Berlin] [--dry-run]

Credentials: Application Default Credentials (``gcloud auth application-default login``,
or the service account of the machine it runs on).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import zoneinfo

from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions
from google.cloud import scheduler_v1
from google.protobuf import duration_pb2, field_mask_pb2

RUN_API = "https://run.googleapis.com/v2"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
# Retries of one scheduled call: 30 s, 60 s, 120 s, then every 5 min, 5 times at most.
RETRY = scheduler_v1.RetryConfig(
    retry_count=5,
    min_backoff_duration=duration_pb2.Duration(seconds=30),
    max_backoff_duration=duration_pb2.Duration(seconds=300),
    max_doublings=3,
    max_retry_duration=duration_pb2.Duration(seconds=3600),
)
ATTEMPT_DEADLINE = duration_pb2.Duration(seconds=60)  # services.patch answers with an operation at once
UPDATE_MASK = ["schedule", "time_zone", "http_target", "retry_config", "attempt_deadline", "description"]
NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
PROJECT = re.compile(r"^[a-z][-a-z0-9]{4,28}[a-z0-9]$")
REGION = re.compile(r"^[a-z]+-[a-z]+[0-9]$")
ACCOUNT = re.compile(r"^[a-z0-9][-a-z0-9]{0,62}@[a-z0-9][-a-z0-9.]*\.gserviceaccount\.com$")
DAYS = re.compile(r"^(\*|[0-6](-[0-6])?(,[0-6](-[0-6])?)*)$")


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="deploy/scheduler.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", required=True)
    parser.add_argument("--region", required=True)
    parser.add_argument("--service", required=True)
    parser.add_argument(
        "--service-account",
        required=True,
        help="Email of the account the jobs call Cloud Run as (needs run.services.update).",
    )
    parser.add_argument("--start-hour", type=int, default=8)
    parser.add_argument("--end-hour", type=int, default=19)
    parser.add_argument("--days", default="1-5", help="cron day-of-week field, 0 = Sunday [default 1-5]")
    parser.add_argument("--time-zone", default="UTC", help="IANA time zone [default UTC]")
    parser.add_argument("--dry-run", action="store_true", help="Print the jobs as JSON; call nothing.")
    args = parser.parse_args(argv)
    checks = [
        (PROJECT.match(args.project), f"--project {args.project!r} is not a project ID"),
        (REGION.match(args.region), f"--region {args.region!r} is not a region"),
        (NAME.match(args.service), f"--service {args.service!r} is not a Cloud Run service name"),
        (
            ACCOUNT.match(args.service_account),
            f"--service-account {args.service_account!r} is not a service account email",
        ),
        (0 <= args.start_hour <= 23 and 0 <= args.end_hour <= 23, "hours are 0-23"),
        (DAYS.match(args.days), f"--days {args.days!r} is not a cron day-of-week field"),
        (len(args.service) <= 57, "--service is too long for the job names (SERVICE-warm, SERVICE-cold)"),
    ]
    for ok, message in checks:
        if not ok:
            parser.error(message)
    try:
        zoneinfo.ZoneInfo(args.time_zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        parser.error(f"--time-zone {args.time_zone!r} is not an IANA time zone")
    return args


def job(args: argparse.Namespace, suffix: str, hour: int, instances: int) -> scheduler_v1.Job:
    parent = f"projects/{args.project}/locations/{args.region}"
    service = f"{parent}/services/{args.service}"
    return scheduler_v1.Job(
        name=f"{parent}/jobs/{args.service}-{suffix}",
        description=f"set {args.service}'s service-level min instances to {instances}",
        schedule=f"0 {hour} * * {args.days}",
        time_zone=args.time_zone,
        http_target=scheduler_v1.HttpTarget(
            uri=f"{RUN_API}/{service}?updateMask=scaling.minInstanceCount",
            http_method=scheduler_v1.HttpMethod.PATCH,
            headers={"Content-Type": "application/json"},
            body=json.dumps({"scaling": {"minInstanceCount": instances}}).encode(),
            oauth_token=scheduler_v1.OAuthToken(service_account_email=args.service_account, scope=SCOPE),
        ),
        retry_config=RETRY,
        attempt_deadline=ATTEMPT_DEADLINE,
    )


def jobs(args: argparse.Namespace) -> list[scheduler_v1.Job]:
    return [job(args, "warm", args.start_hour, 1), job(args, "cold", args.end_hour, 0)]


def apply(client: scheduler_v1.CloudSchedulerClient, wanted: scheduler_v1.Job) -> str:
    """Create the job, or update it in place if it exists; return what was done."""
    try:
        client.get_job(name=wanted.name)
    except api_exceptions.NotFound:
        client.create_job(parent=wanted.name.rsplit("/jobs/", 1)[0], job=wanted)
        return "created"
    client.update_job(job=wanted, update_mask=field_mask_pb2.FieldMask(paths=UPDATE_MASK))
    return "updated"


def main(argv: list[str] | None = None, client: scheduler_v1.CloudSchedulerClient | None = None) -> int:
    args = arguments(argv)
    wanted = jobs(args)
    if args.dry_run:
        print(
            json.dumps(
                [json.loads(scheduler_v1.Job.to_json(j, use_integers_for_enums=False)) for j in wanted], indent=1
            )
        )
        return 0
    try:
        client = client or scheduler_v1.CloudSchedulerClient()
        for j in wanted:
            print(f"{apply(client, j)}: {j.name} ({j.schedule}, {j.time_zone})")
    except auth_exceptions.DefaultCredentialsError as exc:
        print(f"error: no Google credentials: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    except api_exceptions.GoogleAPICallError as exc:
        print(f"error: Cloud Scheduler refused the call: {exc.message or exc}", file=sys.stderr)
        return 1
    print(
        f"scheduled: {args.service} warm at {args.start_hour}:00, scale to zero at {args.end_hour}:00 "
        f"({args.days}, {args.time_zone})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
