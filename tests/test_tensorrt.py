"""TensorRT around the engine: compatibility rules, the engine checks, build's skip/require, serving fallback.

The engine build itself needs a CUDA GPU with TensorRT (marked, skipped here).
"""

from __future__ import annotations

import importlib.util
import io
import json

import pytest

from tests.conftest import FAST_SIZE, has_cuda, run_cli
from tests.test_build import linked_copy

L4 = {
    "gpu_name": "NVIDIA L4",
    "compute_capability": "8.9",
    "hardware_compatibility": "none",
    "version_compatible": True,
    "lean_runtime_excluded": True,
    "tensorrt_version": "11.1.0.106",
}
EMBEDDED = {**L4, "lean_runtime_excluded": False}  # version-compatible, lean runtime inside the plan


def machine(runtime="tensorrt_lean", version="11.1.0.106", cc=(8, 9), name="NVIDIA L4"):
    from serving.backends.tensorrt_target import Machine

    return Machine(runtime, version, cc, name)


@pytest.mark.parametrize(
    "target, here, words",
    [
        (L4, machine(), None),
        (L4, machine(cc=None), "no CUDA GPU"),
        # Hardware: level none = that GPU model only; same-compute-capability; ampere+.
        (L4, machine(cc=(9, 0), name="NVIDIA H200"), "built for compute capability 8.9"),
        (L4, machine(cc=(8, 0), name="NVIDIA A100"), "--hardware-compatible"),
        (L4, machine(cc=(8, 9), name="NVIDIA RTX 4090"), "that GPU model only"),
        ({**L4, "hardware_compatibility": "same-compute-capability"}, machine(cc=(8, 9), name="NVIDIA RTX 4090"), None),
        (
            {**L4, "hardware_compatibility": "same-compute-capability"},
            machine(cc=(8, 6), name="NVIDIA A10"),
            "built for compute capability 8.9",
        ),
        ({**L4, "hardware_compatibility": "ampere+"}, machine(cc=(9, 0)), None),
        ({**L4, "hardware_compatibility": "ampere+"}, machine(cc=(8, 0)), None),
        ({**L4, "hardware_compatibility": "ampere+"}, machine(cc=(7, 5), name="Tesla T4"), "Ampere and newer"),
        # Version-compatible, lean runtime excluded (this project's builds): exactly the same version.
        (L4, machine(version="11.4.0.106"), "needs a lean runtime of TensorRT 11.1.0.106"),
        (L4, machine(version="11.1.0.107"), "needs a lean runtime of TensorRT 11.1.0.106"),
        (L4, machine(version="11.0.0.114"), "needs a lean runtime"),
        (
            {key: v for key, v in L4.items() if key != "lean_runtime_excluded"},
            machine(version="11.4.0.106"),
            "needs a lean runtime",
        ),  # older manifests: their plans excluded the lean runtime
        # Version-compatible, lean runtime embedded: same or later, same or next major, never older.
        (EMBEDDED, machine(version="11.4.0.106"), None),
        ({**EMBEDDED, "tensorrt_version": "10.16.1.11"}, machine(), None),  # TensorRT documents 10 -> 11
        (EMBEDDED, machine(version="11.0.0.114"), "is older"),
        ({**EMBEDDED, "tensorrt_version": "8.6.1.6"}, machine(), "TensorRT 8 engine cannot run on a TensorRT 11"),
        # Not version-compatible: the full runtime of exactly the same four-part version.
        ({**L4, "version_compatible": False}, machine(), "lean runtime only loads version-compatible"),
        ({**L4, "version_compatible": False}, machine(runtime="tensorrt"), None),
        (
            {**L4, "version_compatible": False},
            machine(runtime="tensorrt", version="11.1.0.107"),
            "not version-compatible",
        ),
        (
            {**L4, "version_compatible": False},
            machine(runtime="tensorrt", version="11.4.0.106"),
            "not version-compatible",
        ),
        ({**L4, "hardware_compatibility": "turing+"}, machine(), "unknown hardware compatibility level"),
        ({"tensorrt_version": "11.1"}, machine(), "incomplete or malformed"),
        ({}, machine(), "incomplete or malformed"),
    ],
)
def test_compatibility_table(target, here, words):
    from serving.backends.tensorrt_target import target_problem

    reason = target_problem(target, here)
    if words is None:
        assert reason is None
    else:
        assert reason is not None and words in reason, reason


def inspector(layers):
    return {"Layers": layers, "I/O Tensors": [{"Name": "image"}, {"Name": "mask"}]}


