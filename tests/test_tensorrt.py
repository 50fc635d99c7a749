"""TensorRT around the engine: compatibility rules, the engine checks, build's skip/require, serving fallback.

The engine build itself needs a CUDA GPU with TensorRT (marked, skipped here).
"""

from __future__ import annotations

import importlib.util
import io
import json
import shutil

import pytest

from tests.conftest import FAST_SIZE, has_cuda, run_cli

L4 = {"gpu_name": "NVIDIA L4", "compute_capability": "8.9", "hardware_compatibility": "none",
      "version_compatible": True, "tensorrt_version": "11.1.0.106"}


def machine(runtime="tensorrt_lean", version="11.1.0.106", cc=(8, 9), name="NVIDIA L4"):
    from serving.tensorrt_target import Machine

    return Machine(runtime, version, cc, name)


@pytest.mark.parametrize("target, here, words", [
    (L4, machine(), None),
    (L4, machine(version="11.4.0.106"), None),  # later runtime, same major: fine for version-compatible
    ({**L4, "tensorrt_version": "10.16.1"}, machine(), None),  # TensorRT documents 10 -> 11
    (L4, machine(cc=None), "no CUDA GPU"),
    (L4, machine(cc=(9, 0), name="NVIDIA H200"), "built for compute capability 8.9"),
    (L4, machine(cc=(8, 0), name="NVIDIA A100"), "--hardware-compatible"),
    ({**L4, "hardware_compatibility": "ampere+"}, machine(cc=(9, 0)), None),
    ({**L4, "hardware_compatibility": "ampere+"}, machine(cc=(8, 0)), None),
    ({**L4, "hardware_compatibility": "ampere+"}, machine(cc=(7, 5), name="Tesla T4"), "Ampere and newer"),
    (L4, machine(version="11.0.0.114"), "is older"),
    ({**L4, "tensorrt_version": "8.6.1"}, machine(), "TensorRT 8 engine cannot run on a TensorRT 11"),
    ({**L4, "version_compatible": False}, machine(), "lean runtime only loads version-compatible"),
    ({**L4, "version_compatible": False}, machine(runtime="tensorrt"), None),
    ({**L4, "version_compatible": False}, machine(runtime="tensorrt", version="11.4.0.106"), "not version-compatible"),
    ({**L4, "hardware_compatibility": "turing+"}, machine(), "unknown hardware compatibility level"),
    ({"tensorrt_version": "11.1"}, machine(), "incomplete or malformed"),
    ({}, machine(), "incomplete or malformed"),
])
def test_compatibility_table(target, here, words):
    from serving.tensorrt_target import incompatibility

    reason = incompatibility(target, here)
    if words is None:
        assert reason is None
    else:
        assert reason is not None and words in reason, reason


def inspector(layers):
    return {"Layers": layers, "Bindings": ["image", "mask"]}


def layer(kind, fmt, name="l"):
    return {"Name": name, "LayerType": kind, "Inputs": [{"Format/Datatype": fmt}], "Outputs": [{"Format/Datatype": fmt}]}


FP16 = "Channel major FP16 format where channel % 8 == 0"
FP32 = "Row major linear FP32"


def test_engine_with_fp16_convolutions_passes():
    from pipeline.tensorrt_engine import fp16_problem, precision_summary

    layers = [layer("CaskConvolution", FP16)] * 195 + [layer("CaskConvolution", FP32)] * 12
    layers += [layer("Reformat", FP32), layer("Myelin", "Float"), layer("NoOp", "N/A due to dynamic shapes")]
    summary = precision_summary(inspector(layers))
    assert summary["convolutions"] == {"fp16": 195, "fp32": 12}
    assert fp16_problem(summary) is None


def test_engine_that_fell_back_to_fp32_fails():
    from pipeline.tensorrt_engine import fp16_problem, precision_summary

    layers = [layer("CaskConvolution", FP32)] * 200 + [layer("CaskConvolution", FP16)] * 7
    problem = fp16_problem(precision_summary(inspector(layers)))
    assert problem and "fell back to fp32" in problem and "3%" in problem


