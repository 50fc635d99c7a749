"""Inspect and gate a built TensorRT engine with the runtime that serves it, without torch.

An engine is accepted only when the lean runtime (what the serving image runs)
opens it, its I/O is the bundle's contract (``image`` float32 (1..N, 3, H, W) ->
``mask`` float32) and it really is fp16: judged from the engine inspector's
per-layer listing (TensorRT 10's and 11's field names) and, where fused regions
hide the listing's fp16, from the plan's size against its weights in fp16 and
fp32 (``fp16_problem``); the validation's fp16 parity row follows. Only
``describe_engine`` needs TensorRT and a GPU; the rules run and are tested on CPU.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.errors import BuildError

INPUT_NAME = "image"
OUTPUT_NAME = "mask"
# Convolutions carry most of InSPyReNet's work. In the fp16 graph 195 of the 210
# ONNX Conv nodes have fp16 weights (the rest are fp32 islands: SICA's key/value
# convolutions on the fp32 context). An engine below this share of fp16
# convolutions was not really built in half precision.
MIN_FP16_CONV_SHARE = 0.75
MIN_FP16_LAYER_SHARE = 0.5  # used only when the inspector names no convolution layer
# Layers that only move or convert data: their types say nothing about the compute precision.
BOOKKEEPING_LAYERS = {"reformat", "noop", "shuffle", "constant", "identity", "cast", "slice", "concatenation"}


def serving_runtime():
    """The lean runtime module, which is what serves the engine (serving.backends.tensorrt prefers it).

    The plan is built with the lean runtime excluded, which TensorRT documents
    as needing a lean runtime of the same version to run (``IRuntime::loadRuntime``);
    the build checks the engine with that runtime, so an engine that passes is
    one the server can open.
    """
    import tensorrt as trt

    try:
        import tensorrt_lean
    except ImportError as exc:
        raise BuildError(
            f"the TensorRT lean runtime (tensorrt-lean-cu12=={trt.__version__}) is not installed: the engine "
            f"is checked with the runtime that serves it ({exc})"
        ) from None
    if str(tensorrt_lean.__version__) != str(trt.__version__):
        raise BuildError(
            f"the lean runtime is TensorRT {tensorrt_lean.__version__} and the builder {trt.__version__}: "
            "an engine built with the lean runtime excluded needs the same version (constraints/cuda12.txt)"
        )
    return tensorrt_lean


def lean_library(lean) -> Path:
    """The lean runtime's shared library (``libnvinfer_lean.so.<major>``) that ``lean`` loads."""
    import tensorrt_lean_libs

    major = str(lean.__version__).split(".")[0]
    path = Path(tensorrt_lean_libs.__file__).parent / f"libnvinfer_lean.so.{major}"
    if not path.is_file():
        raise BuildError(f"the lean runtime's library is missing: {path}")
    return path


def describe_engine(plan: bytes, size: tuple[int, int], opt_batch: int = 1) -> dict[str, Any]:
    """I/O tensors from the lean runtime, and the inspector's per-layer information (needs TensorRT and a GPU).

    The lean Python module has no engine inspector binding, so the layers are
    read through the builder's bindings with the same lean library loaded
    (``Runtime.load_runtime``), the way Polygraphy's ``--load-runtime`` does.
    """
    import tensorrt as trt

    lean = serving_runtime()
    engine = open_engine(lean.Runtime(lean.Logger(lean.Logger.ERROR)), plan, "the lean runtime")
    io = engine_io(engine, lean)
    # The runtime ``load_runtime`` returns needs its parent runtime and that one's logger alive (the
    # binding keeps neither, as trtexec's sampleEngines.cpp does by hand): held here, dropped after it.
    logger = trt.Logger(trt.Logger.ERROR)
    parent = trt.Runtime(logger)
    loaded = parent.load_runtime(str(lean_library(lean)))
    if loaded is None:
        raise BuildError(f"TensorRT could not load the lean runtime library {lean_library(lean)}")
    try:
        layers = _layers(trt, loaded, plan, io["input"]["name"], (opt_batch, 3, *size))
    finally:
        del loaded  # the loaded runtime first (everything opened from it died in _layers), then its parent
        del parent, logger
    return {"io": io, "layers": layers, "checked_with": f"tensorrt_lean {lean.__version__}"}