def layer(kind, inputs, outputs=None, weights=None, key="Format/Datatype"):
    """An inspector layer entry: TensorRT 10.x writes 'Format/Datatype', 11.x a separate 'DataType'."""
    entry = {
        "Name": "l",
        "LayerType": kind,
        "Inputs": [{key: t} for t in inputs],
        "Outputs": [{key: t} for t in (outputs or inputs)],
    }
    if weights:
        entry["Weights"] = {"Type": weights, "Count": 9}
    return entry


FP16 = "Channel major FP16 format where channel % 8 == 0"
FP32 = "Row major linear FP32"


def realistic_engine(fp16_convs: int, fp32_convs: int, key="Format/Datatype", half=FP16, single=FP32):
    """InSPyReNet's shape: about half the fp16 convolutions feed an fp32 island through a fused cast."""
    fused = fp16_convs // 2
    layers = [layer("CaskConvolution", [half], [half], "Half", key)] * (fp16_convs - fused)
    layers += [layer("CaskConvolution", [half], [single], "Half", key)] * fused  # fused cast: fp32 out
    layers += [layer("CaskConvolution", [single], [single], "Float", key)] * fp32_convs  # SICA islands
    layers += [
        layer("Reformat", [half], [single], key=key),
        layer("Cast", [single], [half], key=key),
        layer("Myelin", [half, single], [single], key=key),
        layer("NoOp", ["N/A due to dynamic shapes"]),
    ]
    return inspector(layers)


def test_correct_engine_passes_with_fused_casts():
    from pipeline.export.tensorrt_engine import fp16_problem, precision_summary

    summary = precision_summary(realistic_engine(195, 15))
    assert summary["convolutions"] == {"fp16": 195, "fp32": 15}
    assert fp16_problem(summary) is None


def test_correct_engine_passes_in_tensorrt_11_inspector_format():
    from pipeline.export.tensorrt_engine import fp16_problem, precision_summary

    summary = precision_summary(realistic_engine(195, 15, key="DataType", half="Half", single="Float"))
    assert summary["convolutions"] == {"fp16": 195, "fp32": 15} and fp16_problem(summary) is None


def test_output_precision_alone_would_have_failed_the_correct_engine():
    """The old gate (counting convolution outputs) read this correct engine as 53% fp16."""
    from pipeline.export.tensorrt_engine import tensor_precision

    layers = realistic_engine(195, 15)["Layers"]
    convs = [entry for entry in layers if entry["LayerType"] == "CaskConvolution"]
    share = sum(tensor_precision(entry["Outputs"][0]) == "fp16" for entry in convs) / len(convs)
    assert share < 0.75


def test_all_fp32_engine_fails():
    from pipeline.export.tensorrt_engine import fp16_problem, precision_summary

    problem = fp16_problem(precision_summary(realistic_engine(0, 210)))
    assert problem and "fell back to fp32" in problem and "0%" in problem
    problem = fp16_problem(precision_summary(realistic_engine(0, 210, key="DataType", half="Half", single="Float")))
    assert problem and "fell back to fp32" in problem


def test_convolution_without_input_types_is_judged_by_its_weights():
    from pipeline.export.tensorrt_engine import layer_precision

    assert (
        layer_precision({"LayerType": "CaskConvolution", "Inputs": [{}], "Weights": {"Type": "Half"}}, True) == "fp16"
    )
    assert layer_precision({"LayerType": "CaskConvolution", "Weights": {"Type": "Float"}}, True) == "fp32"


def test_engine_without_detailed_layer_information_fails():
    from pipeline.export.tensorrt_engine import fp16_problem, precision_summary

    problem = fp16_problem(precision_summary(inspector(["layer a", "layer b"])))
    assert problem and "no layer precisions" in problem


def test_engine_of_myelin_regions_is_judged_on_their_inputs():
    from pipeline.export.tensorrt_engine import fp16_problem, precision_summary

    regions = [layer("Myelin", ["Half", "Float"], ["Float"], key="DataType")] * 3
    assert fp16_problem(precision_summary(inspector(regions + [layer("kgen", ["Float"])]))) is None
    assert "fell back" in fp16_problem(precision_summary(inspector([layer("Myelin", ["Float"])] * 3)))


def test_datatype_names_bf16_before_float():
    from pipeline.export.tensorrt_engine import datatype, tensor_dtype

    assert datatype("BFloat16") == "bf16" and datatype("Half") == "fp16" and datatype("Float") == "fp32"
    assert datatype("Row major linear BF16 format (kLINEAR)") == "bf16"
    assert tensor_dtype("DataType.BF16") == "bfloat16" and tensor_dtype("DataType.FLOAT") == "float32"


