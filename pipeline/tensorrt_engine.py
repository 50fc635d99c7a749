"""Build a TensorRT fp16 engine from the fp16-with-fp32-islands export graph.

torch-tensorrt (dynamo path) turns the ExportedProgram into a serialized,
version-compatible engine that the TensorRT lean runtime loads without
torch. torch-tensorrt 2.13+ builds strongly typed networks: the engine has
exactly the precisions the graph states, which is why the graph is made fp16
with explicit casts (pipeline.mixed_precision) and why the engine is
inspected afterwards: a graph that silently stayed fp32 gives an fp32 engine.

Only ``available()`` and the pure helpers run without TensorRT and a GPU.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import BuildError

INPUT_NAME = "image"
OUTPUT_NAME = "mask"
# Convolutions carry most of InSPyReNet's work (207 of them; 12 stay fp32 as
# SICA islands). An engine below this share of fp16 convolutions was not
# really built in half precision.
MIN_FP16_CONV_SHARE = 0.75
MIN_FP16_LAYER_SHARE = 0.5  # used only when the inspector names no convolution layer
# torch-tensorrt checks these against the program's (args) and return pytrees.
ARG_BINDING_NAMES = (INPUT_NAME,)
OUTPUT_BINDING_NAMES = OUTPUT_NAME
BOOKKEEPING_LAYERS = {"Reformat", "NoOp", "Shuffle", "Constant", "Identity", "Cast"}


@dataclass(frozen=True)
class TensorRTOptions:
    hardware_compatible: bool = False
    optimization_level: int = 3
    workspace_gib: float = 4.0
    max_batch: int = 4
    opt_batch: int = 1
    timing_cache: Path | None = None


def unavailable_reason() -> str | None:
    """Why this machine cannot build a TensorRT engine, or None if it can."""
    for module, what in (("torch_tensorrt", "torch-tensorrt"), ("tensorrt", "the TensorRT builder (tensorrt)")):
        if importlib.util.find_spec(module) is None:
            return f"{what} is not installed"
    try:
        importlib.import_module("tensorrt")
        importlib.import_module("torch_tensorrt")
    except Exception as exc:  # broken installs raise anything from OSError to RuntimeError
        return f"torch-tensorrt does not import: {type(exc).__name__}: {str(exc).splitlines()[0]}"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU is visible"
    return None


def gpu_slug(name: str) -> str:
    """'NVIDIA L4' -> 'nvidia-l4' (for the engine's file name)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"


def engine_file(gpu_name: str, hardware_compatible: bool) -> str:
    return f"model.{'ampere-plus' if hardware_compatible else gpu_slug(gpu_name)}.fp16.plan"


def default_timing_cache(cache_root: Path, gpu_name: str, tensorrt_version: str) -> Path:
    return cache_root / "tensorrt" / f"timing-{gpu_slug(gpu_name)}-trt{tensorrt_version}.cache"


def build_target(options: TensorRTOptions) -> dict[str, Any]:
    """The manifest's ``target``: what the engine was built on and for."""
    import tensorrt as trt
    import torch
    import torch_tensorrt

    major, minor = torch.cuda.get_device_capability(0)
    return {
        "gpu_name": torch.cuda.get_device_name(0),
        "compute_capability": f"{major}.{minor}",
        "hardware_compatibility": "ampere+" if options.hardware_compatible else "none",
        "version_compatible": True,
        "tensorrt_version": str(trt.__version__),
        "torch_tensorrt_version": str(torch_tensorrt.__version__),
        "cuda_version": str(torch.version.cuda),
        "strongly_typed": True,
        "optimization_level": options.optimization_level,
        "workspace_bytes": int(options.workspace_gib * 2**30),
    }


def compile_engine(state_dict, size: tuple[int, int], options: TensorRTOptions, log_dir: Path) -> bytes:
    """Export the fp16 graph on the GPU and compile it into serialized engine bytes."""
    import torch
    import torch_tensorrt

    from pipeline.mixed_precision import export_program, mixed_precision_model

    height, width = size
    model = mixed_precision_model(state_dict, size).cuda()
    example = torch.zeros(1, 3, height, width, device="cuda")
    program = export_program(model, example, options.max_batch)
    spec = torch_tensorrt.Input(
        min_shape=(1, 3, height, width),
        opt_shape=(options.opt_batch, 3, height, width),
        max_shape=(options.max_batch, 3, height, width),
        dtype=torch.float32,
        name=INPUT_NAME,
    )
    settings = dict(
        arg_inputs=[spec],
        version_compatible=True,
        hardware_compatible=options.hardware_compatible,
        optimization_level=options.optimization_level,
        workspace_size=int(options.workspace_gib * 2**30),
        require_full_compilation=True,
        min_block_size=1,
        arg_input_binding_names=ARG_BINDING_NAMES,
        output_binding_names=OUTPUT_BINDING_NAMES,
    )
    if options.timing_cache is not None:
        options.timing_cache.parent.mkdir(parents=True, exist_ok=True)
        settings["timing_cache_path"] = str(options.timing_cache)
    # Under the Debugger, torch-tensorrt builds with DETAILED profiling
    # verbosity, which is what lets the engine inspector report layer precisions.
    with torch_tensorrt.dynamo.Debugger(log_level="warning", engine_builder_monitor=False, logging_dir=str(log_dir)):
        return bytes(torch_tensorrt.dynamo.convert_exported_program_to_serialized_trt_engine(program, **settings))


def binding_names_problem(program) -> str | None:
    """Whether the fixed binding names fit the exported program's input and output structure."""
    import torch.utils._pytree as pytree

    signature = program.module_call_graph[0].signature
    args_spec = signature.in_spec.children()[0]
    for names, spec, what in ((ARG_BINDING_NAMES, args_spec, "inputs"),
                              (OUTPUT_BINDING_NAMES, signature.out_spec, "outputs")):
        if pytree.tree_flatten(names)[1] != spec:
            return f"binding names {names!r} do not match the program's {what} ({spec})"
    return None


def describe_engine(plan: bytes, size: tuple[int, int], opt_batch: int = 1) -> dict[str, Any]:
    """I/O tensors and the inspector's per-layer information, with the runtime that will serve it."""
    import tensorrt as trt

    runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
    runtime.engine_host_code_allowed = True
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise BuildError("the TensorRT engine just built does not deserialise")
    io = {}
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        entry = {"name": name, "dtype": str(engine.get_tensor_dtype(name)).split(".")[-1].lower(),
                 "shape": list(engine.get_tensor_shape(name))}
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
            low, opt, high = engine.get_tensor_profile_shape(name, 0)
            entry.update(min_shape=list(low), opt_shape=list(opt), max_shape=list(high))
            io["input"] = entry
        else:
            io["output"] = entry
    context = engine.create_execution_context()
    context.set_input_shape(io["input"]["name"], (opt_batch, 3, *size))
    inspector = engine.create_engine_inspector()
    if hasattr(inspector, "execution_context"):
        inspector.execution_context = context
    else:
        inspector.context = context
    layers = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    return {"io": io, "layers": layers}


def check_io(io: dict[str, Any], size: tuple[int, int], max_batch: int) -> str | None:
    """Whether the engine's I/O is the fixed contract: image float32 (1..N,3,H,W) -> mask float32 (N,1,H,W)."""
    height, width = size
    expected = {
        ("input", "name"): INPUT_NAME, ("input", "dtype"): "float", ("output", "name"): OUTPUT_NAME,
        ("output", "dtype"): "float", ("input", "min_shape"): [1, 3, height, width],
        ("input", "max_shape"): [max_batch, 3, height, width],
    }
    for (side, field), want in expected.items():
        have = io.get(side, {}).get(field)
        if have != want and not (field == "dtype" and str(have).startswith("float32")):
            return f"engine {side} {field} is {have!r}, expected {want!r}"
    return None


def datatype(format_text: str) -> str | None:
    """The precision named by an inspector 'Format/Datatype' string."""
    text = format_text.lower()
    if "fp16" in text or "half" in text:
        return "fp16"
    if "fp32" in text or "float" in text:
        return "fp32"
    if "int8" in text:
        return "int8"
    if "bf16" in text:
        return "bf16"
    return None


def precision_summary(information: dict[str, Any]) -> dict[str, Any]:
    """Count layers by output precision, and convolution layers separately."""
    layers = information.get("Layers", [])
    counts: dict[str, int] = {}
    conv: dict[str, int] = {}
    unknown = 0
    for layer in layers:
        if not isinstance(layer, dict):
            unknown += 1  # LAYER_NAMES_ONLY verbosity gives bare names
            continue
        kind = str(layer.get("LayerType", ""))
        if kind in BOOKKEEPING_LAYERS:
            continue
        kinds = {datatype(str(t.get("Format/Datatype", ""))) for t in layer.get("Outputs", [])} - {None}
        if not kinds:
            unknown += 1
            continue
        precision = "fp16" if "fp16" in kinds else sorted(kinds)[0]
        counts[precision] = counts.get(precision, 0) + 1
        if "convolution" in kind.lower() or "convolution" in str(layer.get("ParameterType", "")).lower():
            conv[precision] = conv.get(precision, 0) + 1
    return {"layers": len(layers), "by_precision": counts, "convolutions": conv, "without_precision": unknown}


def fp16_problem(summary: dict[str, Any]) -> str | None:
    """Why the inspected engine is not really fp16, or None when it is."""
    counts, conv = summary["by_precision"], summary["convolutions"]
    if not counts:
        return (f"the engine inspector reported no layer precisions ({summary['layers']} layers): "
                "cannot confirm the engine is fp16")
    if conv:
        share = conv.get("fp16", 0) / sum(conv.values())
        if share < MIN_FP16_CONV_SHARE:
            return (f"only {share:.0%} of the engine's convolution layers run in fp16 ({conv}); "
                    f"expected at least {MIN_FP16_CONV_SHARE:.0%}: the build fell back to fp32")
        return None
    share = counts.get("fp16", 0) / sum(counts.values())
    if share < MIN_FP16_LAYER_SHARE:
        return (f"only {share:.0%} of the engine's layers run in fp16 ({counts}); "
                f"expected at least {MIN_FP16_LAYER_SHARE:.0%}: the build fell back to fp32")
    return None


def build(state_dict, size: tuple[int, int], options: TensorRTOptions, path: Path) -> dict[str, Any]:
    """Compile, inspect and write the engine to ``path``; return its manifest fields (minus file/sha)."""
    with tempfile.TemporaryDirectory(prefix="inspyrenet-trt-") as log_dir:
        try:
            plan = compile_engine(state_dict, size, options, Path(log_dir))
        except Exception as exc:  # torch-tensorrt raises many error types
            raise BuildError(f"TensorRT engine build failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    description = describe_engine(plan, size, options.opt_batch)
    problem = check_io(description["io"], size, options.max_batch)
    if problem:
        raise BuildError(f"TensorRT engine has the wrong interface: {problem}")
    summary = precision_summary(description["layers"])
    problem = fp16_problem(summary)
    if problem:
        raise BuildError(f"TensorRT engine is not fp16: {problem}")
    path.write_bytes(plan)
    return {
        "target": build_target(options),
        "io": description["io"],
        "precision_check": summary,
        "build_options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
    }
