"""The serving side runs where torch is not installed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import REPO

BLOCK_TORCH = "import sys; sys.modules['torch'] = None  # any 'import torch' now raises ImportError\n"


def run_without_torch(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH + textwrap.dedent(code)],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )


def test_import_serving_does_not_import_torch():
    result = subprocess.run(
        [sys.executable, "-c", "import sys, serving, serving.bundle, serving.image, serving.backends, serving.storage;"
         "print('torch' in sys.modules)"],
        capture_output=True, text=True, cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_onnxruntime_backend_runs_without_torch(fast_bundle):
    result = run_without_torch(f"""
        import numpy as np
        from PIL import Image
        from serving.bundle import load_bundle
        from serving.backends import open_backend
        from serving.image import preprocess, upsample_mask
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
        from serving.backends import BackendUnavailable, open_backend
        bundle = load_bundle({str(fast_bundle)!r}, verify=False)
        try:
            open_backend(bundle, bundle.artifact("torchscript"))
        except BackendUnavailable as exc:
            print(exc)
    """)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "torch is not installed"
