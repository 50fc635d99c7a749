#!/usr/bin/env bash
# GPU check: one command, one JSON summary (stdout; also $OUT/gpu-check.json when OUT is set).
#   scripts/gpu-check.sh [--mode base|fast] [--images N] [--repeats N] [--checkpoint SOURCE]
# Runs on a CUDA machine with PyTorch; no TensorRT and no internet needed (the engine is built
# and checked when TensorRT's builder, tensorrt-cu12, imports). The JSON is rewritten after every
# stage, so a run cut short keeps its figures. The project's other [build] dependencies
# (transparent-background, scikit-image, ...) must import: on an offline machine, install them
# from wheels first, e.g.  pip install --no-index --find-links .whl -e '.[build]' --no-deps
# Budget: under 8 minutes on one GPU (base size, 12 parity images, 10 timed runs each).
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_ALBUMENTATIONS_UPDATE=1 PYTHONUNBUFFERED=1
args=("$@")
if [ -n "${OUT:-}" ]; then
    args+=(--out "$OUT/gpu-check.json")
fi
exec timeout 480 "${PYTHON:-python3}" -m pipeline.gpu_check "${args[@]}"
