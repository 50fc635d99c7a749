"""``inspyrenet build-engine``: add the TensorRT fp16 engine to a finished bundle, on the GPU, without torch.

The CPU build (``inspyrenet build``) leaves everything the GPU step needs in
the bundle: the fp16-with-fp32-islands ONNX graph (``model.fp16.onnx``, role
``tensorrt-source``) and the parity references. This step compiles the graph
with TensorRT's builder, inspects the engine (I/O contract, fp16), writes a
new bundle next to the old one (hard links to the unchanged files, the plan,
the manifest last) and swaps it in; then validation runs the engine through
the serving backend against the stored references and records its parity.
A GPU machine needs the base install plus ``tensorrt-cu12``: no torch, no
transparent-background.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.bundle_writer import BundleWriter
from pipeline.errors import BuildError
from pipeline.export import tensorrt_engine
from pipeline.paths import cache_root
from pipeline.progress import Stages
from serving.bundle import load_bundle
from serving.manifest import TENSORRT_SOURCE_ROLE, Manifest, Validation


def add_engine(
    bundle_dir: Path, options: tensorrt_engine.TensorRTOptions, stages: Stages, require: bool = False
) -> Manifest | None:
    """Compile the bundle's fp16 graph into an engine and add it; the new manifest, or None when skipped."""
    stage = stages.stage
    reason = tensorrt_engine.builder_problem()
    if reason and require:  # before hashing the bundle: the GPU job fails at once, in one line
        raise BuildError(f"TensorRT engine required (--require-tensorrt) but {reason}")
    with stage("verify bundle") as s:
        bundle = load_bundle(bundle_dir, verify=True)
        source = bundle.by_role(TENSORRT_SOURCE_ROLE)
        if source is None:
            raise BuildError(
                f"{bundle_dir} has no fp16 ONNX graph to compile (an artifact with role "
                f"'{TENSORRT_SOURCE_ROLE}', model.fp16.onnx): rebuild it with `inspyrenet build`"
            )
        if bundle.manifest.parity_references is None:
            raise BuildError(
                f"{bundle_dir} has no stored parity references to check the engine against: "
                "run `inspyrenet validate` on it where the build dependencies are installed"
            )
        s.detail = f"source {source.file}"
    if reason:
        stages.console.print(f"TensorRT artifact skipped: {reason}", highlight=False)
        return None
    options = tensorrt_engine.with_default_timing_cache(options, cache_root())
    file = tensorrt_engine.engine_file(tensorrt_engine.gpu_name(), options.hardware_compatible)
    manifest = bundle.manifest.model_copy(deep=True)
    with BundleWriter(bundle_dir) as writer:
        writer.keep_files_of(bundle_dir, leave_out={file})
        with stage("build tensorrt fp16", long=True) as s:
            weights = (source.model_extra or {}).get("graph_check", {}).get("weights")  # None: an older bundle
            fields = tensorrt_engine.build(
                writer.path(source.file), bundle.input_size, options, writer.path(file), weights
            )
            record = writer.artifact(file, "tensorrt", "fp16", "cuda", max_batch=options.max_batch, **fields)
            s.detail = f"{file}  {record.bytes / 1e6:.0f} MB, {fields['precision_check']['convolutions']}"
        manifest.artifacts = [record, *(a for a in manifest.artifacts if a.backend != "tensorrt")]
        manifest.skipped_artifacts = [a for a in manifest.skipped_artifacts if a.backend != "tensorrt"]
        manifest.validation = Validation(status="pending")
        with stage("write manifest"):
            writer.commit(manifest)
    return manifest
