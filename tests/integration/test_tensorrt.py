"""TensorRT around the engine: compatibility rules, the engine checks, build's skip/require, serving fallback.

The engine build itself needs a CUDA GPU with TensorRT (marked, skipped here)."""

from __future__ import annotations

import importlib.util
import io
import json

import pytest

from tests.harness import L4_ENGINE_TARGET, has_cuda, linked_copy, run_cli


@pytest.fixture
def bundle_with_engine(fast_bundle, tmp_path):
    """The fast bundle plus a TensorRT artifact whose plan this machine cannot run."""
    from pipeline.bundle_writer import file_entry

    bundle = linked_copy(fast_bundle, tmp_path / "with-engine")
    plan = bundle / "model.nvidia-l4.fp16.plan"
    plan.write_bytes(b"not a real plan " * 64)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["artifacts"].insert(
        0,
        {
            **file_entry(plan).to_json(),
            "backend": "tensorrt",
            "precision": "fp16",
            "device": "cuda",
            "extra_files": [],
            "max_batch": 4,
            "target": L4_ENGINE_TARGET,
            "io": {"input": {"name": "image", "dtype": "float32"}, "output": {"name": "mask", "dtype": "float32"}},
        },
    )
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle


def test_tensorrt_backend_refuses_cleanly_without_a_gpu(bundle_with_engine):
    from serving.backends import BackendUnavailableError, open_backend
    from serving.bundle import load_bundle

    bundle = load_bundle(bundle_with_engine)
    artifact = bundle.artifact("tensorrt")
    with pytest.raises(BackendUnavailableError, match="cpu device"):
        open_backend(bundle, artifact, device="cpu")
    if has_cuda():
        pytest.skip("this machine has a GPU: the refusal without one cannot be shown here")
    with pytest.raises(BackendUnavailableError) as caught:
        open_backend(bundle, artifact, device="auto")
    assert "no CUDA GPU" in str(caught.value) or "not installed" in str(caught.value)


