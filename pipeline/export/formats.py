"""Export the model to TorchScript and ONNX files.

- TorchScript: ``torch.jit.trace``, fp32, loadable on CPU or CUDA.
- ONNX: the dynamo exporter (the legacy exporter crashes on this model),
  opset 18, dynamic batch dimension, weights in external data.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import torch
from torch import nn

from pipeline.errors import BuildError

ONNX_OPSET = 18
ONNX_MAX_BATCH = 16
INPUT_NAME = "image"
OUTPUT_NAME = "mask"


def export_torchscript(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings on Python-int shape arithmetic
        traced = torch.jit.trace(model, example, check_trace=False)
    traced.save(str(path))


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> list[Path]:
    """Write ``path`` and its external data file; return every file written."""
    batch = torch.export.Dim("batch", min=1, max=ONNX_MAX_BATCH)
    chatter = io.StringIO()  # the exporter prints its stages; keep them for error messages
    try:
        with contextlib.redirect_stdout(chatter), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                str(path),
                dynamo=True,
                opset_version=ONNX_OPSET,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes={"image": {0: batch}},
                external_data=True,
                optimize=True,
            )
    except Exception as exc:  # the exporter raises many error types
        tail = " | ".join(chatter.getvalue().strip().splitlines()[-3:])
        raise BuildError(f"ONNX export failed: {type(exc).__name__}: {str(exc).splitlines()[0]} [{tail}]") from exc
    return sorted(p for p in path.parent.iterdir() if p.name.startswith(path.name))
