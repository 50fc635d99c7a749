"""``inspyrenet build``: checkpoint -> export model -> artifacts -> bundle."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline import checkpoint as checkpoints
from pipeline import samples
from pipeline.bundle_writer import BundleWriter
from pipeline.environment import build_environment
from pipeline.errors import BuildError
from pipeline.export import onnx_fp16, onnx_int8
from pipeline.export.formats import INPUT_NAME, ONNX_MAX_BATCH, ONNX_OPSET, OUTPUT_NAME, export_onnx, export_torchscript
from pipeline.export.model import NORMALISATION_EPS, expected_keys, export_model
from pipeline.export.tensorrt_engine import TensorRTOptions
from pipeline.parity.check import DEFAULT_LIMITS
from pipeline.paths import cache_root
from pipeline.progress import Stages
from serving import __version__ as serving_version
from serving.backends import BackendUnavailableError, open_backend
from serving.bundle import Bundle
from serving.imaging.contract import MEAN, RESIZE_RULE, STD, UPSAMPLE_RULE, preprocess
from serving.manifest import (
    TENSORRT_SOURCE_ROLE,
    Artifact,
    ExportCheck,
    InputSpec,
    Manifest,
    OutputSpec,
    SkippedArtifact,
    Validation,
)

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
    int8: str = "static"  # onnx_int8.METHODS, or "off"
    int8_reduce_range: str = "auto"  # auto | on | off


def io_spec(size: tuple[int, int]) -> tuple[InputSpec, OutputSpec]:
    height, width = size
    model_input = InputSpec(
        name=INPUT_NAME,
        shape=["N", 3, height, width],
        dtype="float32",
        layout="NCHW",
        color="RGB",
        scale="1/255",
        mean=list(MEAN),
        std=list(STD),
        resize=RESIZE_RULE,
    )
    model_output = OutputSpec(
        name=OUTPUT_NAME,
        shape=["N", 1, height, width],
        dtype="float32",
        range=[0.0, 1.0],
        meaning="foreground probability (alpha)",
        normalisation=f"sigmoid, then min/max per sample (eps {NORMALISATION_EPS})",
        upsample=UPSAMPLE_RULE,
    )
    return model_input, model_output


@dataclass(frozen=True)
class ExportSpec:
    """One artifact a build makes: its file, how it is written, and how close to eager its check must come.

    ``write(path)`` writes the file (side files next to it) and may return manifest
    fields it measured; ``fields`` are the ones known up front. Every artifact is
    checked the same way: one photo through its serving backend against the eager
    model, within ``tolerance`` (None: ``--export-tolerance``).
    """

    file: str
    backend: str
    title: str
    write: Callable[[Path], dict[str, Any] | None]
    precision: str = "fp32"
    device: str = "any"
    max_batch: int = ONNX_MAX_BATCH
    tolerance: float | None = None
    optional: bool = False  # a check beyond ``tolerance`` is recorded, not fatal: the parity gate decides
    fields: dict[str, Any] = field(default_factory=dict)
    note: Callable[[], str] | None = None  # more words for the stage line, asked after ``write``


def model_exports(model, check_input: np.ndarray, fp16_graph: onnx_fp16.SideBySideExport) -> list[ExportSpec]:
    """The CPU exports, in build order: TorchScript, ONNX fp32, and the fp16 ONNX graph TensorRT compiles.

    The fp16 graph is exported in a second process, started before the others
    (``onnx_fp16.SideBySideExport``); its stage waits for it and moves it in.
    """
    example = torch.from_numpy(check_input)
    onnx_fields = {"exporter": "torch.onnx.export(dynamo=True)", "opset": ONNX_OPSET}

    def torchscript(path: Path) -> None:
        export_torchscript(model, example, path)

    def onnx(path: Path) -> None:
        export_onnx(model, example, path)

    return [
        ExportSpec(
            "model.ts", "torchscript", "export torchscript", torchscript, fields={"exporter": "torch.jit.trace"}
        ),
        ExportSpec("model.onnx", "onnxruntime", "export onnx", onnx, fields=onnx_fields),
        ExportSpec(
            onnx_fp16.FILE,
            "onnxruntime",
            "export onnx fp16",
            fp16_graph.write,
            precision="fp16",
            tolerance=FP16_EXPORT_TOLERANCE,
            fields={
                **onnx_fields,
                "role": TENSORRT_SOURCE_ROLE,
                "label": onnx_fp16.LABEL,
                "graph": "fp16 with fp32 islands (pipeline.export.mixed_precision)",
            },
            note=lambda: f"(tensorrt source; exported beside the others in {fp16_graph.seconds:.0f} s)",
        ),
    ]


class Builder:
    def __init__(self, options: BuildOptions, stages: Stages):
        self.options = options
        self.stages = stages
        self.size = checkpoints.input_size(options.mode)

    def run(self) -> tuple[Path, Manifest]:
        options, stage = self.options, self.stages.stage
        if options.require_tensorrt:
            self._tensorrt_problem()  # raises before any slow work
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
        manifest = Manifest.new(
            mode=options.mode,
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            production_ready=ckpt.production_ready,
            checkpoint=ckpt.manifest_record(),
            input=model_input,
            output=model_output,
            artifacts=[],
            skipped_artifacts=[],
        )
        with BundleWriter(options.out) as writer:
            fp16_graph = onnx_fp16.SideBySideExport(ckpt, self.size, check_input, writer.staging)
            try:
                exports = model_exports(model, check_input, fp16_graph)
                self._export_all(writer, manifest, exports, check_input, reference)
            finally:
                fp16_graph.stop()
            del model, state, exports  # the eager model's memory goes to the int8 calibration
            self._int8(writer, manifest, check_input, reference)
            self._tensorrt(writer, manifest, check_input, reference)
            manifest.validation = (
                Validation(status="pending")
                if options.validate
                else Validation(status="skipped", reason="--no-validate")
            )
            manifest.build = {
                **build_environment(),
                "tool_version": serving_version,
                "stages": [{"name": r.name, "seconds": round(r.seconds, 2)} for r in self.stages.records],
            }
            with stage("write manifest"):
                out = writer.commit(manifest)
        return out, manifest

    def _tensorrt(self, writer, manifest, check_input, reference) -> None:
        """The fp16 engine compiled from the fp16 ONNX graph, when this machine can build one; else one line why not."""
        from pipeline.export import tensorrt_engine

        options = self.options
        if options.tensorrt is False and not options.require_tensorrt:
            manifest.skipped_artifacts.append(SkippedArtifact(backend="tensorrt", reason="--no-tensorrt"))
            return
        reason = self._tensorrt_problem()
        if reason:
            self.stages.console.print(f"TensorRT artifact skipped: {reason}", highlight=False)
            manifest.skipped_artifacts.append(SkippedArtifact(backend="tensorrt", reason=reason))
            return
        trt_options = tensorrt_engine.with_default_timing_cache(options.tensorrt_options, cache_root())
        file = tensorrt_engine.engine_file(tensorrt_engine.gpu_name(), trt_options.hardware_compatible)
        spec = ExportSpec(
            file,
            "tensorrt",
            "build tensorrt fp16",
            lambda path: tensorrt_engine.build(writer.path(onnx_fp16.FILE), self.size, trt_options, path),
            precision="fp16",
            device="cuda",
            max_batch=trt_options.max_batch,
            tolerance=FP16_EXPORT_TOLERANCE,
        )
        self._export(writer, manifest, spec, check_input, reference)

    def _export_all(self, writer, manifest, specs: list[ExportSpec], check_input, reference) -> None:
        """Each spec in turn; a method so that no loop variable keeps a spec, and through it the model, alive."""
        for spec in specs:
            self._export(writer, manifest, spec, check_input, reference)

    def _int8(self, writer, manifest, check_input, reference) -> None:
        """The int8 graph for ONNX Runtime's CPU provider, quantized from the fp32 ONNX file (optional artifact)."""
        options = self.options
        if options.int8 == "off":
            manifest.skipped_artifacts.append(SkippedArtifact(backend=onnx_int8.LABEL, reason="--int8 off"))
            return
        flags = onnx_int8.cpu_flags()
        reduce_range = onnx_int8.resolve_reduce_range(options.int8_reduce_range, flags)
        calibration = [preprocess(img, self.size) for img in samples.photos().values()]
        if options.int8 == "static":  # calibration's memory grows with the input's pixels: check it first
            available = onnx_int8.available_gb()
            fit = onnx_int8.images_that_fit(self.size, len(calibration), available)
            if fit == 0 and available is not None:
                problem = onnx_int8.memory_problem(self.size, available)
                self.stages.console.print(f"int8 artifact skipped: {problem}", highlight=False)
                manifest.skipped_artifacts.append(SkippedArtifact(backend=onnx_int8.LABEL, reason=problem))
                return
            if fit < len(calibration):
                self.stages.console.print(
                    f"int8 calibration on {fit} of {len(calibration)} photos: what fits in {available:.1f} GB",
                    highlight=False,
                )
            calibration = calibration[:fit]

        def write(path: Path) -> dict[str, Any]:
            fields = onnx_int8.quantize(writer.path("model.onnx"), path, options.int8, calibration, reduce_range)
            fields["quantization"]["built_on"] = onnx_int8.instruction_set(flags)
            return fields

        spec = ExportSpec(
            onnx_int8.FILE,
            "onnxruntime",
            f"quantize int8 {options.int8}",
            write,
            precision="int8",
            device="cpu",
            tolerance=DEFAULT_LIMITS["int8"]["model"].max_abs,
            optional=True,
            fields={"label": onnx_int8.LABEL, "optional": True, "opset": ONNX_OPSET},
            note=lambda: f"(reduce_range {'on' if reduce_range else 'off'}: {onnx_int8.instruction_set(flags)})",
        )
        self._export(writer, manifest, spec, check_input, reference)

    def _tensorrt_problem(self) -> str | None:
        """Why no engine can be built here (None: it can); a BuildError if one is required."""
        from pipeline.export import tensorrt_engine

        reason = tensorrt_engine.builder_problem()
        if reason and self.options.require_tensorrt:
            raise BuildError(f"TensorRT engine required (--require-tensorrt) but {reason}")
        return reason

    def _export(self, writer: BundleWriter, manifest: Manifest, spec: ExportSpec, check_input, reference) -> None:
        """Write one artifact, check it against eager, and add it to the manifest (BuildError when off)."""
        tolerance = self.options.export_tolerance if spec.tolerance is None else spec.tolerance
        backend = spec.backend
        with self.stages.stage(spec.title, long=True) as s:
            measured = spec.write(writer.path(spec.file)) or {}
            record = writer.artifact(
                spec.file, backend, spec.precision, spec.device, max_batch=spec.max_batch, **spec.fields, **measured
            )
            s.detail = f"{spec.file}  {record.total_bytes / 1e6:.0f} MB" + (f"  {spec.note()}" if spec.note else "")
        with self.stages.stage(f"check {backend}") as s:
            diff = self._check(writer.staging, manifest, record, check_input, reference)
            record.export_check = ExportCheck(image=samples.CHECK_PHOTO, max_abs_diff=diff, tolerance=tolerance)
            s.detail = f"max |diff| vs eager {diff:.2e}"
        if not diff <= tolerance and spec.optional:
            self.stages.console.print(
                f"{record.name}: {diff:.3g} from eager on '{samples.CHECK_PHOTO}' (> {tolerance:g}); "
                "kept for the parity gate, which will refuse it",
                highlight=False,
            )
        elif not diff <= tolerance:
            raise BuildError(
                f"{backend} artifact differs from the eager model by {diff:.3g} "
                f"(tolerance {tolerance:g}); bundle not written"
            )
        manifest.artifacts.append(record)

    @staticmethod
    def _check(root: Path, manifest: Manifest, artifact: Artifact, check_input, reference) -> float:
        """Run the artifact through the serving backend and compare with the eager output."""
        bundle = Bundle(root=root, manifest=manifest, artifacts=(artifact,))
        try:
            backend = open_backend(bundle, artifact, device="cuda" if artifact.device == "cuda" else "cpu")
        except BackendUnavailableError as exc:
            raise BuildError(f"cannot check the {artifact.backend} artifact: {exc}") from None
        try:
            output = backend.infer(check_input)
        finally:
            backend.close()
        return float(np.max(np.abs(output - reference)))


def build(options: BuildOptions, stages: Stages) -> tuple[Path, Manifest]:
    return Builder(options, stages).run()
