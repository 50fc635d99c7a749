#!/usr/bin/env bash
# The plan's rollback: stop paying for warm L4s, and optionally send traffic back to a known revision.
#   1. the scheduler's two jobs (SERVICE-warm, SERVICE-cold: deploy/scheduler.sh) are deleted,
#      so nothing sets min instances back to 1;
#   2. the service-level min instances go to 0 (the service scales to zero when idle);
#   3. with --to-revision, all traffic goes to that revision (gcloud run revisions list shows them).
#
# usage: deploy/rollback.sh --project P --region R --service S [--to-revision REVISION] [--dry-run]
# A job that is already gone is not an error (re-running it is safe).
set -euo pipefail
# shellcheck source=deploy/common.sh
source "$(dirname "$0")/common.sh"

project="" region="" service="" revision="" dry_run=0
while [ $# -gt 0 ]; do
    case "$1" in
        --project) project="${2:-}"; shift ;;
        --region) region="${2:-}"; shift ;;
        --service) service="${2:-}"; shift ;;
        --to-revision) revision="${2:-}"; shift ;;
        --dry-run) dry_run=1 ;;
        *) die "unknown argument $1 (see the usage at the top of $0)" ;;
    esac
    shift
done
check_project "$project"
[[ "$region" =~ ^[a-z]+-[a-z]+[0-9]+$ ]] || die "--region must be a region such as europe-west4, got '$region'"
check_service --service "$service"
[ -z "$revision" ] || [[ "$revision" =~ ^[a-z][a-z0-9-]{0,62}$ ]] || die "--to-revision must be a revision name, got '$revision'"

for job in "$service-warm" "$service-cold"; do
    if [ "$dry_run" -eq 1 ] || gcloud scheduler jobs describe "$job" --location "$region" --project "$project" >/dev/null 2>&1; then
        run gcloud scheduler jobs delete "$job" --location "$region" --project "$project" --quiet
    else
        echo "scheduler job $job: not there" >&2
    fi
done
run gcloud run services update "$service" --min=0 --region "$region" --project "$project"
[ -z "$revision" ] || run gcloud run services update-traffic "$service" --to-revisions "$revision=100" \
    --region "$region" --project "$project"