def test_engine_without_detailed_layer_information_fails():
    from pipeline.tensorrt_engine import fp16_problem, precision_summary

    problem = fp16_problem(precision_summary(inspector(["layer a", "layer b"])))
    assert problem and "no layer precisions" in problem


def test_engine_without_convolution_layers_is_judged_on_all_layers():
    from pipeline.tensorrt_engine import fp16_problem, precision_summary

    assert fp16_problem(precision_summary(inspector([layer("Myelin", "Half")] * 3 + [layer("kgen", "Float")]))) is None
    assert "fell back" in fp16_problem(precision_summary(inspector([layer("Myelin", "Float")] * 3)))


def test_engine_io_contract():
    from pipeline.tensorrt_engine import check_io

    good = {"input": {"name": "image", "dtype": "float", "min_shape": [1, 3, 384, 384], "max_shape": [4, 3, 384, 384]},
            "output": {"name": "mask", "dtype": "float"}}
    assert check_io(good, FAST_SIZE, 4) is None
    assert "output name" in check_io({**good, "output": {"name": "output0", "dtype": "float"}}, FAST_SIZE, 4)
    assert "max_shape" in check_io(good, FAST_SIZE, 8)


def test_engine_file_names():
    from pipeline.tensorrt_engine import engine_file

    assert engine_file("NVIDIA L4", False) == "model.nvidia-l4.fp16.plan"
    assert engine_file("NVIDIA L4", True) == "model.ampere-plus.fp16.plan"


@pytest.fixture
def bundle_with_engine(fast_bundle, tmp_path):
    """The fast bundle plus a TensorRT artifact whose plan this machine cannot run."""
    from pipeline.bundle_writer import file_record

    bundle = tmp_path / "with-engine"
    shutil.copytree(fast_bundle, bundle)
    plan = bundle / "model.nvidia-l4.fp16.plan"
    plan.write_bytes(b"not a real plan " * 64)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["artifacts"].insert(0, {
        **file_record(plan), "backend": "tensorrt", "precision": "fp16", "device": "cuda", "extra_files": [],
        "max_batch": 4, "target": L4,
        "io": {"input": {"name": "image", "dtype": "float"}, "output": {"name": "mask", "dtype": "float"}},
    })
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle


def test_tensorrt_backend_refuses_cleanly_without_a_gpu(bundle_with_engine):
    from serving.backends import BackendUnavailable, open_backend
    from serving.bundle import load_bundle

    bundle = load_bundle(bundle_with_engine)
    artifact = bundle.artifact("tensorrt")
    with pytest.raises(BackendUnavailable, match="cpu device"):
        open_backend(bundle, artifact, device="cpu")
    if has_cuda():
        pytest.skip("this machine has a GPU: the refusal without one cannot be shown here")
    with pytest.raises(BackendUnavailable) as caught:
        open_backend(bundle, artifact, device="auto")
    assert "no CUDA GPU" in str(caught.value) or "not installed" in str(caught.value)