def _layers(trt, runtime, plan: bytes, input_name: str, shape: tuple[int, ...]) -> Any:
    """The inspector's per-layer JSON of ``plan`` opened by ``runtime``, at the input ``shape``."""
    inspected = open_engine(runtime, plan, "the lean runtime loaded by the builder")
    context = inspected.create_execution_context()
    context.set_input_shape(input_name, shape)
    inspector = inspected.create_engine_inspector()
    inspector.execution_context = context
    return json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))


def open_engine(runtime, plan: bytes, which: str):
    if hasattr(runtime, "engine_host_code_allowed"):
        runtime.engine_host_code_allowed = True
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise BuildError(f"{which} cannot deserialise the engine just built: the server could not open it")
    return engine


def engine_io(engine, trt) -> dict[str, Any]:
    """The engine's input and output tensors: name, dtype, shape, and the input's profile shapes."""
    io = {}
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        entry = {
            "name": name,
            "dtype": tensor_dtype(str(engine.get_tensor_dtype(name))),
            "shape": list(engine.get_tensor_shape(name)),
        }
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
            low, opt, high = engine.get_tensor_profile_shape(name, 0)
            entry.update(min_shape=list(low), opt_shape=list(opt), max_shape=list(high))
            io["input"] = entry
        else:
            io["output"] = entry
    return io


def tensor_dtype(text: str) -> str:
    """'DataType.FLOAT' -> 'float32', 'DataType.HALF' -> 'float16', 'DataType.BF16' -> 'bfloat16'."""
    name = text.split(".")[-1].lower()
    return {
        "float": "float32",
        "half": "float16",
        "bf16": "bfloat16",
        "int8": "int8",
        "int32": "int32",
        "int64": "int64",
        "bool": "bool",
    }.get(name, name)


def io_problem(io: dict[str, Any], size: tuple[int, int], max_batch: int) -> str | None:
    """Whether the engine's I/O is the fixed contract: image float32 (1..N,3,H,W) -> mask float32 (N,1,H,W)."""
    height, width = size
    expected = {
        ("input", "name"): INPUT_NAME,
        ("input", "dtype"): "float32",
        ("output", "name"): OUTPUT_NAME,
        ("output", "dtype"): "float32",
        ("input", "min_shape"): [1, 3, height, width],
        ("input", "max_shape"): [max_batch, 3, height, width],
    }
    for (side, field), want in expected.items():
        have = io.get(side, {}).get(field)
        if have != want:
            return f"engine {side} {field} is {have!r}, expected {want!r}"
    return None


def datatype(text: str) -> str | None:
    """The precision an inspector type or format string names ('Half', 'FP16 format ...', 'BFloat16', ...)."""
    text = text.lower()
    if "bf16" in text or "bfloat" in text:  # before 'float', which it contains
        return "bf16"
    if "fp16" in text or "half" in text or "float16" in text:
        return "fp16"
    if "fp32" in text or "float" in text:
        return "fp32"
    if "int8" in text:
        return "int8"
    if "fp8" in text:
        return "fp8"
    return None


def tensor_precision(tensor: Any) -> str | None:
    """A layer input's or output's precision: TensorRT 11's 'DataType' field, or 10.x's 'Format/Datatype'."""
    if not isinstance(tensor, dict):
        return None
    for key in ("DataType", "Format/Datatype", "Format/DataType", "Format"):
        if key in tensor:
            found = datatype(str(tensor[key]))
            if found:
                return found
    return None


def layer_precision(layer: dict[str, Any], convolution: bool) -> str | None:
    """The precision a layer computes in.

    Judged by what goes in, not what comes out: TensorRT fuses a following cast
    into a convolution, so a convolution that reads fp16 and fp16 weights can
    write fp32 (about half of InSPyReNet's convolutions feed an fp32 island).
    A convolution is judged by its data input, then its weights; any other
    layer (a Myelin region, a fused kernel) is fp16 when any input is.
    """
    inputs = [tensor_precision(t) for t in layer.get("Inputs", [])]
    if convolution:
        if inputs and inputs[0]:
            return inputs[0]
        weights = layer.get("Weights")
        if isinstance(weights, dict) and datatype(str(weights.get("Type", ""))):
            return datatype(str(weights["Type"]))
    elif any(p == "fp16" for p in inputs):
        return "fp16"
    elif any(inputs):
        return next(p for p in inputs if p)
    outputs = [tensor_precision(t) for t in layer.get("Outputs", [])]
    return next((p for p in outputs if p), None)