def test_tensorrt_backend_says_which_runtime_is_missing(bundle_with_engine):
    """With neither TensorRT runtime importable, the reason names both (checked in a clean process)."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "sys.modules['tensorrt_lean'] = None; sys.modules['tensorrt'] = None\n"
        "from serving.backends import BackendUnavailableError, open_backend\n"
        "from serving.bundle import load_bundle\n"
        f"b = load_bundle({str(bundle_with_engine)!r})\n"
        "try:\n    open_backend(b, b.artifact('tensorrt'))\n"
        "except BackendUnavailableError as e:\n    print('REFUSED', e)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "REFUSED no TensorRT runtime is installed" in result.stdout, result.stdout + result.stderr
    assert "tensorrt_lean" in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(has_cuda(), reason="shows the fallback on a machine without a GPU")
def test_server_falls_back_from_an_unusable_engine(bundle_with_engine):
    import httpx

    from pipeline import samples
    from tests.harness import start_server

    server = start_server(bundle_with_engine)
    try:
        skipped = [
            line
            for line in server.log_lines()
            if line.get("message") == "artifact skipped" and line.get("backend") == "tensorrt"
        ]
        assert skipped
        assert "no CUDA GPU" in skipped[0]["reason"] or "not installed" in skipped[0]["reason"]
        ready = [line for line in server.log_lines() if line.get("message") == "ready"]
        assert ready
        assert ready[0]["backend"] == "onnxruntime"
        buffer = io.BytesIO()
        samples.photo("chelsea").save(buffer, "JPEG")
        response = httpx.post(
            f"{server.url}/v1/remove-background",
            content=buffer.getvalue(),
            headers={"content-type": "image/jpeg"},
            timeout=120,
        )
        assert response.status_code == 200
    finally:
        assert server.stop() == 0


@pytest.mark.skipif(has_cuda(), reason="shows the refusal on a machine without a GPU")
def test_explicit_tensorrt_without_a_gpu_is_one_line(bundle_with_engine):
    from tests.harness import free_port

    result = run_cli(
        "serve",
        "--artifacts",
        str(bundle_with_engine),
        env={"INSPYRENET_BACKEND": "tensorrt", "PORT": str(free_port())},
        timeout=300,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    assert "no CUDA GPU" in result.stderr or "not installed" in result.stderr, result.stderr[-2000:]


@pytest.mark.skipif(has_cuda(), reason="shows the refusal on a machine without a GPU")
def test_a_server_that_requires_a_gpu_exits_before_it_is_ever_healthy_on_the_cpu(bundle_with_engine, tmp_path):
    """INSPYRENET_REQUIRE_GPU=1 on a CPU machine: exit non-zero with one line naming why each artifact was
    refused for the GPU, and /health never 200 (asked all the while the process lives)."""
    import os
    import subprocess
    import sys
    import time

    import httpx

    from tests.harness import REPO, free_port

    port = free_port()
    env = {**os.environ, "PORT": str(port), "INSPYRENET_HOST": "127.0.0.1", "INSPYRENET_REQUIRE_GPU": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "serving.cli", "serve", "--artifacts", str(bundle_with_engine)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    codes = []
    deadline = time.monotonic() + 240
    while process.poll() is None and time.monotonic() < deadline:
        try:
            codes.append(httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code)
        except httpx.TransportError:
            codes.append("refused")
        time.sleep(0.1)
    if process.poll() is None:
        process.kill()
    out, err = process.communicate(timeout=30)
    assert process.returncode not in (0, None), (out, err)
    assert 200 not in codes
    lines = [line for line in err.strip().splitlines() if not line.startswith("{")]  # JSON log lines aside
    assert len(lines) == 1, err[-2000:]
    assert "INSPYRENET_REQUIRE_GPU" in lines[0], err[-2000:]
    for name in ("tensorrt: ", "onnxruntime: this onnxruntime has no CUDA execution provider", "torchscript: "):
        assert name in lines[0], lines[0]


def test_build_skips_tensorrt_in_one_line_and_records_why(fast_bundle, fast_build_log):
    log = fast_build_log
    lines = [line for line in log.splitlines() if "TensorRT artifact skipped" in line]
    assert len(lines) == 1, log[-2000:]
    manifest = json.loads((fast_bundle / "manifest.json").read_text())
    files = [a["file"] for a in manifest["artifacts"]]
    assert files == ["model.ts", "model.onnx", "model.fp16.onnx", "model.int8.onnx"]  # every one but the engine
    skipped = manifest["skipped_artifacts"]
    assert skipped[0]["backend"] == "tensorrt"
    assert skipped[0]["reason"] in lines[0]
    islands = manifest["validation"]["fp16_islands"]
    assert islands["device"] == "cpu"
    assert islands["worst_model_max_abs"] > 0
    assert islands["execution"]["mode"] in ("native", "emulated")
    assert islands["execution"]["cpu_capability"]


def test_bundle_carries_the_fp16_graph_tensorrt_compiles(fast_bundle):
    """model.fp16.onnx: typed as a strongly typed build needs it, checked on CPU, never served."""
    from pipeline.export.onnx_fp16 import graph_problem, graph_types
    from serving.backends.selection import candidates
    from serving.bundle import load_bundle

    bundle = load_bundle(fast_bundle)
    source = bundle.by_role("tensorrt-source")
    assert source.file == "model.fp16.onnx"
    assert source.precision == "fp16"
    assert not source.servable
    assert [e.file for e in source.extra_files] == ["model.fp16.onnx.data"]
    report = graph_types(fast_bundle / source.file)
    assert graph_problem(report) is None
    assert report == source.to_json()["graph_check"]
    assert report["inputs"] == {"image": "float32"}
    assert report["outputs"] == {"mask": "float32"}
    assert report["mixed_precision_nodes"] == []
    assert report["islands_not_fp32"] == []
    assert report["conv_weights"]["fp16"] > 3 * report["conv_weights"].get("fp32", 0)
    weights = report["weights"]  # what the engine's fp16 gate weighs the plan's size against
    assert 0.45 < weights["bytes"] / weights["fp32_bytes"] < 0.55
    assert weights["bytes"] <= (fast_bundle / "model.fp16.onnx.data").stat().st_size
    assert source.export_check.max_abs_diff > 0  # it really runs in half precision
    assert source.parity.status == "passed"
    chosen, _ = candidates(bundle, "auto")
    assert [a.file for a in chosen] == ["model.onnx", "model.ts"]
    assert bundle.artifact("onnxruntime").file == "model.onnx"


def test_fp32_graph_is_not_accepted_as_the_engine_source(fast_bundle):
    from pipeline.export.onnx_fp16 import graph_problem, graph_types

    assert "fp16 weights" in graph_problem(graph_types(fast_bundle / "model.onnx"))


@pytest.mark.skipif(has_cuda(), reason="shows the skip on a machine that cannot build engines")
def test_build_engine_without_tensorrt_skips_or_fails_in_one_line(fast_bundle, tmp_path):
    bundle = linked_copy(fast_bundle, tmp_path / "bundle")
    before = (bundle / "manifest.json").read_bytes()
    result = run_cli("build-engine", str(bundle), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "TensorRT artifact skipped: the TensorRT builder (tensorrt-cu12) is not installed" in result.stderr
    assert (bundle / "manifest.json").read_bytes() == before
    result = run_cli("build-engine", str(bundle), "--require-tensorrt", timeout=300)
    assert result.returncode == 1
    assert result.stdout == ""  # before any work: the GPU job fails at once
    assert result.stderr.startswith("error: TensorRT engine required (--require-tensorrt)")
    assert result.stderr.count("\n") == 1, result.stderr


def test_build_engine_needs_the_fp16_graph_and_stored_references(fast_bundle, tmp_path):
    bundle = linked_copy(fast_bundle, tmp_path / "bundle")
    manifest = json.loads((bundle / "manifest.json").read_text())
    without_refs = {**manifest}
    without_refs.pop("parity_references")
    (bundle / "manifest.json").write_text(json.dumps(without_refs))
    result = run_cli("build-engine", str(bundle), timeout=300)
    assert result.returncode == 1
    assert "no stored parity references" in result.stderr
    manifest["artifacts"] = [a for a in manifest["artifacts"] if a.get("role") != "tensorrt-source"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    result = run_cli("build-engine", str(bundle), timeout=300)
    assert result.returncode == 1
    assert "no fp16 ONNX graph" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow  # runs the inspyrenet command, which imports torch, in a new process
@pytest.mark.skipif(has_cuda(), reason="shows the failure on a machine that cannot build engines")
def test_require_tensorrt_fails_fast_in_one_line(tmp_path):
    result = run_cli(
        "build",
        "--mode",
        "fast",
        "--checkpoint",
        "synthetic",
        "--out",
        str(tmp_path / "b"),
        "--require-tensorrt",
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: TensorRT engine required (--require-tensorrt) but")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "b").exists()


@pytest.mark.slow  # runs the inspyrenet command, which imports torch, in a new process
def test_contradictory_tensorrt_flags_are_refused(tmp_path):
    result = run_cli(
        "build",
        "--checkpoint",
        "synthetic",
        "--out",
        str(tmp_path / "b"),
        "--no-tensorrt",
        "--require-tensorrt",
        timeout=60,
    )
    assert result.returncode == 1
    assert "contradict" in result.stderr


needs_tensorrt_build = pytest.mark.skipif(
    not has_cuda() or importlib.util.find_spec("tensorrt") is None,
    reason="needs a CUDA GPU and the TensorRT builder (tensorrt-cu12)",
)


@pytest.mark.gpu
@needs_tensorrt_build
def test_engine_step_adds_an_fp16_engine_that_serves(fast_bundle, tmp_path):
    from pipeline.export.tensorrt_engine import TensorRTOptions

    bundle = linked_copy(fast_bundle, tmp_path / "bundle")
    result = run_cli("build-engine", str(bundle), "--require-tensorrt", timeout=3000)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((bundle / "manifest.json").read_text())
    engine = next(a for a in manifest["artifacts"] if a["backend"] == "tensorrt")
    assert engine["precision"] == "fp16"
    assert engine["target"]["version_compatible"] is True
    assert engine["target"]["lean_runtime_excluded"] is True
    assert engine["target"]["tf32"] is False
    assert engine["precision_check"]["convolutions"].get("fp16", 0) > 0
    assert engine["io"]["input"]["name"] == "image"
    assert engine["io"]["output"]["name"] == "mask"
    assert TensorRTOptions().max_batch == engine["max_batch"]
    assert engine["parity"]["status"] == "passed"
    assert engine["parity"]["references"] == "stored in the bundle"


@pytest.mark.skipif(has_cuda(), reason="shows the fallback on a machine without a GPU")
def test_a_backend_whose_warm_up_fails_is_skipped_for_the_next(fast_bundle, tmp_path):
    """The ONNX artifact loads but gives NaN at warm-up: the worker closes it and serves TorchScript."""
    import onnx
    from onnx import TensorProto, helper

    from pipeline.bundle_writer import file_entry
    from tests.harness import start_server

    bundle = linked_copy(fast_bundle, tmp_path / "bundle")
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["image", "axes"], ["mean"], keepdims=1),
            helper.make_node("Mul", ["mean", "nan"], ["mask"]),
        ],
        "nan-model",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 384, 384])],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", 1, 384, 384])],
        initializer=[
            helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
            helper.make_tensor("nan", TensorProto.FLOAT, [], [float("nan")]),
        ],
    )
    (bundle / "model.onnx").unlink()
    # IR 10, as the exporter writes: onnx's default (its newest) is past what the served ONNX Runtime reads.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    onnx.save(model, bundle / "model.onnx")
    manifest = json.loads((bundle / "manifest.json").read_text())
    onnx_entry = next(a for a in manifest["artifacts"] if a["file"] == "model.onnx")
    onnx_entry.update(file_entry(bundle / "model.onnx").to_json(), extra_files=[])
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    # TorchScript is the fallback, which the operator asks for: by default a broken artifact is an error
    server = start_server(bundle, block_torch=False, env={"INSPYRENET_FALLBACKS": "1"})
    try:
        skipped = [
            line
            for line in server.log_lines()
            if line.get("message") == "artifact skipped" and line.get("backend") == "onnxruntime"
        ]
        assert skipped
        assert "warm-up failed: the warm-up output is not finite" in skipped[0]["reason"]
        ready = [line for line in server.log_lines() if line.get("message") == "ready"]
        assert ready
        assert ready[0]["backend"] == "torchscript"
    finally:
        assert server.stop() == 0
