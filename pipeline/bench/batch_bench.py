"""``inspyrenet batch-bench``: the batch path against the same images sent one by one to ``inspyrenet serve``.

Both in the same run, on the same bundle and backend:

- batch: the serving command ``batch`` over a folder, timed from process start
  to exit (listing, model load and warm-up included);
- serve: a warm server (its start-up not counted), the images posted one after
  another, each waiting for the previous answer, as a client looping over
  files would.

The outputs of the two are compared byte for byte.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from pipeline.bench.harness import SIZES, Running, describe_machine, our_server, post_photo

BATCH_BENCH_FILE = "batch.json"


def make_images(folder: Path, count: int, size: tuple[int, int]) -> dict[str, bytes]:
    """``count`` JPEG photos (quality 90) of ``size``: the sample photos in turn, each one mirrored or not."""
    from PIL import Image, ImageOps

    from pipeline import samples

    photos = list(samples.photos().values())
    images = {}
    for index in range(count):
        img = photos[index % len(photos)].resize(size, Image.Resampling.BICUBIC)
        if (index // len(photos)) % 2:
            img = ImageOps.mirror(img)
        buffer = io.BytesIO()
        img.save(buffer, format="JPEG", quality=90)
        name = f"img{index:03d}.jpg"
        (folder / name).write_bytes(buffer.getvalue())
        images[name] = buffer.getvalue()
    return images


def time_batch(bundle: Path, backend: str, src: Path, dst: Path, lanes: int) -> dict[str, Any]:
    argv = [
        sys.executable,
        "-m",
        "serving.cli",
        "batch",
        str(src),
        str(dst),
        "--artifacts",
        str(bundle),
        "--backend",
        backend,
        "--cpu-lanes",
        str(lanes),
    ]
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"batch failed: {result.stderr.strip().splitlines()[-1:]}")
    summary = json.loads(result.stdout)
    return {
        "seconds": seconds,
        "images": summary["done"],
        "images_per_second": summary["done"] / seconds,
        "batch_size": summary["batch_size"],
        "workers": summary["workers"],
        "cpu_lanes": summary["cpu_lanes"],
        "startup_seconds": summary["startup_seconds"],
    }


def time_serve(bundle: Path, backend: str, images: dict[str, bytes]) -> tuple[dict[str, Any], dict[str, bytes]]:
    server = Running(our_server(bundle, backend))
    try:
        server.wait_healthy()
        outputs = {}
        with httpx.Client(timeout=600) as client:
            start = time.perf_counter()
            for name, data in images.items():
                outputs[name] = post_photo(client, server.url, data)[2]
            seconds = time.perf_counter() - start
    finally:
        server.stop()
    return {"seconds": seconds, "images": len(images), "images_per_second": len(images) / seconds}, outputs


def compare(outputs: Path, answers: dict[str, bytes]) -> dict[str, Any]:
    """How the batch outputs compare with the server's answers: identical files, and how far alpha is off."""
    import numpy as np
    from PIL import Image

    identical, differing, pixels, largest = 0, 0, 0, 0
    for name, body in answers.items():
        ours = (outputs / name).with_suffix(".png").read_bytes()
        identical += ours == body
        a = np.asarray(Image.open(io.BytesIO(ours)).getchannel("A"), dtype=np.int16)
        b = np.asarray(Image.open(io.BytesIO(body)).getchannel("A"), dtype=np.int16)
        delta = np.abs(a - b)
        differing += int((delta > 0).sum())
        pixels += delta.size
        largest = max(largest, int(delta.max()))
    return {"identical": identical, "alpha_pixels_differing": differing / pixels, "alpha_max_difference": largest}


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median time, with every run's seconds."""
    ordered = sorted(runs, key=lambda run: run["seconds"])
    return {**ordered[len(ordered) // 2], "runs_seconds": [round(run["seconds"], 2) for run in runs]}


def run_batch_bench(
    bundle: Path,
    backend: str,
    count: int,
    sizes: list[str],
    lanes: list[int],
    runs: int,
    out: Path,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """Per size: ``runs`` rounds, each timing serve and then every lane count; medians compared."""
    rows = []
    for size_name in sizes:
        work = Path(tempfile.mkdtemp(prefix="batch-bench-"))
        try:
            (work / "in").mkdir()
            images = make_images(work / "in", count, SIZES[size_name])
            serve_runs: list[dict[str, Any]] = []
            batch_runs: dict[int, list[dict[str, Any]]] = {lane_count: [] for lane_count in lanes}
            for round_index in range(runs):  # interleaved, so drifts of the machine hit both alike
                progress(f"{size_name}, round {round_index + 1}/{runs}: {count} images one by one to serve")
                result, answers = time_serve(bundle, backend, images)
                serve_runs.append(result)
                for lane_count in lanes:
                    progress(f"{size_name}, round {round_index + 1}/{runs}: batch, {lane_count} lane(s)")
                    target = work / f"out-{lane_count}-{round_index}"
                    batch_runs[lane_count].append(time_batch(bundle, backend, work / "in", target, lane_count))
            serve = median_run(serve_runs)
            for lane_count in lanes:
                batch = median_run(batch_runs[lane_count])
                rows.append(
                    {
                        "size": size_name,
                        "pixels": list(SIZES[size_name]),
                        "images": count,
                        "runs": runs,
                        "batch": batch,
                        "serve": serve,
                        "speedup": batch["images_per_second"] / serve["images_per_second"],
                        "against_serve": compare(work / f"out-{lane_count}-0", answers),
                    }
                )
        finally:
            shutil.rmtree(work, ignore_errors=True)
    report = {"machine": describe_machine(), "backend": backend, "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / BATCH_BENCH_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return report


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"Backend {report['backend']}; {report['machine']['cpu']} ({report['machine']['cores']} cores)",
        "",
        f"Medians of {report['rows'][0]['runs'] if report['rows'] else 0} interleaved runs.",
        "",
        "| images | serve, one by one (warm) | batch, whole command | batch / serve | outputs against serve |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in report["rows"]:
        width, height = row["pixels"]
        batch, serve, against = row["batch"], row["serve"], row["against_serve"]
        if against["identical"] == row["images"]:
            outputs = f"{row['images']}/{row['images']} byte-identical"
        else:
            outputs = (
                f"{against['identical']}/{row['images']} identical; alpha off by at most "
                f"{against['alpha_max_difference']} at {against['alpha_pixels_differing']:.2%} of pixels"
            )
        lines.append(
            f"| {row['images']} x {width}x{height} JPEG | {serve['seconds']:.1f} s, {serve['images_per_second']:.3f}/s "
            f"| {batch['cpu_lanes']} lane(s): {batch['seconds']:.1f} s, {batch['images_per_second']:.3f}/s "
            f"| {row['speedup']:.2f}x | {outputs} |"
        )
    return "\n".join(lines)
