"""The int8 CPU artifact: quantized by the build, gated by its own parity row, served only after it passed."""

from __future__ import annotations

import json
from collections import Counter

import httpx
import pytest

from pipeline.bundle_writer import file_entry
from pipeline.export import onnx_int8
from pipeline.parity import references as parity_references
from pipeline.parity.check import DEFAULT_LIMITS, Limits, run_backend
from pipeline.parity.report import record_in_manifest
from serving.backends import INT8_LABEL
from serving.backends.selection import candidates
from serving.bundle import load_bundle, write_manifest
from tests.harness import linked_copy, run_cli, start_server

pytest.importorskip("onnxruntime.quantization")


def parity_row(bundle_dir, label: str) -> dict:
    report = json.loads((bundle_dir / "parity" / "report.json").read_text())
    return next(b for b in report["backends"] if b["label"] == label)


def test_the_build_writes_the_int8_artifact_with_its_own_parity_row(fast_bundle, fast_build_log):
    import onnx

    bundle = load_bundle(fast_bundle, verify=True)
    int8, fp32 = bundle.artifact(INT8_LABEL), bundle.artifact("onnxruntime")
    assert (int8.file, int8.precision, int8.device, int8.optional) == (onnx_int8.FILE, "int8", "cpu", True)
    quantization = int8.quantization
    assert quantization["method"] == "static"
    assert quantization["format"] == "QDQ"
    assert quantization["per_channel"]
    flags = onnx_int8.cpu_flags()
    assert quantization["reduce_range"] is (not onnx_int8.has_vnni(flags))
    assert quantization["built_on"] == onnx_int8.instruction_set(flags)
    assert int8.total_bytes <= fp32.total_bytes / 2
    assert "quantize int8 static" in fast_build_log

    # Weights are int8 only where the quantizer was told (every Conv, every MatMul with a weight);
    # LayerNormalization's scale and bias, and every other op's constants, stay fp32.
    graph = onnx.load(str(fast_bundle / int8.file), load_external_data=False).graph
    constants = {init.name: init.data_type for init in graph.initializer}
    dequantized = {
        n.output[0]: constants[n.input[0]]
        for n in graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in constants
    }
    int8_weights = Counter(
        n.op_type for n in graph.node for i in n.input if dequantized.get(i) == onnx.TensorProto.INT8
    )
    convs = sum(n.op_type == "Conv" for n in graph.node)
    assert int8_weights == {"Conv": convs, "MatMul": quantization["weight_matmuls"]}
    norms = [n for n in graph.node if n.op_type == "LayerNormalization"]
    assert norms
    assert all(constants[name] == onnx.TensorProto.FLOAT for n in norms for name in n.input[1:])

    row = parity_row(fast_bundle, INT8_LABEL)
    assert (row["limits_class"], row["optional"], row["status"]) == ("int8", True, int8.parity.status)
    report = json.loads((fast_bundle / "parity" / "report.json").read_text())
    assert report["limits"]["int8"] == report["limits"]["fp16"]
    assert any("synthetic" in note for note in report["notes"])
    # The optional row does not decide the bundle's verdict, whatever it says.
    assert report["passed"]
    assert bundle.manifest.validation.status == "passed"
    if int8.parity.status == "failed":
        assert INT8_LABEL not in [a.name for a in candidates(bundle, "auto")[0]]


def loosened_int8_limits() -> dict[str, dict[str, Limits]]:
    """Limits that pass any int8 mask (the way to time or serve a synthetic bundle's int8 graph on purpose)."""
    limits = {cls: dict(refs) for cls, refs in DEFAULT_LIMITS.items()}
    anything = Limits(max_mean_abs=1.0, max_p999_abs=1.0, max_abs=1.0, min_iou=0.0, max_off_share=1.0)
    limits["int8"] = {"model": anything, "end_to_end": anything}
    return limits


def plant_quantized_layernorm_inputs(path) -> int:
    """Quantize every LayerNormalization's input too (8 bits on its output's calibrated range): the residual
    stream it normalises is far wider, so it clips. Returns how many were planted."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    nodes, planted = [], 0
    for node in model.graph.node:
        quantize = next((c for c in consumers.get(node.output[0], []) if c.op_type == "QuantizeLinear"), None)
        if node.op_type == "LayerNormalization" and quantize is not None:
            source, scale, zero = node.input[0], quantize.input[1], quantize.input[2]
            nodes += [
                helper.make_node("QuantizeLinear", [source, scale, zero], [f"{source}.planted.q"]),
                helper.make_node("DequantizeLinear", [f"{source}.planted.q", scale, zero], [f"{source}.planted"]),
            ]
            node.input[0] = f"{source}.planted"
            planted += 1
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    path.unlink()  # a hard link into the shared bundle: never write through it
    onnx.save(model, str(path))
    return planted


def record_and_serve(copy, row: dict) -> str:
    """Record ``row`` as the int8 artifact's parity (as validate does), then ask a fresh server what it serves."""
    record_in_manifest(copy, {"backends": [row], "passed": True, "created_at": "2026-12-03T00:00:00+00:00"}, copy)
    assert load_bundle(copy).artifact(INT8_LABEL).parity.status == row["status"]
    server = start_server(copy, env={"INSPYRENET_WORKERS": "1"})
    try:
        ready = next(line for line in server.log_lines() if line.get("message") == "ready")
        assert httpx.get(f"{server.url}/health", timeout=10).text == f"ok {ready['artifact']} cpu"
        return ready["artifact"]
    finally:
        server.stop()


def test_the_gate_refuses_a_planted_int8_and_the_server_follows_its_verdict(fast_bundle, tmp_path):
    """A planted int8 graph (LayerNorm inputs quantized too) is refused under the int8 limits; the server serves
    int8 only after a pass and falls back to fp32 after a refusal. On the synthetic checkpoint the build's own
    int8 graph fails those limits as well (test above): only official weights can show the gate tell them
    apart, so the pass here comes from limits loosened on purpose."""
    copy = linked_copy(fast_bundle, tmp_path / "bundle")
    bundle = load_bundle(copy)
    # The photos of the references the build stored: no torch model needed, and damage shows on any photo.
    cases = [case for case in parity_references.load(bundle) if case.image.note == "photo"]
    assert len(cases) == 5
    passed = run_backend(bundle, bundle.artifact(INT8_LABEL), cases, loosened_int8_limits())
    assert passed["status"] == "passed", passed["summary"]
    assert record_and_serve(copy, passed) == INT8_LABEL

    assert plant_quantized_layernorm_inputs(copy / onnx_int8.FILE) > 20
    entry = file_entry(copy / onnx_int8.FILE)
    manifest = load_bundle(copy, verify=False).manifest
    for artifact in manifest.artifacts:
        if artifact.name == INT8_LABEL:
            artifact.sha256, artifact.bytes = entry.sha256, entry.bytes
    write_manifest(copy, manifest)
    bundle = load_bundle(copy, verify=True)
    planted = run_backend(bundle, bundle.artifact(INT8_LABEL), cases, DEFAULT_LIMITS)
    assert planted["status"] == "failed", planted["summary"]
    assert planted["summary"].startswith("5/5 images fail"), planted["summary"]
    assert planted["limits_class"] == "int8"
    assert record_and_serve(copy, planted) == "onnxruntime"
    result = run_cli("serve", "--artifacts", str(copy), "--backend", INT8_LABEL, "--port", "18998")
    assert result.returncode == 1
    assert "refusing to serve it" in result.stderr
    assert "Traceback" not in result.stderr
