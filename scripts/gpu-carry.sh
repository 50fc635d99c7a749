#!/usr/bin/env bash
# The GPU check for a CUDA machine without internet (pipeline/offline_gpu_check.py): prepare what it
# needs here, print the one command that runs it there.
#   scripts/gpu-carry.sh
# That machine has Python 3.12 with PyTorch (CUDA), numpy and onnx, and no internet. This writes
# build/gpu-carry (ignored by git; carry it with the working tree):
#   wheels/     the cp312 manylinux wheels the stages import: Pillow, PyYAML, pydantic (and its
#               dependencies), cuda-bindings 12.9.10 (the TensorRT backend's CUDA half)
#   stand-ins/  transparent-background's model files without its package __init__ (which imports
#               albumentations, scipy, OpenCV, gdown and flet), and stand-ins for the three things
#               those files import: cv2 (the two kernels they ask for, computed here by OpenCV),
#               timm.layers (three helpers) and kornia.morphology (unused when exported); and
#               scikit-image's five sample photos, without scikit-image
# checks that it stays under 60 MiB, and prints the command (unpack the wheels with zipfile, run the
# stages with PYTHONPATH on the carried set, the JSON into $OUT as each stage ends).
# Environment: VENV (default .venv: where OpenCV, transparent-background and scikit-image are),
# PYTHON_VERSION (default 3.12: the wheels' Python), DEVICE_PYTHON (default /opt/torch/.venv/bin/python),
# CARRY (default build/gpu-carry), RUN_ARGS (default --sizes 384,1024 --images 2).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON_VERSION="${PYTHON_VERSION:-3.12}"
DEVICE_PYTHON="${DEVICE_PYTHON:-/opt/torch/.venv/bin/python}"
CARRY="${CARRY:-build/gpu-carry}"
RUN_ARGS="${RUN_ARGS:---sizes 384,1024 --images 2}"
LIMIT_MIB=60

rm -rf "$CARRY"
mkdir -p "$CARRY"
abi="cp${PYTHON_VERSION/./}"
"$VENV/bin/python" -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
    --python-version "$PYTHON_VERSION" --implementation cp --abi "$abi" --abi abi3 --abi none \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
    -c constraints/serve.txt -d "$CARRY/wheels" pillow pyyaml pydantic "cuda-bindings==12.9.10" 2>&1 \
    | grep -v "^WARNING: Location" >&2 || true
ls "$CARRY"/wheels/cuda_bindings-12.9.10-*.whl >/dev/null  # the download above did not fail quietly
"$VENV/bin/python" -m pipeline.offline_gpu_check stand-ins "$CARRY/stand-ins"

bytes=$(du -sb "$CARRY" | cut -f1)
mib=$((bytes / 1048576))
if [ "$mib" -ge "$LIMIT_MIB" ]; then
    echo "error: $CARRY is $mib MiB, over the $LIMIT_MIB MiB that may be carried" >&2
    exit 1
fi
echo "$CARRY: $mib MiB ($(ls "$CARRY/wheels" | wc -l) wheels); the command, run from the repository root there:" >&2
unpack="import glob, zipfile; [zipfile.ZipFile(w).extractall('$CARRY/site') for w in glob.glob('$CARRY/wheels/*.whl')]"
echo "$DEVICE_PYTHON -c \"$unpack\" && NO_ALBUMENTATIONS_UPDATE=1 PYTHONPATH=$CARRY/stand-ins:$CARRY/site:. timeout 540 $DEVICE_PYTHON -m pipeline.offline_gpu_check run $RUN_ARGS --out \"\${OUT:-.}/gpu-carry.json\""
