#!/usr/bin/env bash
# Warm by day, scale to zero at night: creates or updates two Cloud Scheduler jobs that PATCH the
# Cloud Run service's service-level minimum instances (1 by day, 0 by night), with retries.
#
# usage: deploy/scheduler.sh --project P --region R --service S --service-account SA
#            [--start-hour 8] [--end-hour 19] [--days 1-5] [--time-zone Europe/Berlin] [--dry-run]
# Re-running it updates the jobs. Needs Python with google-cloud-scheduler
# (pip install '.[deploy]'); the work is done by deploy/scheduler.py, through Google's client
# library: gcloud's `scheduler jobs create http` refuses --http-method PATCH.
set -euo pipefail
exec "${PYTHON:-python3}" "$(dirname "$0")/scheduler.py" "$@"
