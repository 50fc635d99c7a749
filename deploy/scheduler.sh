#!/usr/bin/env bash
# Warm by day, scale to zero at night: two Cloud Scheduler jobs that set the
# Cloud Run service's minimum instances to 1 at the start of business hours
# and back to 0 at the end (min instances are billed while idle).
#
# usage: deploy/scheduler.sh --project P --region R --service S --service-account SA
#            [--start-hour 8] [--end-hour 19] [--days 1-5] [--time-zone Europe/Berlin]
# Re-running it updates the jobs.
set -euo pipefail

start_hour=8 end_hour=19 days=1-5 time_zone=UTC
project="" region="" service="" account=""
while [ $# -gt 0 ]; do
    case "$1" in
        --project) project=$2 ;;
        --region) region=$2 ;;
        --service) service=$2 ;;
        --service-account) account=$2 ;;
        --start-hour) start_hour=$2 ;;
        --end-hour) end_hour=$2 ;;
        --days) days=$2 ;;
        --time-zone) time_zone=$2 ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "error: unknown argument $1" >&2; exit 2 ;;
    esac
    shift 2
done
for name in project region service account; do
    if [ -z "${!name}" ]; then echo "error: --${name/account/service-account} is required" >&2; exit 2; fi
done
for hour in "$start_hour" "$end_hour"; do
    if ! [[ "$hour" =~ ^[0-9]+$ ]] || [ "$hour" -gt 23 ]; then echo "error: hours are 0-23, got $hour" >&2; exit 2; fi
done

uri="https://run.googleapis.com/v2/projects/${project}/locations/${region}/services/${service}?updateMask=scaling.minInstanceCount"

schedule_job() {  # name, cron, min instances
    local args=(--project "$project" --location "$region" --schedule "$2" --time-zone "$time_zone"
        --uri "$uri" --http-method PATCH --headers "Content-Type=application/json"
        --message-body "{\"scaling\":{\"minInstanceCount\":$3}}"
        --oauth-service-account-email "$account")
    if gcloud scheduler jobs describe "$1" --project "$project" --location "$region" >/dev/null 2>&1; then
        gcloud scheduler jobs update http "$1" "${args[@]}"
    else
        gcloud scheduler jobs create http "$1" "${args[@]}"
    fi
}

schedule_job "${service}-warm" "0 ${start_hour} * * ${days}" 1
schedule_job "${service}-cold" "0 ${end_hour} * * ${days}" 0
echo "scheduled: ${service} warm at ${start_hour}:00, scale to zero at ${end_hour}:00 (${days}, ${time_zone})"
