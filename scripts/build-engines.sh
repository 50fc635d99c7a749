#!/usr/bin/env bash
# The GPU half of the engine build (the build image's entrypoint, on the L4 the engines are for):
# for each mode, take the CPU-built bundle, add the TensorRT fp16 engine (required), validate it
# against the bundle's stored parity references, and publish the result. No torch is involved.
#   scripts/build-engines.sh [MODE ...]        (default: base fast)
# Environment: SOURCE_URI (gs://BUCKET/PREFIX the CPU half published to; each mode is pulled from
#              SOURCE_URI/MODE/latest) or, without it, bundles already in $OUT_DIR/MODE;
#              OUT_DIR (default /out), PUBLISH_URI (gs://BUCKET/PREFIX: each mode to PUBLISH_URI/MODE),
#              ENGINE_FLAGS (extra flags for `inspyrenet build-engine`, e.g. --hardware-compatible).
# Exits non-zero on the first failure: no engine could be built, a parity failure, a failed upload.
set -euo pipefail

out_dir="${OUT_DIR:-/out}"
modes=("$@")
[ "${#modes[@]}" -gt 0 ] || modes=(base fast)
read -r -a extra <<< "${ENGINE_FLAGS:-}"

for mode in "${modes[@]}"; do
    if [ -n "${SOURCE_URI:-}" ]; then
        echo "== pulling the $mode bundle from $SOURCE_URI/$mode/latest"
        inspyrenet pull "$SOURCE_URI/$mode/latest" "$out_dir/$mode"
    fi
    echo "== adding the TensorRT engine to the $mode bundle"
    inspyrenet build-engine "$out_dir/$mode" --require-tensorrt "${extra[@]}"
done
OUT_DIR="$out_dir" "$(dirname "$0")/publish-bundles.sh" "${modes[@]}"
