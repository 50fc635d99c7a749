"""``batch``: a bucket (or folder) of images in, cutouts out; sharded, resumable, the server's bytes.

Against real things: the fast bundle and ONNX Runtime, a real fake-gcs-server,
the serving command in a subprocess with torch blocked (the serving image has
none), and ``inspyrenet serve`` for the byte-for-byte comparison."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import httpx
import numpy as np
import pytest
from PIL import Image

from serving.batch.listing import (
    output_path,
)
from tests.harness import REPO, start_server, torch_blocked_pythonpath

MAX_PIXELS = 1_000_000  # INSPYRENET_MAX_PIXELS for the batch runs: the "huge" image is over it


def encoded(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def image_set() -> tuple[dict[str, bytes], dict[str, str]]:
    """({relative path: bytes}, {bad path: the words its failure reason holds}): 38 good images, 6 bad ones,
    an extensionless file that is not an image, and a text file."""
    from pipeline import samples

    photos = samples.photos()
    files: dict[str, bytes] = {}
    for name, img in photos.items():
        files[f"photos/{name}.jpg"] = encoded(img, "JPEG", quality=90)
        files[f"photos/small/{name}.png"] = encoded(img.resize((img.width // 3, img.height // 3)), "PNG")
        files[f"photos/crops/{name}.webp"] = encoded(img.crop((0, 0, img.width // 2, img.height)), "WEBP")
        files[f"photos/gray/{name}.jpeg"] = encoded(img.convert("L").resize((320, 240)), "JPEG")
    base = photos["astronaut"].resize((256, 256))
    gray = base.convert("L")
    odd = {
        "modes/gray.png": encoded(gray, "PNG"),
        "modes/gray-alpha.png": encoded(Image.merge("LA", (gray, gray.point(lambda v: 255 - v))), "PNG"),
        "modes/palette.png": encoded(base.convert("P", palette=Image.ADAPTIVE, colors=64), "PNG"),
        "modes/palette-transparent.png": encoded(
            base.convert("P", palette=Image.ADAPTIVE, colors=64), "PNG", transparency=0
        ),
        "modes/rgba.png": encoded(base.convert("RGBA"), "PNG"),
        "modes/cmyk.jpg": encoded(base.convert("CMYK"), "JPEG"),
        "modes/sixteen-bit.png": encoded(Image.fromarray(np.asarray(gray, np.uint16) * 257), "PNG"),
        "modes/bilevel.png": encoded(gray.convert("1"), "PNG"),
        "modes/animated.gif": encoded(base, "GIF", save_all=True, append_images=[gray.convert("RGB")]),
        "modes/bitmap.bmp": encoded(base, "BMP"),
        "modes/tiff.tif": encoded(base, "TIFF"),
        "modes/Upper.JPEG": encoded(base, "JPEG"),
        "modes/one-pixel.png": encoded(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"),
        "modes/wide.jpg": encoded(photos["rocket"].resize((600, 24)), "JPEG"),
        "a/b/c/deep.png": encoded(photos["coffee"].resize((200, 150)), "PNG"),
        "scans/scan001": encoded(photos["chelsea"], "JPEG"),  # no extension: its content decides
        "clash/photo.jpg": encoded(photos["motorcycle"].resize((160, 120)), "JPEG"),
    }
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: the output is upright and tall
    odd["modes/exif-rotated.jpg"] = encoded(photos["coffee"].resize((240, 160)), "JPEG", exif=exif.tobytes())
    files.update(odd)
    huge = Image.new("RGB", (1100, 1000), (30, 60, 90))
    bad = {
        "bad/truncated.jpg": (files["photos/astronaut.jpg"][:3000], "truncated or corrupt"),
        "bad/random.png": (np.random.default_rng(0).bytes(5000), "not an image"),
        "bad/empty.jpg": (b"", "no image data"),
        "bad/huge.png": (encoded(huge, "PNG"), "over the limit"),
        "bad/text.webp": (b"<html>not an image</html>", "not an image"),
        "clash/photo.png": (encoded(base.resize((100, 100)), "PNG"), "also that of clash/photo.jpg"),
    }
    reasons = {}
    for path, (data, words) in bad.items():
        files[path] = data
        reasons[path] = words
    files["notes.txt"] = b"not listed: no image extension"
    files["scans/README"] = b"listed (no extension), then ignored: not an image"
    return files, reasons


IGNORED = {"scans/README"}


def good_paths(files: dict[str, bytes], reasons: dict[str, str]) -> set[str]:
    return {p for p in files if p not in reasons and p not in IGNORED and p != "notes.txt"}


def serving_command(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """``inspyrenet-serve batch``, the serving image's command, with torch blocked as in that image."""
    command, kwargs = batch_process_args(args, env)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)


