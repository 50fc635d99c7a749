"""scripts/gpu-check.sh: kept working on CPU here; the real run is on a CUDA machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.harness import REPO, has_cuda, needs_cuda


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
    assert summary["size"] == [384, 384]
    assert summary["images"] == ["astronaut"]
    islands = summary["fp16_islands"]
    assert islands["worst"]["nonfinite"] == 0
    assert 0 < islands["worst"]["max_abs"] < 0.15
    assert islands["execution"]["mode"] == "emulated"
    assert islands["execution"]["cpu_capability"]
    assert summary["torchscript"]["worst"]["max_abs"] == 0.0
    assert summary["torchscript"]["load_s"] > 0
    assert "tensorrt" not in summary  # the engine's check is `inspyrenet gpu-check`, without torch
    assert all("stage_s" in summary[stage] for stage in ("fp32_eager", "fp16_islands", "torchscript"))
    assert json.loads(out.read_text()) == json.loads(json.dumps(summary))  # the file has the last state


@pytest.mark.gpu
@needs_cuda
def test_gpu_check_on_cuda(session_cache):
    summary = gpu_check("--mode", "base", timeout=540)
    assert summary["fp16_islands"]["worst"]["nonfinite"] == 0
    assert summary["torchscript"]["passed"]


def test_the_engine_checks_stages_read_a_bundle_and_score_a_backend_on_the_cpu(fast_bundle, tmp_path):
    """What `inspyrenet gpu-check` does on the L4, minus the GPU: the working copy of the bundle, its stored
    references, and one backend's load, first inference, latency and parity (ONNX Runtime on the CPU)."""
    from pipeline.engine_check import EngineCheck
    from pipeline.parity.check import DEFAULT_LIMITS

    check = EngineCheck(str(fast_bundle), tmp_path, budget_s=600, repeats=1, max_batch=2, engine_flags=())
    read = check.read_bundle()
    assert read["mode"] == "fast"
    assert read["input_size"] == [384, 384]
    assert read["parity_images"] == 12
    assert (tmp_path / "bundle" / "manifest.json").is_file()
    graph = check.bundle.artifact("onnxruntime")
    check.cases = check.cases[:2]  # two images: the CPU's seconds go to the GPU's stages, not here
    scored = check.run_backend(graph, "cpu", DEFAULT_LIMITS["fp32"]["model"])
    assert scored["passed"] is True, scored
    assert scored["worst"]["nonfinite"] == 0, scored
    assert set(scored["latency_ms"]) == {"batch_1", "batch_2"}
    assert all(v["p50"] <= v["p90"] for v in scored["latency_ms"].values())
    assert scored["load_s"] > 0
    assert scored["first_inference_s"] > 0
    if not has_cuda():  # on the L4 stage this is an error entry, not a silent CPU run
        from serving.backends import BackendUnavailableError

        with pytest.raises(BackendUnavailableError, match="no CUDA execution provider"):
            check.run_backend(graph, "cuda", DEFAULT_LIMITS["fp16"]["model"])
