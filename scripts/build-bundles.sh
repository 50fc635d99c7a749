#!/usr/bin/env bash
# The CPU half of the engine build: each mode's bundle (TorchScript, ONNX, the fp16 ONNX graph
# the engine is compiled from, parity references), validated, into $OUT_DIR/MODE; published to
# $PUBLISH_URI/MODE when PUBLISH_URI is set. The GPU half (scripts/build-engines.sh, on an L4)
# adds the TensorRT engine to what this publishes.
#   scripts/build-bundles.sh [MODE ...]        (default: base fast)
# Environment: CHECKPOINT (default official), OUT_DIR (default out), PUBLISH_URI (gs://BUCKET/PREFIX),
#              BUILD_FLAGS (extra flags for `inspyrenet build`).
# Exits non-zero on the first failure: a failed export, a parity failure, a failed upload.
set -euo pipefail

out_dir="${OUT_DIR:-out}"
checkpoint="${CHECKPOINT:-official}"
modes=("$@")
[ "${#modes[@]}" -gt 0 ] || modes=(base fast)
read -r -a extra <<< "${BUILD_FLAGS:-}"

for mode in "${modes[@]}"; do
    echo "== building the $mode bundle (CPU: exports, fp16 graph, parity references)"
    inspyrenet build --mode "$mode" --checkpoint "$checkpoint" --out "$out_dir/$mode" --no-tensorrt "${extra[@]}"
done
OUT_DIR="$out_dir" "$(dirname "$0")/publish-bundles.sh" "${modes[@]}"