def batch_process_args(args, env, site_code: str = "") -> tuple[list[str], dict]:
    """The serving command's argv and its Popen keywords: torch blocked, as in the serving image."""
    full_env = {**os.environ, "PYTHONPATH": torch_blocked_pythonpath(site_code), **(env or {})}
    return [sys.executable, "-m", "serving.cli", "batch", *args], {"env": full_env, "cwd": REPO}


def run_batch(*args: str, env: dict | None = None) -> dict:
    result = serving_command(*args, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def batch_env(fast_bundle):
    return {
        "INSPYRENET_ARTIFACTS": str(fast_bundle),
        "INSPYRENET_MAX_PIXELS": str(MAX_PIXELS),
        "INSPYRENET_VERIFY": "0",
    }


@pytest.fixture(scope="module")
def server(fast_bundle):
    process = start_server(fast_bundle, env={"INSPYRENET_MAX_PIXELS": str(MAX_PIXELS)})
    yield process
    process.stop()


def server_cutout(server, data: bytes, params: dict) -> bytes:
    response = httpx.post(
        f"{server.url}/v1/remove-background", params=params, files={"image": ("upload", data)}, timeout=120
    )
    assert response.status_code == 200, response.text
    return response.content


def bucket_objects(bucket, prefix: str) -> dict[str, object]:
    return {b.name[len(prefix) :]: b for b in bucket.list_blobs(prefix=prefix)}


def test_three_shards_over_a_bucket_with_one_killed_and_rerun(gcs_emulator, batch_env, server):
    from google.cloud import storage

    files, reasons = image_set()
    good = good_paths(files, reasons)
    listed = good | set(reasons) | IGNORED
    assert len(listed) == 45
    assert len(good) == 38
    bucket = storage.Client().create_bucket(f"batch-{uuid.uuid4().hex[:8]}")
    for path, data in files.items():
        bucket.blob(f"in/{path}").upload_from_string(data)
    src, dst = f"gs://{bucket.name}/in", f"gs://{bucket.name}/out"

    # Task 1 of 3 through Cloud Run's variables, killed once it has written a few outputs.
    command, kwargs = batch_process_args(
        (src, dst), {**batch_env, "CLOUD_RUN_TASK_INDEX": "1", "CLOUD_RUN_TASK_COUNT": "3"}
    )
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)
    deadline = time.monotonic() + 300
    while len(bucket_objects(bucket, "out/")) < 3:
        assert process.poll() is None, "task 1 ended before it was killed"
        assert time.monotonic() < deadline, "task 1 ended before it was killed"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = {name: blob.generation for name, blob in bucket_objects(bucket, "out/").items()}
    assert 3 <= len(before) < 15
    assert not any(name.startswith(".inspyrenet-batch/") for name in before)

    rerun = run_batch(src, dst, "--shard", "1/3", env=batch_env)
    summaries = [run_batch(src, dst, "--shard", f"{i}/3", env=batch_env) for i in (0, 2)] + [rerun]

    # The rerun redid nothing: what the killed task wrote is there in its first (and only) generation.
    after = bucket_objects(bucket, "out/")
    assert {name: after[name].generation for name in before} == before
    assert rerun["skipped"] == len(before)
    assert rerun["done"] + rerun["skipped"] + len(rerun["failed"]) + len(rerun["ignored"]) == rerun["assigned"]
    # Every image went to exactly one task; one output per good image, a failure entry per bad one.
    assert sorted(s["assigned"] for s in summaries) == sorted(len(range(i, len(listed), 3)) for i in range(3))
    assert all(s["listing"] == summaries[0]["listing"] for s in summaries)
    outputs = {name for name in after if not name.startswith(".inspyrenet-batch/")}
    assert outputs == {output_path(p, "png") for p in good}
    assert sum(s["done"] for s in summaries) + rerun["skipped"] == len(good)
    failed = {f["path"]: f["reason"] for s in summaries for f in s["failed"]}
    assert set(failed) == set(reasons)
    for path, words in reasons.items():
        assert words in failed[path], (path, failed[path])
    assert {i["path"] for s in summaries for i in s["ignored"]} == IGNORED
    assert {name for name in after if name.startswith(".inspyrenet-batch/")} == {
        f".inspyrenet-batch/summary-task-{i}-of-3.json" for i in range(3)
    }
    record = after["photos/astronaut.png"].metadata
    assert record["inspyrenet-source"] == "photos/astronaut.jpg"
    assert record["inspyrenet-source-version"] == str(bucket.get_blob("in/photos/astronaut.jpg").generation)
    assert after["photos/astronaut.png"].content_type == "image/png"

    # Byte for byte what the server returns, across the odd modes.
    for path in (
        "photos/astronaut.jpg",
        "modes/cmyk.jpg",
        "modes/sixteen-bit.png",
        "modes/palette-transparent.png",
        "modes/exif-rotated.jpg",
        "modes/animated.gif",
        "scans/scan001",
        "modes/gray-alpha.png",
    ):
        assert after[output_path(path, "png")].download_as_bytes() == server_cutout(server, files[path], {}), path

    # A task whose outputs are all there redoes nothing and loads no image.
    again = run_batch(src, dst, "--shard", "0/3", env=batch_env)
    assert again["done"] == 0
    assert again["skipped"] == summaries[0]["done"]


