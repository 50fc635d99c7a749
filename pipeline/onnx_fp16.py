"""The fp16-with-fp32-islands graph as ONNX: the TensorRT engine's source, checked on any CPU.

The graph is exported once, on the CPU, by the same dynamo exporter as the
fp32 ONNX artifact. ONNX Runtime's CPU provider runs it in about the time of
the fp32 graph on every x86 CPU: where it has no fp16 kernel for an op, it
computes that op in fp32 between casts, so every tensor the graph states as
fp16 still holds fp16 values (an overflow is still inf). That run is the fp16
parity check; ``execution_report`` says how many compute ops ran on native fp16
kernels and how many were emulated that way.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

FILE = "model.fp16.onnx"
LABEL = "onnxruntime-fp16"
ROLE = "tensorrt-source"
# Ops that carry the arithmetic; their input dtype says whether fp16 ran natively.
COMPUTE_OPS = {"Conv", "FusedConv", "MatMul", "FusedMatMul", "Gemm", "FusedGemm", "NhwcFusedConv",
               "QLinearConv", "Resize", "Softmax", "LayerNormalization"}


def kernel_dtypes(model_path: Path, size: tuple[int, int]) -> list[tuple[str, str]]:
    """(op type, first input dtype) of every node ONNX Runtime's CPU provider ran for one image."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="inspyrenet-ort-profile-") as work:
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(work, "profile")
        options.log_severity_level = 3
        session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        session.run(None, {name: np.zeros((1, 3, *size), dtype=np.float32)})
        events = json.loads(Path(session.end_profiling()).read_text())
    found = []
    for event in events:
        args = event.get("args", {})
        if event.get("cat") != "Node" or "op_name" not in args or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        inputs = args.get("input_type_shape") or [{}]
        dtype = next(iter(inputs[0]), "?") if inputs[0] else "?"
        found.append((str(args["op_name"]), str(dtype)))
    return found


def execution_report(model_path: Path, size: tuple[int, int]) -> dict[str, Any]:
    """How ONNX Runtime's CPU provider ran the fp16 graph here: 'native', 'emulated' or 'mixed'.

    Compute ops (convolutions, matmuls, ...) that the graph states in fp16 run
    either on fp16 kernels (native) or in fp32 between inserted casts
    (emulated: fp16 storage, fp32 arithmetic). The islands are fp32 either way.
    """
    from pipeline.fp16_emulation import cpu_capability, cpu_model

    nodes = kernel_dtypes(model_path, size)
    compute = Counter(dtype for op, dtype in nodes if op in COMPUTE_OPS)
    casts = sum(1 for op, _ in nodes if op == "Cast")
    native = compute.get("float16", 0)
    emulated_float = sum(1 for op, dtype in nodes if op in ("Conv", "FusedConv") and dtype == "float")
    convs_native = sum(1 for op, dtype in nodes if op in ("Conv", "FusedConv") and dtype == "float16")
    if convs_native and not emulated_float:
        mode = "native"
    elif convs_native:
        mode = "mixed"
    else:
        mode = "emulated"
    return {
        "runtime": "onnxruntime-cpu",
        "mode": mode,
        "detail": (f"{convs_native} convolutions on fp16 kernels, {emulated_float} in fp32 between casts "
                   f"({casts} casts ran); fp32 islands in fp32"),
        "compute_ops_by_input_dtype": dict(compute),
        "native_fp16_compute_ops": native,
        "cpu": cpu_model(),
        "cpu_capability": cpu_capability(),
    }