def test_builder_settings_ask_for_the_l4_route():
    from pipeline.export.tensorrt_engine import TensorRTOptions, builder_settings

    settings = builder_settings(TensorRTOptions(max_batch=4), FAST_SIZE)
    assert {"VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME"} <= set(settings["set_flags"])
    assert settings["cleared_flags"] == ["TF32"] and settings["profiling_verbosity"] == "DETAILED"
    assert settings["profile"]["image"] == {"min": [1, 3, 384, 384], "opt": [1, 3, 384, 384], "max": [4, 3, 384, 384]}
    assert settings["hardware_compatibility_level"] == "NONE"
    assert (
        builder_settings(TensorRTOptions(hardware_compatible=True), FAST_SIZE)["hardware_compatibility_level"]
        == "AMPERE_PLUS"
    )


def test_engine_io_contract():
    from pipeline.export.tensorrt_engine import io_problem

    good = {
        "input": {"name": "image", "dtype": "float32", "min_shape": [1, 3, 384, 384], "max_shape": [4, 3, 384, 384]},
        "output": {"name": "mask", "dtype": "float32"},
    }
    assert io_problem(good, FAST_SIZE, 4) is None
    assert "output name" in io_problem({**good, "output": {"name": "output0", "dtype": "float32"}}, FAST_SIZE, 4)
    assert "output dtype" in io_problem({**good, "output": {"name": "mask", "dtype": "float16"}}, FAST_SIZE, 4)
    assert "max_shape" in io_problem(good, FAST_SIZE, 8)


def test_engine_file_names():
    from pipeline.export.tensorrt_engine import engine_file

    assert engine_file("NVIDIA L4", False) == "model.nvidia-l4.fp16.plan"
    assert engine_file("NVIDIA L4", True) == "model.ampere-plus.fp16.plan"


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
            "target": L4,
            "io": {"input": {"name": "image", "dtype": "float32"}, "output": {"name": "mask", "dtype": "float32"}},
        },
    )
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
        skipped = [
            line
            for line in server.log_lines()
            if line.get("message") == "artifact skipped" and line.get("backend") == "tensorrt"
        ]
        assert skipped and ("no CUDA GPU" in skipped[0]["reason"] or "not installed" in skipped[0]["reason"])
        ready = [line for line in server.log_lines() if line.get("message") == "ready"]
        assert ready and ready[0]["backend"] == "onnxruntime"
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
    from pipeline.bench.serve_bench import free_port

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


def test_build_skips_tensorrt_in_one_line_and_records_why(fast_bundle):
    log = (fast_bundle.parent / "build.stderr").read_text()
    lines = [line for line in log.splitlines() if "TensorRT artifact skipped" in line]
    assert len(lines) == 1, log[-2000:]
    manifest = json.loads((fast_bundle / "manifest.json").read_text())
    assert [a["file"] for a in manifest["artifacts"]] == ["model.ts", "model.onnx", "model.fp16.onnx"]
    skipped = manifest["skipped_artifacts"]
    assert skipped[0]["backend"] == "tensorrt" and skipped[0]["reason"] in lines[0]
    islands = manifest["validation"]["fp16_islands"]
    assert islands["device"] == "cpu" and islands["worst_model_max_abs"] > 0
    assert islands["execution"]["mode"] in ("native", "emulated") and islands["execution"]["cpu_capability"]


def test_bundle_carries_the_fp16_graph_tensorrt_compiles(fast_bundle):
    """model.fp16.onnx: typed as a strongly typed build needs it, checked on CPU, never served."""
    from pipeline.export.onnx_fp16 import graph_problem, graph_types
    from serving.backends.selection import candidates
    from serving.bundle import load_bundle

    bundle = load_bundle(fast_bundle)
    source = bundle.by_role("tensorrt-source")
    assert source.file == "model.fp16.onnx" and source.precision == "fp16" and not source.servable
    assert [e.file for e in source.extra_files] == ["model.fp16.onnx.data"]
    report = graph_types(fast_bundle / source.file)
    assert graph_problem(report) is None and report == source.to_json()["graph_check"]
    assert report["inputs"] == {"image": "float32"} and report["outputs"] == {"mask": "float32"}
    assert report["mixed_precision_nodes"] == [] and report["islands_not_fp32"] == []
    assert report["conv_weights"]["fp16"] > 3 * report["conv_weights"].get("fp32", 0)
    assert source.export_check.max_abs_diff > 0  # it really runs in half precision
    assert source.parity.status == "passed"
    chosen, _ = candidates(bundle, "auto")
    assert [a.file for a in chosen] == ["model.onnx", "model.ts"]
    assert bundle.artifact("onnxruntime").file == "model.onnx"


