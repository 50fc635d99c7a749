#!/usr/bin/env bash
# Monitoring as code: the logs-based metrics, alert policies and dashboard of deploy/monitoring/,
# rendered for one project and created (or updated in place) with gcloud.
#
# usage: deploy/monitoring.sh --project P --service S --service-cpu S_CPU
#            --notification-channel projects/P/notificationChannels/ID
#            [--business-hours 7-17] [--render-only DIR] [--dry-run]
#   --business-hours START-END   UTC hours the GPU service must be up (Monday to Friday): the hours
#                                deploy/scheduler.sh keeps it warm, in UTC (default 7-17)
#   --render-only DIR            write the rendered files to DIR and stop (what the tests parse)
#   --dry-run                    print the gcloud commands instead of running them
# Re-running it updates what exists: logging metrics by name, policies and the dashboard by
# display name. The logs-based metrics come first: the policies and the dashboard name them.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=deploy/common.sh
source "$here/common.sh"

project="" service="" service_cpu="" channel="" hours="7-17" render_dir="" dry_run=0
while [ $# -gt 0 ]; do
    case "$1" in
        --project) project="${2:-}"; shift ;;
        --service) service="${2:-}"; shift ;;
        --service-cpu) service_cpu="${2:-}"; shift ;;
        --notification-channel) channel="${2:-}"; shift ;;
        --business-hours) hours="${2:-}"; shift ;;
        --render-only) render_dir="${2:-}"; shift ;;
        --dry-run) dry_run=1 ;;
        *) die "unknown argument $1 (see the usage at the top of $0)" ;;
    esac
    shift
done

# Every value is checked before it reaches a file or a command line.
check_project "$project"
check_service --service "$service"
check_service --service-cpu "$service_cpu"
check_channel "$channel"
[[ "$hours" =~ ^([0-9]{1,2})-([0-9]{1,2})$ ]] || die "--business-hours must be START-END in UTC hours, got '$hours'"
start_hour=$((10#${BASH_REMATCH[1]})) end_hour=$((10#${BASH_REMATCH[2]}))
if [ "$start_hour" -ge "$end_hour" ] || [ "$end_hour" -gt 24 ]; then
    die "--business-hours: START < END <= 24, got '$hours'"
fi

export SERVICE="$service" SERVICE_CPU="$service_cpu" NOTIFICATION_CHANNEL="$channel"
export BUSINESS_START_HOUR_UTC="$start_hour" BUSINESS_END_HOUR_UTC="$end_hour"
# Only these names are replaced: the dashboard's legends keep their own ${resource.labels...}.
# shellcheck disable=SC2016  # envsubst's list of names, not an expansion
variables='$SERVICE $SERVICE_CPU $NOTIFICATION_CHANNEL $BUSINESS_START_HOUR_UTC $BUSINESS_END_HOUR_UTC'

out="${render_dir:-$(mktemp -d)}"
mkdir -p "$out"
[ "$(cd "$out" && pwd)" != "$here/monitoring" ] || die "--render-only must not be deploy/monitoring itself"
[ -z "$render_dir" ] && [ "$dry_run" -eq 0 ] && trap 'rm -rf "$out"' EXIT
sources=("$here"/monitoring/*.json)
for source in "${sources[@]}"; do
    envsubst "$variables" <"$source" >"$out/${source##*/}"
done
[ -n "$render_dir" ] && { echo "rendered ${#sources[@]} files into $out"; exit 0; }

existing() {  # LIST_COMMAND... DISPLAY_NAME: the resource name of the one with that display name, or nothing
    local name=$1; shift
    [ "$dry_run" -eq 1 ] && return 0
    "$@" --project "$project" --filter="displayName=\"$name\"" --format="value(name)" | head -n 1
}
display_name() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["displayName"])' "$1"; }

for file in "$out"/metric-*.json; do
    name=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["name"])' "$file")
    if [ "$dry_run" -eq 0 ] && gcloud logging metrics describe "$name" --project "$project" >/dev/null 2>&1; then
        run gcloud logging metrics update "$name" --config-from-file="$file" --project "$project"
    else
        run gcloud logging metrics create "$name" --config-from-file="$file" --project "$project"
    fi
done
for file in "$out"/alert-*.json; do
    found=$(existing "$(display_name "$file")" gcloud alpha monitoring policies list)
    if [ -n "$found" ]; then
        run gcloud alpha monitoring policies update "$found" --policy-from-file="$file" --project "$project"
    else
        run gcloud alpha monitoring policies create --policy-from-file="$file" --project "$project"
    fi
done
found=$(existing "$(display_name "$out/dashboard.json")" gcloud monitoring dashboards list)
if [ -n "$found" ]; then
    # An update must carry the dashboard's current etag: take it from the live one.
    etag=$(gcloud monitoring dashboards describe "$found" --project "$project" --format="value(etag)")
    python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); d["etag"] = sys.argv[2]; json.dump(d, open(sys.argv[1], "w"))' \
        "$out/dashboard.json" "$etag"
    run gcloud monitoring dashboards update "$found" --config-from-file="$out/dashboard.json" --project "$project"
else
    run gcloud monitoring dashboards create --config-from-file="$out/dashboard.json" --project "$project"
fi
