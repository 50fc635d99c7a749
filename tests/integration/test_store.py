"""Bundles on Cloud Storage, against a real fake-gcs-server on loopback."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tests.harness import invoke_cli, start_server  # invoke_cli: in-process, publish and pull import no torch
from tests.toy_bundle import small_bundle


@pytest.fixture
def bucket(gcs_emulator):
    from google.cloud import storage

    name = f"bundles-{uuid.uuid4().hex[:8]}"
    storage.Client().create_bucket(name)
    return name


def test_round_trip(bucket, tmp_path, monkeypatch):
    from serving.store import gcs

    monkeypatch.setattr(gcs, "CHUNK_BYTES", 3)  # every object in several ranged requests
    bundle = small_bundle(tmp_path / "fast")
    published = invoke_cli("publish", str(bundle), f"gs://{bucket}/inspyrenet/fast")
    assert published.returncode == 0, published.stderr
    version = f"gs://{bucket}/inspyrenet/fast/fast-abababababab-20261128T100000Z"
    assert f"published: {version}" in published.stdout
    for source in (version, f"gs://{bucket}/inspyrenet/fast/latest", f"gs://{bucket}/inspyrenet/fast"):
        target = tmp_path / f"pulled-{abs(hash(source))}"
        pulled = invoke_cli("pull", source, str(target))
        assert pulled.returncode == 0, pulled.stderr
        assert "downloading model.onnx (0.0 MB)" in pulled.stderr  # progress: a line a file off a terminal
        assert (target / "model.onnx").read_bytes() == b"weights v1"
        assert (target / "manifest.json").read_bytes() == (bundle / "manifest.json").read_bytes()
        assert json.loads((target / "parity" / "report.json").read_text()) == {"passed": True}
    again = invoke_cli("publish", str(bundle), f"gs://{bucket}/inspyrenet/fast")
    assert again.returncode == 0
    assert "already published" in again.stdout


@pytest.fixture
def stalled_server():
    """A loopback server that accepts connections and never answers (an emulator blocked on its log pipe)."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held, stop = [], threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    listener.close()


def test_a_pull_from_a_server_that_stops_answering_fails_in_one_line_in_its_time(stalled_server, tmp_path, monkeypatch):
    import time

    from serving.store import gcs

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", stalled_server)
    monkeypatch.setattr(gcs, "REQUEST_TIMEOUT", (1.0, 1.0))
    start = time.monotonic()
    result = invoke_cli("pull", "gs://stalled-bucket/p/latest", str(tmp_path / "out"), "--timeout", "3")
    elapsed = time.monotonic() - start
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: gs://stalled-bucket"), result.stderr
    assert elapsed < 3 + 1 + 4, f"took {elapsed:.1f} s"  # the limit, one read timeout, slack for a slow machine
    assert not (tmp_path / "out").exists()


def test_published_tells_a_retried_build_what_is_already_there(bucket, tmp_path):
    """`inspyrenet published`: 0 once the version is up (whatever its content), 3 before, 1 on an error."""
    bundle = small_bundle(tmp_path / "fast")
    destination = f"gs://{bucket}/engines/fast"
    before = invoke_cli("published", str(bundle), destination)
    assert before.returncode == 3, before.stderr
    assert "not published" in before.stdout, before.stderr
    assert invoke_cli("publish", str(bundle), destination).returncode == 0
    rebuilt = small_bundle(tmp_path / "rebuilt", payload=b"another engine")  # same version key, other bytes
    after = invoke_cli("published", str(rebuilt), destination)
    assert after.returncode == 0
    assert "fast-abababababab-20261128T100000Z" in after.stdout
    missing = invoke_cli("published", str(bundle), f"gs://no-such-bucket-{bucket}/engines/fast")
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: ")


