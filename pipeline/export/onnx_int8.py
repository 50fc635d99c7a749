"""The INT8 ONNX artifact: the fp32 ONNX graph quantized by ONNX Runtime's own tools, for its CPU provider.

Two methods, both from ``onnxruntime.quantization``:

- ``static`` (default): QDQ format, weights int8 per output channel, activations
  uint8 with ranges calibrated on the build's photos (MinMax). Only the ops that
  carry weights are quantized (Conv, and MatMul whose second input is a weight);
  LayerNorm, Softmax, GELU, the attention's activation x activation MatMuls and
  everything else stay fp32.
- ``dynamic``: MatMul weights int8, activations quantized per run (no calibration).

``reduce_range`` (7-bit weights) avoids the saturation of the u8 x s8 multiply of
x86 CPUs without VNNI (AVX2, AVX-512F); on CPUs with VNNI it only costs precision.
``auto`` decides from the build machine's instruction set and the manifest
records both. The artifact is served only when it passed its parity row
(pipeline/parity/check.py, class int8).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import BuildError
from pipeline.export.formats import INPUT_NAME

FILE = "model.int8.onnx"
LABEL = "onnxruntime-int8"
METHODS = ("static", "dynamic")
STATIC_OP_TYPES = ("Conv", "MatMul")


def cpu_flags() -> set[str]:
    """The x86 feature flags of this machine's CPU (empty where /proc/cpuinfo is not there)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def has_vnni(flags: set[str]) -> bool:
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & flags)


def instruction_set(flags: set[str]) -> str:
    """A short name of what the int8 kernels can use here, e.g. 'AVX2 (no VNNI)'."""
    base = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "SSE/other"
    return f"{base} ({'VNNI' if has_vnni(flags) else 'no VNNI'})"


def resolve_reduce_range(choice: str, flags: set[str]) -> bool:
    """``auto``: reduce the range where the CPU has no VNNI (its u8 x s8 multiply saturates)."""
    if choice == "auto":
        return not has_vnni(flags)
    return choice == "on"


# Peak resident memory of the static quantizer (the whole process), measured: 4.5 GB calibrating one image
# at 384x384, 6.5 GB five images, 18.3 GB one image at 1024x1024 (docs/performance.md). Modelled as
# linear in the input's pixels, with a share per further image; the build checks it before it starts.
CALIBRATION_GB_FIXED = 2.2
CALIBRATION_GB_PER_PIXEL = 1.535e-5
CALIBRATION_GB_PER_PIXEL_PER_IMAGE = 3.5e-6


class _Calibration:
    """ONNX Runtime's CalibrationDataReader protocol over preprocessed images, one at a time."""

    def __init__(self, tensors: Iterable[np.ndarray]):
        self._feeds = iter([{INPUT_NAME: np.ascontiguousarray(t, dtype=np.float32)} for t in tensors])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def calibration_gb(size: tuple[int, int], images: int) -> float:
    """About how much memory static calibration on ``images`` images at ``size`` (height, width) takes, in GB."""
    pixels = size[0] * size[1]
    return CALIBRATION_GB_FIXED + pixels * (
        CALIBRATION_GB_PER_PIXEL + CALIBRATION_GB_PER_PIXEL_PER_IMAGE * (images - 1)
    )


def available_gb() -> float | None:
    """Memory this process can still use, in GB: MemAvailable, or less under a cgroup limit; None if unknown."""
    found: list[float] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024 / 1e9)
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text().strip()
        if limit != "max":
            found.append((int(limit) - int(used)) / 1e9)
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def images_that_fit(size: tuple[int, int], wanted: int, available: float | None) -> int:
    """How many of ``wanted`` calibration images static quantization at ``size`` can take here (0: not one)."""
    if available is None:
        return wanted  # unknown: try
    return max((n for n in range(1, wanted + 1) if calibration_gb(size, n) <= available), default=0)


def memory_problem(size: tuple[int, int], available: float) -> str:
    """Why static quantization at ``size`` cannot run here: one line for the build's output and manifest."""
    return (
        f"static int8 calibration at {size[0]}x{size[1]} needs about {calibration_gb(size, 1):.0f} GB of memory "
        f"and {available:.1f} GB is available here: build on a larger machine, or pass --int8 dynamic"
    )


@contextlib.contextmanager
def quiet_root_logger() -> Iterator[None]:
    """The quantizer advises pre-processing on the root logger: the exporter's graph is already optimised
    (``optimize=True``: constants folded, shapes inferred), so the advice is noise in the build's output."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def weight_matmuls(model) -> tuple[list[str], list[str]]:
    """(MatMul nodes whose second input is a weight, MatMul nodes of two activations)."""
    weights = {init.name for init in model.graph.initializer}
    with_weight: list[str] = []
    activations: list[str] = []
    for node in model.graph.node:
        if node.op_type == "MatMul":
            (with_weight if node.input[1] in weights else activations).append(node.name)
    return with_weight, activations


def quantize(
    fp32_model: Path,
    out: Path,
    method: str,
    calibration: list[np.ndarray],
    reduce_range: bool,
) -> dict[str, Any]:
    """Write ``out`` (one file, weights inside: it stays under protobuf's 2 GB) and return its manifest fields."""
    import onnx

    if method not in METHODS:
        raise BuildError(f"unknown int8 method {method!r}; choose one of {', '.join(METHODS)}")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="int8-", dir=out.parent) as work:
        # A private copy: ONNX refuses external data behind hard links, and the quantizer writes beside its input.
        source = Path(work) / "fp32.onnx"
        shutil.copyfile(fp32_model, source)
        for data in fp32_model.parent.glob(fp32_model.name + ".data"):
            shutil.copyfile(data, Path(work) / data.name)
        model = onnx.load(str(source))
        with_weight, activation_matmuls = weight_matmuls(model)
        fields: dict[str, Any] = {"method": method, "reduce_range": reduce_range, "per_channel": True}
        try:
            with quiet_root_logger():
                if method == "static":
                    fields |= _static(model, out, calibration, reduce_range, activation_matmuls)
                else:
                    fields |= _dynamic(model, out, reduce_range)
        except Exception as exc:  # the quantizer raises many error types
            raise BuildError(f"int8 quantization ({method}) failed: {type(exc).__name__}: {exc}") from exc
    fields["weight_matmuls"] = len(with_weight)
    fields["seconds"] = round(time.perf_counter() - start, 1)
    return {"quantization": fields}


def _static(model, out: Path, calibration, reduce_range: bool, excluded: list[str]) -> dict[str, Any]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(
        model,
        str(out),
        _Calibration(calibration),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(STATIC_OP_TYPES),
        per_channel=True,
        reduce_range=reduce_range,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=excluded,
        calibrate_method=CalibrationMethod.MinMax,
    )
    return {
        "format": "QDQ",
        "op_types": list(STATIC_OP_TYPES),
        "activations": "uint8, MinMax calibration",
        "calibration_images": len(calibration),
        "fp32_matmuls": len(excluded),  # attention's activation x activation products
    }


def _dynamic(model, out: Path, reduce_range: bool) -> dict[str, Any]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        model,
        str(out),
        op_types_to_quantize=["MatMul"],
        per_channel=True,
        reduce_range=reduce_range,
        weight_type=QuantType.QInt8,
    )
    return {"format": "MatMulInteger (dynamic)", "op_types": ["MatMul"], "activations": "per run (dynamic)"}