def test_local_folder_with_parameters_is_the_servers_answer_and_reruns_only_what_changed(tmp_path, batch_env, server):
    files, _ = image_set()
    chosen = ["photos/coffee.jpg", "modes/palette-transparent.png", "a/b/c/deep.png"]
    src, dst = tmp_path / "in", tmp_path / "out"
    for path in chosen:
        (src / path).parent.mkdir(parents=True, exist_ok=True)
        (src / path).write_bytes(files[path])
    params = {"format": "webp", "max_size": "180", "refine": "true"}
    args = (str(src), str(dst), "--format", "webp", "--max-size", "180", "--refine")
    first = run_batch(*args, env=batch_env)
    assert first["done"] == 3
    assert first["failed"] == []
    assert first["params"]["format"] == "webp"
    for path in chosen:
        out = dst / output_path(path, "webp")
        assert out.read_bytes() == server_cutout(server, files[path], params), path
        assert max(Image.open(out).size) == 180
    assert json.loads((dst / ".inspyrenet-batch" / "summary-task-0-of-1.json").read_text())["done"] == 3
    stamps = {p: (dst / output_path(p, "webp")).stat().st_mtime_ns for p in chosen}

    again = run_batch(*args, env=batch_env)
    assert (again["done"], again["skipped"]) == (0, 3)
    assert stamps == {p: (dst / output_path(p, "webp")).stat().st_mtime_ns for p in chosen}

    (src / chosen[0]).write_bytes(files["photos/astronaut.jpg"])  # a source replaced under the same name
    (dst / output_path(chosen[1], "webp")).unlink()  # an output deleted
    changed = run_batch(*args, env=batch_env)
    assert (changed["done"], changed["skipped"]) == (2, 1)
    other_params = run_batch(*args, "--threshold", "0.5", env=batch_env)
    assert (other_params["done"], other_params["skipped"]) == (3, 0)
    assert (dst / output_path(chosen[0], "webp")).read_bytes() == server_cutout(
        server, files["photos/astronaut.jpg"], {**params, "threshold": "0.5"}
    )


def test_cpu_lanes_trade_byte_identity_for_throughput_within_one_alpha_level(tmp_path, batch_env, server):
    """--cpu-lanes 2: two images in inference at once on one core each. ONNX Runtime's single-thread
    result differs from the API's (all cores) by up to 4e-5: at most one alpha level, at few pixels."""
    files, _ = image_set()
    chosen = ["photos/astronaut.jpg", "photos/small/rocket.png", "modes/cmyk.jpg"]
    for path in chosen:
        (tmp_path / "in" / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / path).write_bytes(files[path])
    summary = run_batch(str(tmp_path / "in"), str(tmp_path / "out"), "--cpu-lanes", "2", env=batch_env)
    assert summary["done"] == 3
    assert summary["cpu_lanes"] == 2
    differing = pixels = 0
    for path in chosen:
        ours = np.asarray(Image.open(tmp_path / "out" / output_path(path, "png")), dtype=np.int16)
        api = np.asarray(Image.open(io.BytesIO(server_cutout(server, files[path], {}))), dtype=np.int16)
        assert ours.shape == api.shape
        assert np.array_equal(ours[..., :3], api[..., :3])
        delta = np.abs(ours[..., 3] - api[..., 3])
        assert delta.max() <= 1, path
        differing += int((delta > 0).sum())
        pixels += delta.size
    assert differing / pixels < 0.01


