#!/usr/bin/env bash
# GPU check: one command, one JSON summary (stdout; also $OUT/gpu-check.json when OUT is set).
#   scripts/gpu-check.sh [--mode base|fast] [--images N] [--repeats N] [--checkpoint SOURCE]
# The PyTorch half of the GPU check (fp32 eager, fp16 islands, TorchScript on CUDA), for a machine
# whose environment already has torch with CUDA and the project's [build] dependencies: nothing is
# installed and no internet is needed. torch's CUDA build needs a driver for its CUDA (the [build]
# extra's torch 2.14 is CUDA 13: driver >= 580); on a CUDA 12 host such as Cloud Run's L4 (driver
# 535) check the engine route with `inspyrenet gpu-check` from the build image instead (docs/tensorrt.md,
# "GPU check"), which also builds and checks the engine: TensorRT's builder (CUDA 12 bindings) cannot
# be installed next to this torch. The JSON is rewritten after every stage, so a run cut short keeps
# its figures.
# Budget: under 8 minutes on one GPU (base size, 12 parity images, 10 timed runs each).
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_ALBUMENTATIONS_UPDATE=1 PYTHONUNBUFFERED=1
args=("$@")
if [ -n "${OUT:-}" ]; then
    args+=(--out "$OUT/gpu-check.json")
fi
exec timeout 480 "${PYTHON:-python3}" -m pipeline.gpu_check "${args[@]}"
