"""A toy bundle with the real contract: a tiny ONNX model, (N, 3, 384, 384) -> (N, 1, 384, 384).

Written by the pipeline's own BundleWriter with a typed manifest, so everything that
reads bundles (the store, the server's gateway, parameters, limits, CORS, the API key)
can be tested in seconds without the real model. The "mask" is the image's mean over
its channels, scaled to 0..1 per sample (min/max, as the real model's output is): cheap,
deterministic, with fully transparent, fully opaque and soft pixels in every photo.
"""

from __future__ import annotations

from pathlib import Path

SIZE = (384, 384)
CHECKPOINT_SHA256 = "0" * 64


def toy_manifest(artifacts: list, mode: str = "fast", created_at: str = "2026-01-01T00:00:00+00:00"):
    from serving.manifest import CheckpointRecord, InputSpec, Manifest, OutputSpec, Validation

    height, width = SIZE
    return Manifest.new(
        mode=mode,
        created_at=created_at,
        production_ready=False,
        checkpoint=CheckpointRecord(source="toy", sha256=CHECKPOINT_SHA256, kind="toy"),
        input=InputSpec(name="image", shape=["N", 3, height, width], dtype="float32"),
        output=OutputSpec(name="mask", shape=["N", 1, height, width], dtype="float32"),
        artifacts=artifacts,
        skipped_artifacts=[],
        validation=Validation(status="skipped", reason="toy model"),
    )


def write_toy_onnx(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    height, width = SIZE
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["image", "channels"], ["mean"], keepdims=1),
            helper.make_node("ReduceMin", ["mean", "sample"], ["low"], keepdims=1),
            helper.make_node("ReduceMax", ["mean", "sample"], ["high"], keepdims=1),
            helper.make_node("Sub", ["mean", "low"], ["shifted"]),
            helper.make_node("Sub", ["high", "low"], ["span"]),
            helper.make_node("Add", ["span", "eps"], ["divisor"]),
            helper.make_node("Div", ["shifted", "divisor"], ["mask"]),
        ],
        "toy-mask",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, height, width])],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", 1, height, width])],
        initializer=[
            helper.make_tensor("channels", TensorProto.INT64, [1], [1]),
            helper.make_tensor("sample", TensorProto.INT64, [3], [1, 2, 3]),
            helper.make_tensor("eps", TensorProto.FLOAT, [], [1e-6]),
        ],
    )
    # IR 10, as the exporter writes: onnx's default (its newest) is past what the served ONNX Runtime reads.
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), path)


def build_toy_bundle(out: Path, max_batch: int = 4) -> Path:
    from pipeline.bundle_writer import BundleWriter

    with BundleWriter(out) as writer:
        write_toy_onnx(writer.path("model.onnx"))
        artifact = writer.artifact("model.onnx", "onnxruntime", "fp32", "any", max_batch=max_batch)
        return writer.commit(toy_manifest([artifact]))


def small_bundle(root: Path, payload: bytes = b"weights v1", created_at: str = "2026-11-28T10:00:00+00:00") -> Path:
    """A real bundle (written by the pipeline's writer) with a tiny artifact: the store cares about files."""
    from pipeline.bundle_writer import BundleWriter
    from serving.manifest import CheckpointRecord

    with BundleWriter(root) as writer:
        writer.path("model.onnx").write_bytes(payload)
        writer.path("model.onnx.data").write_bytes(payload * 3)
        manifest = toy_manifest([writer.artifact("model.onnx", "onnxruntime", "fp32", "any")], created_at=created_at)
        manifest.checkpoint = CheckpointRecord(source="synthetic:0", sha256="ab" * 32)
        (writer.staging / "parity").mkdir()
        (writer.staging / "parity" / "report.json").write_text('{"passed": true}')
        writer.commit(manifest)
    return root
