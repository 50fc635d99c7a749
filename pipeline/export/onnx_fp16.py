"""The fp16-with-fp32-islands graph as ONNX: what TensorRT's builder compiles, exported and checked on CPU.

The graph is exported by the same dynamo exporter as the fp32 ONNX artifact,
from ``pipeline.export.mixed_precision``'s model, and goes into the bundle as
``model.fp16.onnx`` with the role ``tensorrt-source``: never served, the input
of ``inspyrenet build-engine`` on the GPU, which needs no torch.

Before it is accepted its types are checked the way a strongly typed
TensorRT network will read them: float32 input and output, no node that mixes
fp16 and fp32 inputs (a strongly typed network has no implicit promotion),
Softmax and LayerNormalization (islands) in fp32, and most convolutions with
fp16 weights. ONNX Runtime's CPU provider also runs it (the export check and
a parity row), but that run is not an fp16 overflow check: where ONNX Runtime
has no fp16 CPU kernel it computes in fp32 between casts and chains
consecutive such nodes in fp32, so an intermediate past 65504 can stay finite
there. The overflow check is the PyTorch row (pipeline.export.fp16_emulation).
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import BuildError
from pipeline.export.second_process import SecondProcess

FILE = "model.fp16.onnx"
LABEL = "onnxruntime-fp16"
FLOAT, FLOAT16 = 1, 10  # onnx.TensorProto.FLOAT, FLOAT16
ISLAND_OPS = ("Softmax", "LayerNormalization")
MIN_FP16_CONV_SHARE = 0.75


def export_fp16_onnx(state_dict, size: tuple[int, int], example, path: Path) -> dict[str, Any]:
    """Export the fp16-with-fp32-islands model to ``path`` (+ external data) and check its types."""
    from pipeline.export.formats import export_onnx
    from pipeline.export.mixed_precision import mixed_precision_model

    export_onnx(mixed_precision_model(state_dict, size), example, path)
    report = graph_types(path)
    problem = graph_problem(report)
    if problem:
        raise BuildError(f"the fp16 ONNX graph is not what TensorRT should build: {problem}")
    return {"graph_check": report}


def _export_from_checkpoint(checkpoint, size: tuple[int, int], example: np.ndarray, path: Path) -> dict[str, Any]:
    """``export_fp16_onnx`` from a checkpoint file: what the second process runs."""
    import torch

    from pipeline.checkpoint import load_state_dict
    from pipeline.export.model import expected_keys

    state = load_state_dict(checkpoint, expected_keys())
    return export_fp16_onnx(state, size, torch.from_numpy(example), path)


class SideBySideExport:
    """The fp16 graph exported in a second process, started now, while the caller exports the fp32 ones.

    It writes into a directory of its own inside ``staging`` (nothing half-written
    where the bundle's files are); ``write(path)`` waits for it and moves its files
    (the graph and its external data, which the graph names) into ``path``'s directory.
    """

    def __init__(self, checkpoint, size: tuple[int, int], example: np.ndarray, staging: Path):
        self.directory = Path(tempfile.mkdtemp(prefix=".fp16-export-", dir=staging))
        self.process = SecondProcess(_export_from_checkpoint, checkpoint, size, example, self.directory / FILE)

    @property
    def seconds(self) -> float | None:
        """How long the export took in its process (None until ``write`` returned)."""
        return self.process.seconds

    def write(self, path: Path) -> dict[str, Any]:
        report = self.process.result()
        for file in sorted(self.directory.iterdir()):
            file.rename(path.parent / file.name)
        self.directory.rmdir()
        return report

    def stop(self) -> None:
        self.process.stop()


def graph_types(path: Path) -> dict[str, Any]:
    """The types that matter to a strongly typed build, read from the graph (weights not loaded)."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path), load_external_data=False))
    graph = model.graph
    types: dict[str, int] = {}
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.type.HasField("tensor_type"):
            types[value.name] = value.type.tensor_type.elem_type
    for init in graph.initializer:
        types[init.name] = init.data_type
    floats = (FLOAT, FLOAT16)
    mixed, islands_not_fp32 = [], []
    conv_weights: Counter[str] = Counter()
    for node in graph.node:
        inputs = [types.get(name) for name in node.input if name]
        kinds = {t for t in inputs if t in floats}
        if node.op_type != "Cast" and kinds == {FLOAT, FLOAT16}:
            mixed.append(f"{node.op_type} {node.name}")
        if node.op_type in ISLAND_OPS and inputs and inputs[0] != FLOAT:
            islands_not_fp32.append(f"{node.op_type} {node.name}")
        if node.op_type == "Conv" and len(node.input) > 1:
            conv_weights[_PRECISION_NAMES.get(types.get(node.input[1]), "unknown")] += 1
    return {
        "inputs": {v.name: _type_name(types.get(v.name)) for v in graph.input},
        "outputs": {v.name: _type_name(types.get(v.name)) for v in graph.output},
        "nodes": len(graph.node),
        "mixed_precision_nodes": mixed,
        "islands_not_fp32": islands_not_fp32,
        "island_nodes": sum(1 for n in graph.node if n.op_type in ISLAND_OPS),
        "conv_weights": dict(conv_weights),
        "casts": sum(1 for n in graph.node if n.op_type == "Cast"),
        "weights": weight_bytes(graph.initializer),
    }


_ITEM_BYTES = {FLOAT: 4, FLOAT16: 2}


def weight_bytes(initializers) -> dict[str, int]:
    """Bytes of the graph's floating-point weights as stored, and as they would be in fp32: an engine
    whose plan is the size of the second kept its weights in fp32 (``tensorrt_inspection.fp16_problem``)."""
    stored = as_fp32 = 0
    for init in initializers:
        if init.data_type in _ITEM_BYTES:
            count = int(np.prod(init.dims, dtype=np.int64)) if len(init.dims) else 1
            stored += count * _ITEM_BYTES[init.data_type]
            as_fp32 += count * 4
    return {"bytes": stored, "fp32_bytes": as_fp32}


_PRECISION_NAMES: dict[int | None, str] = {FLOAT16: "fp16", FLOAT: "fp32"}
_TYPE_NAMES: dict[int | None, str] = {FLOAT: "float32", FLOAT16: "float16"}


def _type_name(elem_type: int | None) -> str:
    return _TYPE_NAMES.get(elem_type, str(elem_type))


def graph_problem(report: dict[str, Any]) -> str | None:
    """Why the graph is not the fp16-with-fp32-islands graph TensorRT should build, or None."""
    if set(report["inputs"].values()) != {"float32"} or set(report["outputs"].values()) != {"float32"}:
        return f"its input and output must be float32 (inputs {report['inputs']}, outputs {report['outputs']})"
    if report["mixed_precision_nodes"]:
        return (
            f"{len(report['mixed_precision_nodes'])} nodes mix fp16 and fp32 inputs, e.g. "
            f"{report['mixed_precision_nodes'][0]}: a strongly typed build has no implicit casts"
        )
    if report["islands_not_fp32"]:
        return f"fp32 islands run in half precision: {', '.join(report['islands_not_fp32'][:3])}"
    convs = report["conv_weights"]
    share = convs.get("fp16", 0) / max(1, sum(convs.values()))
    if share < MIN_FP16_CONV_SHARE:
        return f"only {share:.0%} of its convolutions have fp16 weights ({convs})"
    return None
