"""scripts/gpu-check.sh: kept working on CPU here; the real run is on a CUDA machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.harness import REPO, needs_cuda


def gpu_check(*args: str, timeout: float) -> dict:
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("OUT", None)
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu-check.sh"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return json.loads(result.stdout)


@pytest.mark.slow
def test_gpu_check_runs_end_to_end_on_cpu(session_cache, tmp_path):
    out = tmp_path / "gpu-check.json"
    summary = gpu_check(
        "--device",
        "cpu",
        "--mode",
        "fast",
        "--images",
        "1",
        "--repeats",
        "1",
        "--fp16-execution",
        "emulated",
        "--out",
        str(out),
        timeout=600,
    )  # emulated: native fp16 on a CPU without it is 60x slower (the auto probe is tested in tests/unit)
    assert summary["size"] == [384, 384] and summary["images"] == ["astronaut"]
    islands = summary["fp16_islands"]
    assert islands["worst"]["nonfinite"] == 0 and 0 < islands["worst"]["max_abs"] < 0.15
    assert islands["execution"]["mode"] == "emulated" and islands["execution"]["cpu_capability"]
    assert summary["torchscript"]["worst"]["max_abs"] == 0.0 and summary["torchscript"]["load_s"] > 0
    assert "skipped" in summary["tensorrt"]
    assert all("stage_s" in summary[stage] for stage in ("fp32_eager", "fp16_islands", "torchscript", "tensorrt"))
    assert json.loads(out.read_text()) == json.loads(json.dumps(summary))  # the file has the last state


@pytest.mark.gpu
@needs_cuda
def test_gpu_check_on_cuda(session_cache):
    summary = gpu_check("--mode", "base", timeout=540)
    assert summary["fp16_islands"]["worst"]["nonfinite"] == 0
    assert summary["torchscript"]["passed"]
