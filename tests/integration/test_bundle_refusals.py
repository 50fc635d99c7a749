"""What a new user met (issue 37): a bundle an interrupted build left, and a broken artifact file. Nothing
unvalidated is served by default, nothing broken is quietly replaced, and each refusal is one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from tests.harness import REPO, free_port, invoke_cli, linked_copy, start_server


def serve(bundle, env=None) -> subprocess.CompletedProcess:
    """``inspyrenet-serve serve``, expected to refuse before it listens (one that serves meets the timeout)."""
    port = str(free_port())
    return subprocess.run(
        [sys.executable, "-m", "serving.cli", "serve", "--artifacts", str(bundle), "--port", port],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "INSPYRENET_HOST": "127.0.0.1", **(env or {})},
        timeout=120,
    )


def pending(bundle) -> None:
    """As a build stopped during its parity validation leaves the manifest."""
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["validation"] = {"status": "pending"}
    path.write_text(json.dumps(manifest))


def test_a_bundle_left_pending_is_not_served_and_says_how_to_finish(toy_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(toy_bundle, bundle)
    pending(bundle)
    refused = serve(bundle)
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1, refused.stderr  # one line
    assert f"`inspyrenet validate {bundle}`" in refused.stderr
    assert "INSPYRENET_ALLOW_UNVALIDATED" in refused.stderr
    checked = invoke_cli("verify", str(bundle))  # the files are intact; the bundle is not servable
    assert checked.returncode == 1
    assert "validation: pending" in checked.stdout
    assert "never validated" in checked.stderr
    pruned = subprocess.run(
        [sys.executable, "-m", "serving.cli", "verify", str(bundle), "--prune"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert pruned.returncode == 1
    assert "never validated" in pruned.stderr
    assert (bundle / "model.onnx").is_file()


def test_the_development_opt_in_serves_it_with_a_warning(toy_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(toy_bundle, bundle)
    pending(bundle)
    server = start_server(bundle, env={"INSPYRENET_ALLOW_UNVALIDATED": "1"})
    try:
        warned = [line for line in server.log_lines() if "serving without a passed validation" in line["message"]]
        assert warned
        assert warned[0]["severity"] == "WARNING"
    finally:
        assert server.stop() == 0


def test_a_truncated_artifact_is_an_error_not_a_quiet_fallback(fast_bundle, tmp_path):
    """A truncated model.onnx.data used to make serve fall back to TorchScript (25 s) and stay healthy."""
    bundle = linked_copy(fast_bundle, tmp_path / "bundle")
    data = bundle / "model.onnx.data"
    truncated = data.read_bytes()[: data.stat().st_size // 2]
    data.unlink()  # a hard link to the shared bundle: replaced, never written through
    data.write_bytes(truncated)
    refused = serve(bundle)
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1, refused.stderr
    assert refused.stderr.startswith("error: onnxruntime: ")
    assert "model.onnx.data" in refused.stderr
    assert "INSPYRENET_FALLBACKS=1" in refused.stderr
