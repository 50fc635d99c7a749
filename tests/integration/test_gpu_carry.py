"""scripts/gpu-carry.sh: the carried set runs the GPU check's stages where only torch, numpy and onnx are.

The machine it is for has Python 3.12; torch 2.14 here is a cp311 wheel only, so the carry is made for
this Python (PYTHON_VERSION=3.11) and run by it with every other dependency of the project hidden unless
it comes from the carried set, on the CPU (the CUDA stages say they were skipped).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.harness import REPO

pytestmark = pytest.mark.slow

# What the device machine lacks: found anywhere but in the carried set, an import of these fails.
HIDDEN = (
    "yaml", "pydantic", "pydantic_core", "PIL", "skimage", "transparent_background", "cv2", "kornia", "timm",
    "albumentations", "scipy", "gdown", "flet", "cuda", "rich", "click", "jinja2", "onnxruntime", "litserve",
)  # fmt: skip

HIDE = """
import importlib.machinery, sys
CARRY, HIDDEN = {carry!r}, {hidden!r}

class OnlyCarried:
    def find_spec(self, name, path=None, target=None):
        if path is not None or name not in HIDDEN:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name)
        if spec is None or not (spec.origin or str(list(spec.submodule_search_locations or [""])[0])).startswith(CARRY):
            raise ImportError(f"{{name}} is not on the device machine (only in the carried set)")
        return spec

sys.meta_path.insert(0, OnlyCarried())
"""


def test_the_carried_set_runs_the_stages_with_nothing_but_torch_numpy_and_onnx(tmp_path):
    carry = tmp_path / "gpu-carry"
    env = {
        **os.environ,
        "PYTHON_VERSION": f"{sys.version_info.major}.{sys.version_info.minor}",
        "CARRY": str(carry),
        "DEVICE_PYTHON": sys.executable,
        "RUN_ARGS": "--device cpu --sizes 384 --images 1 --repeats 1",
    }
    prepared = subprocess.run(
        [REPO / "scripts" / "gpu-carry.sh"], capture_output=True, text=True, env=env, cwd=REPO, timeout=600
    )
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    command = prepared.stdout.strip()
    assert "\n" not in command  # one command
    assert len(command) < 2000  # within what the device tool takes
    size = sum(f.stat().st_size for f in carry.rglob("*") if f.is_file())
    assert size < 60 * 2**20
    assert any(w.name.startswith("cuda_bindings-12.9.10-") for w in (carry / "wheels").iterdir())
    (carry / "stand-ins" / "sitecustomize.py").write_text(HIDE.format(carry=str(carry), hidden=HIDDEN))
    ran = subprocess.run(
        ["bash", "-c", command],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=900,
        env={**env, "OUT": str(tmp_path)},
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    summary = json.loads((tmp_path / "gpu-carry.json").read_text())
    assert summary["model_code"].startswith(str(carry))  # transparent-background's files, from the carry
    for stage in ("cpu_fp32_384", "fp32_384", "fp16_islands_384"):
        assert "error" not in summary[stage], summary[stage]
    assert summary["fp32_384"]["passed"]
    islands = summary["fp16_islands_384"]
    assert islands["passed"], islands
    assert 1 < islands["fp16_peak_abs"] < 65504
    assert islands["fp16_nonfinite_values"] == 0
    assert "skipped" in summary["graph_replay_384"]
    assert "skipped" in summary["tensorrt_backend_cuda"]