def test_tensorrt_backend_says_which_runtime_is_missing(bundle_with_engine):
    """With neither TensorRT runtime importable, the reason names both (checked in a clean process)."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "sys.modules['tensorrt_lean'] = None; sys.modules['tensorrt'] = None\n"
        "from serving.backends import BackendUnavailable, open_backend\n"
        "from serving.bundle import load_bundle\n"
        f"b = load_bundle({str(bundle_with_engine)!r})\n"
        "try:\n    open_backend(b, b.artifact('tensorrt'))\n"
        "except BackendUnavailable as e:\n    print('REFUSED', e)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "REFUSED no TensorRT runtime is installed" in result.stdout, result.stdout + result.stderr
    assert "tensorrt_lean" in result.stdout and "Traceback" not in result.stderr


@pytest.mark.skipif(has_cuda(), reason="shows the fallback on a machine without a GPU")
def test_server_falls_back_from_an_unusable_engine(bundle_with_engine):
    import httpx

    from pipeline import samples
    from tests.server_process import start_server

    server = start_server(bundle_with_engine)
    try:
        skipped = [line for line in server.log_lines()
                   if line.get("message") == "artifact skipped" and line.get("backend") == "tensorrt"]
        assert skipped and ("no CUDA GPU" in skipped[0]["reason"] or "not installed" in skipped[0]["reason"])
        ready = [line for line in server.log_lines() if line.get("message") == "ready"]
        assert ready and ready[0]["backend"] == "onnxruntime"
        buffer = io.BytesIO()
        samples.photo("chelsea").save(buffer, "JPEG")
        response = httpx.post(f"{server.url}/v1/remove-background", content=buffer.getvalue(),
                              headers={"content-type": "image/jpeg"}, timeout=120)
        assert response.status_code == 200
    finally:
        assert server.stop() == 0


@pytest.mark.skipif(has_cuda(), reason="shows the refusal on a machine without a GPU")
def test_explicit_tensorrt_without_a_gpu_is_one_line(bundle_with_engine):
    from pipeline.bench import free_port

    result = run_cli("serve", "--artifacts", str(bundle_with_engine),
                     env={"INSPYRENET_BACKEND": "tensorrt", "PORT": str(free_port())}, timeout=300)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    assert "no CUDA GPU" in result.stderr or "not installed" in result.stderr, result.stderr[-2000:]


def test_build_skips_tensorrt_in_one_line_and_records_why(fast_bundle):
    log = (fast_bundle.parent / "build.stderr").read_text()
    lines = [line for line in log.splitlines() if "TensorRT artifact skipped" in line]
    assert len(lines) == 1, log[-2000:]
    manifest = json.loads((fast_bundle / "manifest.json").read_text())
    assert [a["backend"] for a in manifest["artifacts"]] == ["torchscript", "onnxruntime"]
    skipped = manifest["skipped_artifacts"]
    assert skipped[0]["backend"] == "tensorrt" and skipped[0]["reason"] in lines[0]
    islands = manifest["validation"]["fp16_islands"]
    assert islands["device"] == "cpu" and islands["worst_model_max_abs"] > 0


@pytest.mark.skipif(has_cuda(), reason="shows the failure on a machine that cannot build engines")
def test_require_tensorrt_fails_fast_in_one_line(tmp_path):
    result = run_cli("build", "--mode", "fast", "--checkpoint", "synthetic", "--out", str(tmp_path / "b"),
                     "--require-tensorrt", timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: TensorRT engine required (--require-tensorrt) but")
    assert "Traceback" not in result.stderr and not (tmp_path / "b").exists()


def test_contradictory_tensorrt_flags_are_refused(tmp_path):
    result = run_cli("build", "--checkpoint", "synthetic", "--out", str(tmp_path / "b"),
                     "--no-tensorrt", "--require-tensorrt", timeout=60)
    assert result.returncode == 1 and "contradict" in result.stderr


needs_tensorrt_build = pytest.mark.skipif(
    not has_cuda() or importlib.util.find_spec("torch_tensorrt") is None,
    reason="needs a CUDA GPU with torch-tensorrt and the TensorRT builder",
)


@pytest.mark.gpu
@needs_tensorrt_build
def test_engine_build_on_gpu_is_fp16_and_serves(tmp_path, photo_batch, eager_model):
    from pipeline.tensorrt_engine import TensorRTOptions

    result = run_cli("build", "--mode", "fast", "--checkpoint", "synthetic", "--out", str(tmp_path / "b"),
                     "--require-tensorrt", "--no-validate", timeout=3000)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    engine = next(a for a in manifest["artifacts"] if a["backend"] == "tensorrt")
    assert engine["precision"] == "fp16" and engine["target"]["version_compatible"] is True
    assert engine["precision_check"]["convolutions"].get("fp16", 0) > 0
    assert engine["io"]["input"]["name"] == "image" and engine["io"]["output"]["name"] == "mask"
    assert TensorRTOptions().max_batch == engine["max_batch"]