def is_convolution(layer: dict[str, Any]) -> bool:
    kind = f"{layer.get('LayerType', '')} {layer.get('ParameterType', '')}".lower()
    return "convolution" in kind or "conv" in kind.split()


def precision_summary(information: dict[str, Any]) -> dict[str, Any]:
    """Count compute layers by precision (judged by their inputs), and convolution layers separately."""
    layers = information.get("Layers", [])
    counts: dict[str, int] = {}
    conv: dict[str, int] = {}
    unknown = 0
    for layer in layers:
        if not isinstance(layer, dict):
            unknown += 1  # LAYER_NAMES_ONLY verbosity gives bare names
            continue
        kind = str(layer.get("LayerType", "")).lower()
        if kind in BOOKKEEPING_LAYERS:
            continue
        convolution = is_convolution(layer)
        precision = layer_precision(layer, convolution)
        if precision is None:
            unknown += 1
            continue
        counts[precision] = counts.get(precision, 0) + 1
        if convolution:
            conv[precision] = conv.get(precision, 0) + 1
    return {
        "layers": len(layers),
        "by_precision": counts,
        "convolutions": conv,
        "without_precision": unknown,
        "judged_by": "layer inputs (convolutions: data input, then weights)",
    }


def fp16_problem(summary: dict[str, Any], weights: dict[str, int] | None = None, plan_bytes: int = 0) -> str | None:
    """Why the engine is not really fp16, or None when it is; from two kinds of evidence.

    The per-layer listing (``precision_summary``) can only miss fp16, never invent it: TensorRT fuses much
    of a Swin graph into a few Myelin regions whose inputs are the fp32 image or an fp32 island's output,
    and their fp16 inside is not listed. So a listing that shows fp16 passes the engine. One that does
    not is weighed against the plan's size, which no grouping of layers changes: ``weights`` are the
    source graph's weight bytes as stored (mostly fp16) and in fp32 (``onnx_fp16.weight_bytes``); a plan
    below their midpoint holds fp16 weights. Without ``weights`` (a bundle from before they were
    recorded) the listing decides alone.
    """
    listed = _listing_problem(summary)
    if listed is None or not weights or not plan_bytes:
        return listed
    midpoint = (weights["bytes"] + weights["fp32_bytes"]) / 2
    if plan_bytes < midpoint:
        return None
    return (
        f"the plan is {plan_bytes / 1e6:.0f} MB, the size of its weights in fp32 ({weights['fp32_bytes'] / 1e6:.0f} "
        f"MB; {weights['bytes'] / 1e6:.0f} MB as the fp16 graph stores them), and {listed}"
    )


def size_evidence(weights: dict[str, int] | None, plan_bytes: int) -> dict[str, Any] | None:
    """What the manifest records of the size evidence (None without weights)."""
    if not weights:
        return None
    return {**weights, "plan_bytes": plan_bytes, "plan_vs_fp32_weights": round(plan_bytes / weights["fp32_bytes"], 3)}


def _listing_problem(summary: dict[str, Any]) -> str | None:
    """Why the per-layer listing does not show an fp16 engine, or None when it does."""
    counts, conv = summary["by_precision"], summary["convolutions"]
    if not counts:
        return (
            f"the engine inspector reported no layer precisions ({summary['layers']} layers): "
            "cannot confirm the engine is fp16"
        )
    if conv:
        share = conv.get("fp16", 0) / sum(conv.values())
        if share < MIN_FP16_CONV_SHARE:
            return (
                f"only {share:.0%} of the engine's convolution layers read fp16 ({conv}); "
                f"expected at least {MIN_FP16_CONV_SHARE:.0%}: the build fell back to fp32"
            )
        return None
    share = counts.get("fp16", 0) / sum(counts.values())
    if share < MIN_FP16_LAYER_SHARE:
        return (
            f"only {share:.0%} of the engine's compute layers read fp16 ({counts}); "
            f"expected at least {MIN_FP16_LAYER_SHARE:.0%}: the build fell back to fp32"
        )
    return None