def test_latest_moves_only_after_a_complete_upload(bucket, tmp_path):
    from google.cloud import storage

    from serving.store.bundles import publish

    prefix = f"gs://{bucket}/p"
    publish(small_bundle(tmp_path / "v1"), prefix)
    # An upload of v2 interrupted before its manifest: files there, no manifest, latest untouched.
    v2 = small_bundle(tmp_path / "v2", b"weights v2", "2026-11-29T10:00:00+00:00")
    blobs = storage.Client().bucket(bucket)
    key = "p/fast-abababababab-20261129T100000Z"
    blobs.blob(f"{key}/model.onnx").upload_from_filename(str(v2 / "model.onnx"))
    target = tmp_path / "out"
    assert invoke_cli("pull", f"{prefix}/latest", str(target)).returncode == 0
    assert (target / "model.onnx").read_bytes() == b"weights v1"
    partial = invoke_cli("pull", f"gs://{bucket}/{key}", str(tmp_path / "partial"))
    assert partial.returncode == 1
    assert "no published bundle" in partial.stderr
    assert not (tmp_path / "partial").exists()


def test_tampered_remote_file_is_refused_and_target_kept(bucket, tmp_path):
    from google.cloud import storage

    from serving.store.bundles import publish

    version, _ = publish(small_bundle(tmp_path / "fast"), f"gs://{bucket}/t")
    target = small_bundle(tmp_path / "existing", b"the bundle already here")
    before = (target / "manifest.json").read_bytes()
    name = version.split(f"gs://{bucket}/", 1)[1] + "/model.onnx.data"
    storage.Client().bucket(bucket).blob(name).upload_from_string(b"tampered")
    result = invoke_cli("pull", version, str(target))
    assert result.returncode == 1
    assert "refusing the download" in result.stderr
    assert "Traceback" not in result.stderr
    assert (target / "manifest.json").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".existing")] == []  # no staging left


@pytest.mark.parametrize(
    ("uri", "words"),
    [("gs://no-such-bucket-xyz/p", "bucket not found"), ("gs://{bucket}/nothing-here", "no published bundle")],
)
def test_missing_bucket_or_version(bucket, tmp_path, uri, words):
    result = invoke_cli("pull", uri.format(bucket=bucket), str(tmp_path / "out"))
    assert result.returncode == 1
    assert words in result.stderr
    assert "Traceback" not in result.stderr
    published = invoke_cli("publish", str(small_bundle(tmp_path / "b")), "gs://no-such-bucket-xyz/p")
    assert published.returncode == 1
    assert "bucket not found" in published.stderr


def test_server_starts_from_a_gs_uri_when_no_bundle_is_baked(bucket, fast_bundle, tmp_path, gcs_emulator):
    from serving.store.bundles import publish

    publish(fast_bundle, f"gs://{bucket}/served")
    env = {"INSPYRENET_ARTIFACTS_URI": f"gs://{bucket}/served/latest", "STORAGE_EMULATOR_HOST": gcs_emulator.url}
    server = start_server(tmp_path / "not-baked", env=env)
    try:
        logs = server.log_lines()
        assert any("slow path" in line["message"] for line in logs)
        assert (tmp_path / "not-baked" / "manifest.json").is_file()
    finally:
        server.stop()


@pytest.mark.parametrize("bad_name", ["../escaped.bin", "/tmp/inspyrenet-absolute-escape.bin", "a/../../escaped.bin"])
def test_pull_never_writes_outside_its_target(bucket, tmp_path, bad_name):
    """A remote manifest naming a file outside the bundle is refused before anything is downloaded."""
    from google.cloud import storage

    bundle = small_bundle(tmp_path / "fast")
    version = invoke_cli("publish", str(bundle), f"gs://{bucket}/p").stdout.split("published: ")[1].strip()
    prefix = version.removeprefix(f"gs://{bucket}/")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["artifacts"][0]["extra_files"] = [{"file": bad_name, "sha256": "00" * 32, "bytes": 1}]
    remote = storage.Client().bucket(bucket)
    remote.blob(f"{prefix}/manifest.json").upload_from_string(json.dumps(manifest))
    remote.blob(f"{prefix}/{bad_name}").upload_from_string(b"x")
    target = tmp_path / "deep" / "target"
    result = invoke_cli("pull", version, str(target))
    assert result.returncode == 1, result.stderr
    assert "leaves the bundle" in result.stderr, result.stderr
    assert not (tmp_path / "escaped.bin").exists()
    assert not (tmp_path / "deep" / "escaped.bin").exists()
    assert not Path("/tmp/inspyrenet-absolute-escape.bin").exists()
    assert not target.exists()
