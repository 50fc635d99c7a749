#!/usr/bin/env bash
# The budget alert: $100 a day by default, as the Cloud Billing budget that gcloud creates.
#
# usage: deploy/budget.sh --billing-account XXXXXX-XXXXXX-XXXXXX --project P
#            [--daily-usd 100] [--notification-channel projects/P/notificationChannels/ID]
#            [--dry-run] [--budget-json]
#   --dry-run       print the gcloud command instead of running it
#   --budget-json   print the same budget as the Budget API's JSON (what the tests parse)
# Cloud Billing budgets have monthly, quarterly and yearly periods, not daily ones: the daily
# limit becomes a monthly budget of 31 x DAILY (the longest month) with four alerts:
#   10% of it spent (three days' allowance gone: a runaway day early in the month),
#   50% and 90% spent, and 100% *forecast* (the month's pace is over DAILY a day on average).
# Alerts go to the billing account's admins and, with --notification-channel, to that channel.
set -euo pipefail
# shellcheck source=deploy/common.sh
source "$(dirname "$0")/common.sh"

account="" project="" daily=100 channel="" dry_run=0 json=0
while [ $# -gt 0 ]; do
    case "$1" in
        --billing-account) account="${2:-}"; shift ;;
        --project) project="${2:-}"; shift ;;
        --daily-usd) daily="${2:-}"; shift ;;
        --notification-channel) channel="${2:-}"; shift ;;
        --dry-run) dry_run=1 ;;
        --budget-json) json=1 ;;
        *) die "unknown argument $1 (see the usage at the top of $0)" ;;
    esac
    shift
done
[[ "$account" =~ ^[0-9A-F]{6}-[0-9A-F]{6}-[0-9A-F]{6}$ ]] || die "--billing-account must look like 0X0X0X-0X0X0X-0X0X0X, got '$account'"
check_project "$project"
[[ "$daily" =~ ^[1-9][0-9]{0,5}$ ]] || die "--daily-usd must be a whole number of dollars from 1, got '$daily'"
[ -z "$channel" ] || check_channel "$channel"

monthly=$((daily * 31))
name="cutouts: \$$daily a day (\$$monthly a 31-day month)"
percents=(0.1 0.5 0.9)

if [ "$json" -eq 1 ]; then
    rules=""
    for percent in "${percents[@]}"; do rules+="{\"thresholdPercent\": $percent, \"spendBasis\": \"CURRENT_SPEND\"}, "; done
    rules+='{"thresholdPercent": 1.0, "spendBasis": "FORECASTED_SPEND"}'
    channels=""
    [ -n "$channel" ] && channels="\"$channel\""
    cat <<JSON
{
  "displayName": "$name",
  "budgetFilter": {"projects": ["projects/$project"], "calendarPeriod": "MONTH", "creditTypesTreatment": "INCLUDE_ALL_CREDITS"},
  "amount": {"specifiedAmount": {"currencyCode": "USD", "units": "$monthly"}},
  "thresholdRules": [$rules],
  "notificationsRule": {"monitoringNotificationChannels": [$channels], "disableDefaultIamRecipients": false}
}
JSON
    exit 0
fi

command=(gcloud billing budgets create --billing-account="$account" --display-name="$name"
    --budget-amount="${monthly}USD" --calendar-period=month --filter-projects="projects/$project"
    --credit-types-treatment=include-all-credits)
for percent in "${percents[@]}"; do command+=(--threshold-rule="percent=$percent"); done
command+=(--threshold-rule="percent=1.0,basis=forecasted-spend")
[ -n "$channel" ] && command+=(--notifications-rule-monitoring-notification-channels="$channel")
run "${command[@]}"
