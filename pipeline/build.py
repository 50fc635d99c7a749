"""``inspyrenet build``: checkpoint -> export model -> artifacts -> bundle."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline import checkpoint as checkpoints
from pipeline import onnx_fp16, samples
from pipeline.bundle_writer import BundleWriter
from pipeline.environment import build_environment
from pipeline.errors import BuildError
from pipeline.export import INPUT_NAME, ONNX_MAX_BATCH, ONNX_OPSET, OUTPUT_NAME, export_onnx, export_torchscript
from pipeline.model import NORMALISATION_EPS, expected_keys, export_model
from pipeline.parity import DEFAULT_LIMITS
from pipeline.paths import cache_root
from pipeline.progress import Stages
from pipeline.tensorrt_engine import TensorRTOptions
from serving import __version__ as serving_version
from serving.backends import BackendUnavailable, open_backend
from serving.bundle import BUNDLE_KIND, SCHEMA_VERSION, TENSORRT_SOURCE_ROLE, Artifact, Bundle
from serving.image import MEAN, RESIZE_RULE, STD, UPSAMPLE_RULE, preprocess

EXPORT_TOLERANCE = 1e-4
FP16_EXPORT_TOLERANCE = DEFAULT_LIMITS["fp16"]["model"].max_abs  # fp16 graph and engine vs eager


@dataclass(frozen=True)
class BuildOptions:
    mode: str
    checkpoint: str
    out: Path
    export_tolerance: float = EXPORT_TOLERANCE
    validate: bool = True
    tensorrt: bool | None = None  # None: build it when the TensorRT builder and a CUDA GPU are present
    require_tensorrt: bool = False
    tensorrt_options: TensorRTOptions = TensorRTOptions()


def io_spec(size: tuple[int, int]) -> tuple[dict[str, Any], dict[str, Any]]:
    height, width = size
    model_input = {
        "name": INPUT_NAME,
        "shape": ["N", 3, height, width],
        "dtype": "float32",
        "layout": "NCHW",
        "color": "RGB",
        "scale": "1/255",
        "mean": list(MEAN),
        "std": list(STD),
        "resize": RESIZE_RULE,
    }
    model_output = {
        "name": OUTPUT_NAME,
        "shape": ["N", 1, height, width],
        "dtype": "float32",
        "range": [0.0, 1.0],
        "meaning": "foreground probability (alpha)",
        "normalisation": f"sigmoid, then min/max per sample (eps {NORMALISATION_EPS})",
        "upsample": UPSAMPLE_RULE,
    }
    return model_input, model_output


class Builder:
    def __init__(self, options: BuildOptions, stages: Stages):
        self.options = options
        self.stages = stages
        self.size = checkpoints.input_size(options.mode)

    def run(self) -> tuple[Path, dict[str, Any]]:
        options, stage = self.options, self.stages.stage
        if options.require_tensorrt:
            self._tensorrt_unavailable()  # raises before any slow work
        with stage("resolve checkpoint", long=options.checkpoint.startswith("synthetic")) as s:
            ckpt = checkpoints.resolve(options.checkpoint, options.mode)
            s.detail = f"{ckpt.source}  sha256 {ckpt.sha256[:12]}"
        with stage("load model") as s:
            state = checkpoints.load_state_dict(ckpt, expected_keys())
            model = export_model(state, self.size)
            s.detail = f"InSPyReNet_SwinB {self.size[0]}x{self.size[1]}"
        with stage("eager reference") as s:
            check_input = preprocess(samples.photo(samples.CHECK_PHOTO), self.size)
            with torch.no_grad():
                reference = model(torch.from_numpy(check_input)).numpy()
            s.detail = f"on '{samples.CHECK_PHOTO}'"

        model_input, model_output = io_spec(self.size)
        manifest: dict[str, Any] = {
            "kind": BUNDLE_KIND,
            "schema_version": SCHEMA_VERSION,
            "mode": options.mode,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "production_ready": ckpt.production_ready,
            "checkpoint": ckpt.manifest_record(),
            "input": model_input,
            "output": model_output,
            "artifacts": [],
            "skipped_artifacts": [],
        }
        with BundleWriter(options.out) as writer:
            self._export(
                writer, manifest, "model.ts", "torchscript", "export torchscript",
                lambda path: export_torchscript(model, torch.from_numpy(check_input), path),
                check_input, reference, {"exporter": "torch.jit.trace"},
            )
            self._export(
                writer, manifest, "model.onnx", "onnxruntime", "export onnx",
                lambda path: export_onnx(model, torch.from_numpy(check_input), path),
                check_input, reference, {"exporter": "torch.onnx.export(dynamo=True)", "opset": ONNX_OPSET},
            )
            self._export(
                writer, manifest, onnx_fp16.FILE, "onnxruntime", "export onnx fp16 (tensorrt source)",
                lambda path: onnx_fp16.export_fp16_onnx(state, self.size, torch.from_numpy(check_input), path),
                check_input, reference,
                {"exporter": "torch.onnx.export(dynamo=True)", "opset": ONNX_OPSET, "role": TENSORRT_SOURCE_ROLE,
                 "label": onnx_fp16.LABEL, "graph": "fp16 with fp32 islands (pipeline.mixed_precision)"},
                precision="fp16", tolerance=FP16_EXPORT_TOLERANCE,
            )
            self._tensorrt(writer, manifest, check_input, reference)
            manifest["validation"] = (
                {"status": "pending"} if options.validate else {"status": "skipped", "reason": "--no-validate"}
            )
            manifest["build"] = {
                **build_environment(),
                "tool_version": serving_version,
                "stages": [{"name": r.name, "seconds": round(r.seconds, 2)} for r in self.stages.records],
            }
            with stage("write manifest"):
                out = writer.commit(manifest)
        return out, manifest

    def _tensorrt(self, writer, manifest, check_input, reference) -> None:
        """The fp16 engine, compiled from the fp16 ONNX graph, when this machine can build one; else one line why not."""
        from pipeline import tensorrt_engine

        options = self.options
        if options.tensorrt is False and not options.require_tensorrt:
            manifest["skipped_artifacts"].append({"backend": "tensorrt", "reason": "--no-tensorrt"})
            return
        reason = self._tensorrt_unavailable()
        if reason:
            self.stages.console.print(f"TensorRT artifact skipped: {reason}", highlight=False)
            manifest["skipped_artifacts"].append({"backend": "tensorrt", "reason": reason})
            return
        trt_options = tensorrt_engine.with_default_timing_cache(options.tensorrt_options, cache_root())
        file = tensorrt_engine.engine_file(tensorrt_engine.gpu_name(), trt_options.hardware_compatible)
        self._export(
            writer, manifest, file, "tensorrt", "build tensorrt fp16",
            lambda path: tensorrt_engine.build(writer.path(onnx_fp16.FILE), self.size, trt_options, path),
            check_input, reference, {}, precision="fp16", device="cuda",
            max_batch=trt_options.max_batch, tolerance=FP16_EXPORT_TOLERANCE,
        )

    def _tensorrt_unavailable(self) -> str | None:
        """Why no engine can be built here (None: it can); a BuildError if one is required."""
        from pipeline import tensorrt_engine

        reason = tensorrt_engine.unavailable_reason()
        if reason and self.options.require_tensorrt:
            raise BuildError(f"TensorRT engine required (--require-tensorrt) but {reason}")
        return reason

    def _export(self, writer, manifest, file, backend, title, write, check_input, reference, extra,
                precision="fp32", device="any", max_batch=ONNX_MAX_BATCH, tolerance=None) -> None:
        tolerance = self.options.export_tolerance if tolerance is None else tolerance
        with self.stages.stage(title, long=True) as s:
            written = write(writer.path(file))
            fields = {**extra, **written} if isinstance(written, dict) else extra
            record = writer.artifact(file, backend, precision, device, max_batch=max_batch, **fields)
            s.detail = f"{file}  {sum(f['bytes'] for f in [record, *record['extra_files']]) / 1e6:.0f} MB"
        with self.stages.stage(f"check {backend}") as s:
            diff = self._check(writer.staging, manifest, record, check_input, reference)
            record["export_check"] = {
                "image": samples.CHECK_PHOTO,
                "max_abs_diff": diff,
                "tolerance": tolerance,
            }
            s.detail = f"max |diff| vs eager {diff:.2e}"
        if not diff <= tolerance:
            raise BuildError(
                f"{backend} artifact differs from the eager model by {diff:.3g} "
                f"(tolerance {tolerance:g}); bundle not written"
            )
        manifest["artifacts"].append(record)

    @staticmethod
    def _check(root: Path, manifest, record, check_input, reference) -> float:
        """Run the artifact through the serving backend and compare with the eager output."""
        artifact = Artifact.from_dict(record)
        bundle = Bundle(root=root, manifest=manifest, artifacts=(artifact,))
        try:
            backend = open_backend(bundle, artifact, device="cuda" if artifact.device == "cuda" else "cpu")
        except BackendUnavailable as exc:
            raise BuildError(f"cannot check the {artifact.backend} artifact: {exc}") from None
        try:
            output = backend.infer(check_input)
        finally:
            backend.close()
        return float(np.max(np.abs(output - reference)))


def build(options: BuildOptions, stages: Stages) -> tuple[Path, dict[str, Any]]:
    return Builder(options, stages).run()