def test_fp32_graph_is_not_accepted_as_the_engine_source(fast_bundle):
    from pipeline.export.onnx_fp16 import graph_problem, graph_types

    assert "fp16 weights" in graph_problem(graph_types(fast_bundle / "model.onnx"))


def test_graph_check_finds_a_node_that_mixes_precisions(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from pipeline.export.onnx_fp16 import graph_problem, graph_types

    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["image"], ["half"], to=TensorProto.FLOAT16),
            helper.make_node("Add", ["half", "image"], ["sum"], name="add"),
            helper.make_node("Cast", ["sum"], ["mask"], to=TensorProto.FLOAT),
        ],
        "mixed",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 3, 4, 4])],
        value_info=[helper.make_tensor_value_info("half", TensorProto.FLOAT16, [1, 3, 4, 4])],
    )
    onnx.save(helper.make_model(graph), tmp_path / "mixed.onnx")
    report = graph_types(tmp_path / "mixed.onnx")
    assert report["mixed_precision_nodes"] == ["Add add"]
    assert "mix fp16 and fp32" in graph_problem(report)


@pytest.mark.skipif(has_cuda(), reason="shows the skip on a machine that cannot build engines")
def test_build_engine_without_tensorrt_skips_or_fails_in_one_line(fast_bundle, tmp_path):
    bundle = linked_copy(fast_bundle, tmp_path / "bundle")
    before = (bundle / "manifest.json").read_bytes()
    result = run_cli("build-engine", str(bundle), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "TensorRT artifact skipped: the TensorRT builder (tensorrt-cu12) is not installed" in result.stderr
    assert (bundle / "manifest.json").read_bytes() == before
    result = run_cli("build-engine", str(bundle), "--require-tensorrt", timeout=300)
    assert result.returncode == 1 and result.stdout == ""  # before any work: the GPU job fails at once
    assert result.stderr.startswith("error: TensorRT engine required (--require-tensorrt)")
    assert result.stderr.count("\n") == 1, result.stderr


def test_build_engine_needs_the_fp16_graph_and_stored_references(fast_bundle, tmp_path):
    bundle = linked_copy(fast_bundle, tmp_path / "bundle")
    manifest = json.loads((bundle / "manifest.json").read_text())
    without_refs = {**manifest}
    without_refs.pop("parity_references")
    (bundle / "manifest.json").write_text(json.dumps(without_refs))
    result = run_cli("build-engine", str(bundle), timeout=300)
    assert result.returncode == 1 and "no stored parity references" in result.stderr
    manifest["artifacts"] = [a for a in manifest["artifacts"] if a.get("role") != "tensorrt-source"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    result = run_cli("build-engine", str(bundle), timeout=300)
    assert result.returncode == 1 and "no fp16 ONNX graph" in result.stderr and "Traceback" not in result.stderr


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
    assert "Traceback" not in result.stderr and not (tmp_path / "b").exists()


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
    assert result.returncode == 1 and "contradict" in result.stderr


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
    assert engine["precision"] == "fp16" and engine["target"]["version_compatible"] is True
    assert engine["target"]["lean_runtime_excluded"] is True and engine["target"]["tf32"] is False
    assert engine["precision_check"]["convolutions"].get("fp16", 0) > 0
    assert engine["io"]["input"]["name"] == "image" and engine["io"]["output"]["name"] == "mask"
    assert TensorRTOptions().max_batch == engine["max_batch"]
    assert engine["parity"]["status"] == "passed" and engine["parity"]["references"] == "stored in the bundle"


@pytest.mark.skipif(has_cuda(), reason="shows the fallback on a machine without a GPU")
def test_a_backend_whose_warm_up_fails_is_skipped_for_the_next(fast_bundle, tmp_path):
    """The ONNX artifact loads but gives NaN at warm-up: the worker closes it and serves TorchScript."""
    import onnx
    from onnx import TensorProto, helper

    from pipeline.bundle_writer import file_entry
    from tests.server_process import start_server

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
    server = start_server(bundle, block_torch=False)  # TorchScript is the fallback
    try:
        skipped = [
            line
            for line in server.log_lines()
            if line.get("message") == "artifact skipped" and line.get("backend") == "onnxruntime"
        ]
        assert skipped and "warm-up failed: the warm-up output is not finite" in skipped[0]["reason"]
        ready = [line for line in server.log_lines() if line.get("message") == "ready"]
        assert ready and ready[0]["backend"] == "torchscript"
    finally:
        assert server.stop() == 0
