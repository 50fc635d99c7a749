"""The serving side runs where torch is not installed."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from tests.harness import REPO, linked_copy, run_without_torch


def test_import_serving_does_not_import_torch():
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, serving, serving.bundle, serving.imaging.contract, serving.backends, serving.store.gcs;"
            "print('torch' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_the_serving_command_never_imports_pipeline_or_torch():
    """``inspyrenet-serve`` (serve, verify, pull, batch) is all serving code: the torch-free images start it."""
    modules = (
        "serving.cli",
        "serving.http.server",
        "serving.http.api",
        "serving.http.gateway",
        "serving.store.bundles",
        "serving.batch.run",
        "serving.backends.onnx_runtime",
        "serving.backends.tensorrt",
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import importlib, sys; [importlib.import_module(m) for m in {modules!r}]; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'pipeline', 'torch'}))",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    commands = subprocess.run([sys.executable, "-m", "serving.cli", "--help"], capture_output=True, text=True, cwd=REPO)
    assert {"serve", "verify", "pull", "batch"} <= set(re.findall(r"^  (\S+)", commands.stdout, re.MULTILINE))


def test_onnxruntime_backend_runs_without_torch(fast_bundle):
    result = run_without_torch(f"""
        import numpy as np
        from PIL import Image
        from serving.bundle import load_bundle
        from serving.backends import open_backend
        from serving.imaging.contract import preprocess, upsample_mask
        bundle = load_bundle({str(fast_bundle)!r})
        backend = open_backend(bundle, bundle.artifact("onnxruntime"), device="cpu")
        mask = backend.infer(preprocess(Image.new("RGB", (50, 40), (200, 30, 30)), bundle.input_size))
        full = upsample_mask(mask[0, 0], (40, 50))
        assert full.shape == (40, 50) and 0.0 <= full.min() <= full.max() <= 1.0
        print("ok")
    """)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"


def test_torchscript_backend_refuses_cleanly_without_torch(fast_bundle):
    result = run_without_torch(f"""
        from serving.bundle import load_bundle
        from serving.backends import BackendUnavailableError, open_backend
        bundle = load_bundle({str(fast_bundle)!r}, verify=False)
        try:
            open_backend(bundle, bundle.artifact("torchscript"))
        except BackendUnavailableError as exc:
            print(exc)
    """)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "torch is not installed"


def test_serving_command_imports_neither_torch_nor_pipeline():
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, serving.cli; print(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('torch', 'pipeline', 'onnx', 'transparent_background')))",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def serve_command(*args: str) -> subprocess.CompletedProcess:
    """``inspyrenet-serve ARGS`` where torch and pipeline cannot be imported (as in the serving image)."""
    return run_without_torch("sys.modules['pipeline'] = None\nfrom serving.cli import main\nmain()\n", *args)


def test_verify_prune_keeps_what_this_install_serves_and_the_server_skips_the_rest(fast_bundle, tmp_path):
    """What the image build runs: the bundle checked by the serving install, unservable files dropped."""
    from serving.backends.selection import missing_files
    from serving.bundle import load_bundle
    from serving.loading import preflight
    from serving.settings import Settings

    copy = linked_copy(fast_bundle, tmp_path / "bundle")
    result = serve_command("verify", str(copy), "--prune")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("ok    onnxruntime ") for line in lines), lines
    assert any(line.startswith("skip  torchscript ") and "torch is not installed" in line for line in lines)
    assert any(line.startswith("skip  onnxruntime-fp16 ") and "not served" in line for line in lines)
    int8 = load_bundle(copy, verify=False).artifact("onnxruntime-int8")
    if int8.parity.status == "failed":  # the synthetic checkpoint's int8 graph (tests/integration/test_int8.py)
        assert any(line.startswith("skip  onnxruntime-int8 ") and "failed parity" in line for line in lines)
        assert not (copy / "model.int8.onnx").exists()
    assert not (copy / "model.ts").exists()
    assert not (copy / "model.fp16.onnx").exists()
    assert (copy / "model.onnx").exists()
    assert (copy / "model.onnx.data").exists()
    assert (copy / "manifest.json").exists()
    assert (fast_bundle / "model.ts").exists()  # the hard-linked original is untouched
    usable, verified = preflight(Settings(artifacts=copy, backend="auto", verify=False))
    assert usable[0] == "onnxruntime"
    assert "torchscript" not in usable
    assert not verified
    bundle = load_bundle(copy, verify=False)
    missing = {a.name: missing_files(bundle, a) for a in bundle.artifacts}
    assert missing["torchscript"] == ["model.ts"]
    assert missing["onnxruntime"] == []


def test_prune_fallbacks_keeps_only_what_auto_serves_first(fast_bundle, tmp_path):
    """The CPU image: the int8 graph alone once it passed its parity row, else the fp32 graph alone."""
    from serving.loading import preflight
    from serving.settings import Settings

    copy = linked_copy(fast_bundle, tmp_path / "bundle")
    manifest = json.loads((copy / "manifest.json").read_text())
    for artifact in manifest["artifacts"]:
        if artifact.get("label") == "onnxruntime-int8":
            artifact["parity"] = {"status": "passed", "summary": "all 12 images within int8 limits"}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    alone = serve_command("verify", str(copy), "--prune-fallbacks")
    assert alone.returncode == 1
    assert alone.stderr == "error: --prune-fallbacks goes with --prune\n"
    result = serve_command("verify", str(copy), "--prune", "--prune-fallbacks")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "validation: passed"
    assert result.stdout.splitlines()[1].startswith("ok    onnxruntime-int8 int8  model.int8.onnx")
    fallback = "skip  onnxruntime      fp32  model.onnx: a fallback of onnxruntime-int8 (--prune-fallbacks)"
    assert fallback in result.stdout
    assert sorted(p.name for p in copy.iterdir() if p.is_file()) == ["manifest.json", "model.int8.onnx"]
    usable, _ = preflight(Settings(artifacts=copy, backend="auto", verify=False))
    assert usable == ["onnxruntime-int8"]


def test_verify_refuses_an_altered_servable_file_in_one_line(fast_bundle, tmp_path):

    copy = linked_copy(fast_bundle, tmp_path / "bundle")
    with open(copy / "model.onnx", "ab") as handle:  # a copy, not a link: the original is safe
        handle.write(b"\0")
    result = serve_command("verify", str(copy), "--prune")
    assert result.returncode == 1
    assert result.stderr.startswith("error: "), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "model.onnx" in result.stderr
    assert (copy / "model.ts").exists()  # nothing pruned on failure
