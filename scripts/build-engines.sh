#!/usr/bin/env bash
# The GPU half of the engine build (the build image's entrypoint, on the L4 the engines are for):
# for each mode, take the CPU-built bundle, add the TensorRT fp16 engine (required), validate it
# against the bundle's stored parity references, and publish the result. No torch is involved.
#   scripts/build-engines.sh [MODE ...]        (default: base fast)
# Environment: SOURCE_URI (gs://BUCKET/PREFIX the CPU half published to; each mode is pulled from
#              SOURCE_URI/MODE/latest) or, without it, bundles already in $OUT_DIR/MODE;
#              OUT_DIR (default /out), PUBLISH_URI (gs://BUCKET/PREFIX: each mode to PUBLISH_URI/MODE),
#              ENGINE_FLAGS (extra flags for `inspyrenet build-engine`, e.g. --hardware-compatible).
# Inputs are checked before any GPU work. A retried task skips the modes whose version is already
# published (the first attempt got that far; an engine is never rebuilt over a published one).
# Exits non-zero on the first failure: no engine could be built, a parity failure, a failed upload.
set -euo pipefail

out_dir="${OUT_DIR:-/out}"
modes=("$@")
[ "${#modes[@]}" -gt 0 ] || modes=(base fast)
read -r -a extra <<< "${ENGINE_FLAGS:-}"

fail() { echo "error: $*" >&2; exit 2; }
for mode in "${modes[@]}"; do
    case "$mode" in base|fast) ;; *) fail "unknown mode '$mode' (base or fast)" ;; esac
done
for name in SOURCE_URI PUBLISH_URI; do
    value="${!name:-}"
    if [ -n "$value" ] && ! [[ "$value" =~ ^gs://[a-z0-9][-a-z0-9_.]{1,220}[a-z0-9](/.*)?$ ]]; then
        fail "$name must be gs://BUCKET/PREFIX, got '$value'"
    fi
done
if [ -z "${SOURCE_URI:-}" ]; then
    for mode in "${modes[@]}"; do
        [ -f "$out_dir/$mode/manifest.json" ] || fail "no bundle at $out_dir/$mode and no SOURCE_URI to pull it from"
    done
fi

built=()
for mode in "${modes[@]}"; do
    if [ -n "${SOURCE_URI:-}" ]; then
        echo "== pulling the $mode bundle from $SOURCE_URI/$mode/latest"
        inspyrenet pull "$SOURCE_URI/$mode/latest" "$out_dir/$mode"
    fi
    if [ -n "${PUBLISH_URI:-}" ]; then
        status=0
        inspyrenet published "$out_dir/$mode" "$PUBLISH_URI/$mode" || status=$?
        if [ "$status" -eq 0 ]; then
            echo "== the $mode bundle is already published (a retried task): skipping it"
            continue
        elif [ "$status" -ne 3 ]; then
            exit "$status"
        fi
    fi
    echo "== adding the TensorRT engine to the $mode bundle"
    inspyrenet build-engine "$out_dir/$mode" --require-tensorrt "${extra[@]}"
    built+=("$mode")
done
[ "${#built[@]}" -eq 0 ] || OUT_DIR="$out_dir" "$(dirname "$0")/publish-bundles.sh" "${built[@]}"
