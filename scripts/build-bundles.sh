#!/usr/bin/env bash
# The CI build job: build each mode's bundle with a TensorRT engine (required), validated,
# into $OUT_DIR/MODE; publish each to $PUBLISH_URI when it is set.
#   scripts/build-bundles.sh [MODE ...]        (default: base fast)
# Environment: CHECKPOINT (default official), OUT_DIR (default /out), PUBLISH_URI (gs://BUCKET/PREFIX),
#              BUILD_FLAGS (extra flags for `inspyrenet build`, e.g. --hardware-compatible).
# Exits non-zero on the first failure: a skipped engine, a parity failure, a failed upload.
set -euo pipefail

out_dir="${OUT_DIR:-/out}"
checkpoint="${CHECKPOINT:-official}"
modes=("$@")
[ "${#modes[@]}" -gt 0 ] || modes=(base fast)
read -r -a extra <<< "${BUILD_FLAGS:-}"

for mode in "${modes[@]}"; do
    echo "== building the $mode bundle"
    inspyrenet build --mode "$mode" --checkpoint "$checkpoint" --out "$out_dir/$mode" \
        --tensorrt --require-tensorrt "${extra[@]}"
done
if [ -n "${PUBLISH_URI:-}" ]; then
    for mode in "${modes[@]}"; do
        echo "== publishing the $mode bundle to $PUBLISH_URI"
        inspyrenet publish "$out_dir/$mode" "$PUBLISH_URI"
    done
fi