def test_a_missing_bucket_is_one_line_before_any_work(gcs_emulator, tmp_path, batch_env):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.jpg").write_bytes(b"x")
    for args, words in (
        ((str(tmp_path / "in"), "gs://no-such-bucket-here/out"), "gs://no-such-bucket-here"),
        (("gs://no-such-bucket-here/in", str(tmp_path / "out")), "bucket not found"),
    ):
        result = serving_command(*args, env=batch_env, timeout=120)
        errors = [line for line in result.stderr.splitlines() if not line.startswith("{")]
        assert result.returncode == 1, result.stderr
        assert len(errors) == 1, result.stderr
        assert words in errors[0], result.stderr
    assert not (tmp_path / "out").exists()


def test_a_write_that_fails_stops_the_task_in_one_line_and_a_rerun_finishes(tmp_path, batch_env):
    """DST cannot take an output (a folder stands where it goes): exit 1, one line, the summary not written;
    an unreadable source is only that image's failure."""
    files, _ = image_set()
    for name in ("a.png", "b.png"):
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / name).write_bytes(files["modes/one-pixel.png"])
    (tmp_path / "out" / "b.png").mkdir(parents=True)
    result = serving_command(str(tmp_path / "in"), str(tmp_path / "out"), env=batch_env, timeout=300)
    errors = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert result.returncode == 1, result.stderr
    assert len(errors) == 1, result.stderr
    assert "b.png" in errors[0], result.stderr
    assert not (tmp_path / "out" / ".inspyrenet-batch" / "summary-task-0-of-1.json").exists()
    (tmp_path / "out" / "b.png").rmdir()
    rerun = run_batch(str(tmp_path / "in"), str(tmp_path / "out"), env=batch_env)
    assert rerun["done"] + rerun["skipped"] == 2
    assert rerun["done"] >= 1


NOISY_RUNTIME = """
import onnxruntime

_open = onnxruntime.InferenceSession.__init__


def _noisy_open(self, *args, **kwargs):
    print("EP Error: what onnxruntime-gpu prints on stdout without a GPU")
    _open(self, *args, **kwargs)


onnxruntime.InferenceSession.__init__ = _noisy_open
"""


def test_stdout_is_the_summary_alone_when_a_library_prints(tmp_path, batch_env):
    """onnxruntime-gpu prints its CUDA provider's failure on stdout (the image check met it): stdout stays JSON."""
    files, _ = image_set()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.png").write_bytes(files["modes/one-pixel.png"])
    command, kwargs = batch_process_args((str(tmp_path / "in"), str(tmp_path / "out")), batch_env, NOISY_RUNTIME)
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["done"] == 1
    assert "EP Error" in result.stderr


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        (["IN", "IN/out"], {}, "overlap"),
        (["NOWHERE", "OUT"], {}, "no such folder"),
        (["IN", "OUT", "--shard", "4/3"], {}, "--shard"),
        (["IN", "OUT"], {"CLOUD_RUN_TASK_INDEX": "1"}, "CLOUD_RUN_TASK_COUNT"),
        (["IN", "OUT", "--threshold", "2"], {}, "threshold"),
        (["IN", "OUT", "--format", "jpeg"], {}, "cannot carry transparency"),
        (["IN", "OUT", "--quality", "80"], {}, "PNG is always lossless"),
        (["IN", "http://example.com/x"], {}, "a local folder or gs://"),
        (["IN", "gs://"], {}, "names no bucket"),
        (["IN", "OUT"], {"INSPYRENET_ARTIFACTS": "NOWHERE"}, "NOWHERE"),
    ],
)
def test_user_errors_are_one_line(tmp_path, batch_env, args, env, words):
    (tmp_path / "IN").mkdir()
    args = [str(tmp_path / a) if a.startswith(("IN", "NOWHERE", "OUT")) else a for a in args]
    env = {k: str(tmp_path / v) if v == "NOWHERE" else v for k, v in env.items()}
    result = serving_command(*args, env={**batch_env, **env}, timeout=120)
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("error: "), result.stderr
    assert words in errors[0], result.stderr
    assert result.stdout == ""
