#!/usr/bin/env bash
# Publish $OUT_DIR/MODE to $PUBLISH_URI/MODE for each MODE given (both build halves end with this).
#   scripts/publish-bundles.sh MODE ...        (does nothing when PUBLISH_URI is not set)
set -euo pipefail

out_dir="${OUT_DIR:?OUT_DIR must be set}"
[ -n "${PUBLISH_URI:-}" ] || exit 0
for mode in "$@"; do
    echo "== publishing the $mode bundle to $PUBLISH_URI/$mode"
    inspyrenet publish "$out_dir/$mode" "$PUBLISH_URI/$mode"
done
