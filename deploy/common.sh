# shellcheck shell=bash
# Shared by deploy/monitoring.sh, budget.sh and rollback.sh (sourced, not run): one-line errors,
# the dry-run switch, and the checks every value passes before it reaches a file or a command line.
die() { echo "error: $*" >&2; exit 2; }
run() {  # print the command when dry_run=1, else run it
    if [ "${dry_run:-0}" -eq 1 ]; then printf '%q ' "$@"; echo; else "$@"; fi
}
check_project() {
    [[ "$1" =~ ^[a-z][a-z0-9-]{4,28}[a-z0-9]$ ]] || die "--project must be a project ID, got '$1'"
}
check_service() {  # FLAG VALUE
    [[ "$2" =~ ^[a-z]([a-z0-9-]{0,47}[a-z0-9])?$ ]] || die "$1 must be a Cloud Run service name, got '$2'"
}
check_channel() {
    [[ "$1" =~ ^projects/[a-z0-9-]+/notificationChannels/[0-9]+$ ]] \
        || die "--notification-channel must be projects/PROJECT/notificationChannels/ID, got '$1'"
}
