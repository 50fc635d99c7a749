"""Mask parity: every artifact of a bundle against the PyTorch reference.

Each backend the machine can run goes through the serving code path (decode,
resize, normalise, infer, upsample: what clients get) on the parity image
set, and is compared with two references:

- model level: the eager fp32 export model on the same preprocessed tensor,
  compared at the model's output resolution (float masks);
- end to end: transparent-background's own ``Remover.process(img, type='map')``
  with the same checkpoint, compared at the image's resolution in 8-bit
  levels (what users of the current API get).

Thresholds depend on the artifact's precision class (fp32, fp16, int8). An
optional artifact (int8) that fails is recorded and never served, and does not
fail the bundle.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import BuildError
from pipeline.parity.images import Case, ParityImage
from serving.backends import BackendUnavailableError, open_backend, runtime_problem
from serving.bundle import Bundle, load_bundle
from serving.imaging.contract import ImageError, decode_image, mask_to_uint8, preprocess, upsample_mask
from serving.manifest import SERVE_ROLE, Artifact

OFF_LEVEL = 2 / 255  # a pixel is "off" when it differs by more than two 8-bit levels
REFERENCES = ("model", "end_to_end")
FP16_ISLANDS = "pytorch-fp16-islands"  # the TensorRT export graph run by PyTorch; reference only
REFERENCES_STORED = "stored in the bundle"  # where a validation's references came from
REFERENCES_COMPUTED = "computed (eager model + Remover)"


@dataclass(frozen=True)
class Limits:
    max_mean_abs: float
    max_p999_abs: float
    max_abs: float
    min_iou: float
    max_off_share: float
    max_nonfinite: int = 0


# Limits per precision class; the measurements each is derived from: docs/build-and-parity.md.
# fp32: about 4x the worst ONNX Runtime CPU error on the synthetic fast bundle (kernels sum in another
# order on each CPU). fp16: about 2x the worst of the fp16-with-fp32-islands graph with emulated fp16;
# all-black sets it (chaotic under any fp16 rounding order), so the share of pixels off is not gated;
# an overflow shows as NaN/Inf, gated at zero. int8: the fp16 limits by design, not from the int8
# graph's own errors (those would pass whatever the quantizer made): the int8 CPU endpoint stands in
# for the fp16 L4 one, so a client gets interchangeable masks from either.
NOT_GATED = 1.0
DEFAULT_LIMITS: dict[str, dict[str, Limits]] = {
    "fp32": {
        "model": Limits(max_mean_abs=1.5e-4, max_p999_abs=1e-3, max_abs=2e-3, min_iou=0.999, max_off_share=0.0),
        "end_to_end": Limits(
            max_mean_abs=1e-4, max_p999_abs=1 / 255 + 1e-6, max_abs=2 / 255 + 1e-6, min_iou=0.999, max_off_share=0.0
        ),
    },
    "fp16": {
        "model": Limits(max_mean_abs=2.5e-2, max_p999_abs=0.3, max_abs=0.45, min_iou=0.975, max_off_share=NOT_GATED),
        "end_to_end": Limits(
            max_mean_abs=2.5e-2, max_p999_abs=0.3, max_abs=0.45, min_iou=0.975, max_off_share=NOT_GATED
        ),
    },
}
DEFAULT_LIMITS["int8"] = dict(DEFAULT_LIMITS["fp16"])


def precision_class(precision: str) -> str:
    """The limits class of an artifact's precision ('fp16' for 'fp16', 'int8' for 'int8', else 'fp32')."""
    return next((cls for cls in ("fp16", "int8") if precision.startswith(cls)), "fp32")


def limits_with_overrides(overrides: list[str]) -> dict[str, dict[str, Limits]]:
    """Apply ``CLASS.REFERENCE.FIELD=VALUE`` overrides (e.g. ``fp16.model.max_abs=0.2``)."""
    limits = {cls: dict(refs) for cls, refs in DEFAULT_LIMITS.items()}
    for item in overrides:
        key, _, value = item.partition("=")
        parts = key.strip().split(".")
        if len(parts) != 3 or parts[0] not in limits or parts[1] not in REFERENCES or not value:
            raise BuildError(
                f"--threshold {item!r}: expected CLASS.REFERENCE.FIELD=VALUE, "
                f"e.g. fp32.model.max_abs=0.001 (classes {', '.join(limits)}; references "
                f"{', '.join(REFERENCES)})"
            )
        cls, ref, name = parts
        if name not in Limits.__dataclass_fields__:
            raise BuildError(
                f"--threshold {item!r}: unknown field {name!r}; fields: {', '.join(Limits.__dataclass_fields__)}"
            )
        try:
            number = int(value) if name == "max_nonfinite" else float(value)
        except ValueError:
            raise BuildError(f"--threshold {item!r}: {value!r} is not a number") from None
        change: dict[str, Any] = {name: number}
        limits[cls][ref] = replace(limits[cls][ref], **change)
    return limits


def mask_metrics(candidate: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Compare two masks in [0, 1]. A NaN or Inf pixel counts as fully wrong."""
    candidate = np.asarray(candidate, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    finite = np.isfinite(candidate)
    diff = np.where(finite, np.abs(np.where(finite, candidate, 0.0) - reference), 1.0)
    ours, theirs = np.where(finite, candidate, 0.0) > 0.5, reference > 0.5
    union = np.logical_or(ours, theirs).sum()
    iou = float(np.logical_and(ours, theirs).sum() / union) if union else 1.0
    return {
        "mean_abs": float(diff.mean()),
        "max_abs": float(diff.max()),
        "p999_abs": float(np.percentile(diff, 99.9)),
        "iou": iou,
        "off_share": float((diff > OFF_LEVEL + 1e-9).mean()),
        "nonfinite": int((~finite).sum()),
    }


def failures(metrics: dict[str, float], limits: Limits) -> list[str]:
    checks = [
        ("mean_abs", metrics["mean_abs"] > limits.max_mean_abs, limits.max_mean_abs, "<="),
        ("p999_abs", metrics["p999_abs"] > limits.max_p999_abs, limits.max_p999_abs, "<="),
        ("max_abs", metrics["max_abs"] > limits.max_abs, limits.max_abs, "<="),
        ("iou", metrics["iou"] < limits.min_iou, limits.min_iou, ">="),
        ("off_share", metrics["off_share"] > limits.max_off_share, limits.max_off_share, "<="),
        ("nonfinite", metrics["nonfinite"] > limits.max_nonfinite, limits.max_nonfinite, "<="),
    ]
    return [f"{name} {metrics[name]:.3g} (limit {op} {limit:.3g})" for name, bad, limit, op in checks if bad]


def checkpoint_state(bundle: Bundle):
    """(resolved checkpoint, state dict) of the bundle's own checkpoint, its sha256 checked (needs torch)."""
    from pipeline import checkpoint as checkpoints
    from pipeline.export.model import expected_keys

    record = bundle.manifest.checkpoint
    ckpt = checkpoints.resolve(record.source, bundle.mode)
    if ckpt.sha256 != record.sha256:
        raise BuildError(
            f"checkpoint {record.source} now has sha256 {ckpt.sha256[:12]}..., the bundle was built from "
            f"{record.sha256[:12]}...: cannot compute its references"
        )
    return ckpt, checkpoints.load_state_dict(ckpt, expected_keys())


class References:
    """The eager model and transparent-background's Remover, built from the bundle's checkpoint."""

    def __init__(self, bundle: Bundle):
        import torch

        from pipeline.export.model import export_model

        self.torch = torch
        self.checkpoint, self.state_dict = checkpoint_state(bundle)
        self.model_size = bundle.input_size
        self.model = export_model(self.state_dict, bundle.input_size)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            from transparent_background import Remover

            self.remover = Remover(mode=bundle.mode, ckpt=str(self.checkpoint.path), device="cpu")

    def case(self, image: ParityImage, size: tuple[int, int]) -> Case:
        decoded = decode_image(image.data)
        tensor = preprocess(decoded, size)
        with self.torch.no_grad():
            model_mask = self.model(self.torch.from_numpy(tensor)).numpy()[0, 0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            end_to_end = np.asarray(self.remover.process(decoded, type="map"))[..., 0]
        return Case(image, (decoded.size[1], decoded.size[0]), tensor, model_mask, end_to_end, decoded)


def run_backend(
    bundle: Bundle,
    artifact: Artifact,
    cases: list[Case],
    limits: dict[str, dict[str, Limits]],
    on_output: Callable[[str, Case, np.ndarray, np.ndarray], None] | None = None,
) -> dict[str, Any]:
    """Parity of one artifact over all cases; a backend this machine cannot run is 'skipped'."""
    entry: dict[str, Any] = {
        "backend": artifact.backend,
        "label": artifact.name,
        "precision": artifact.precision,
        "file": artifact.file,
        "role": artifact.role or SERVE_ROLE,
        "optional": artifact.optional,
    }
    reason = runtime_problem(artifact)
    backend = None
    if reason is None:
        try:
            backend = open_backend(bundle, artifact, device="auto")
        except BackendUnavailableError as exc:
            reason = str(exc)
    if backend is None:
        return {**entry, "status": "skipped", "reason": reason}
    limits_class = precision_class(artifact.precision)
    entry.update(device=backend.device, limits_class=limits_class)
    try:
        return score(entry, cases, lambda tensor: backend.infer(tensor)[0, 0], limits[limits_class], on_output)
    finally:
        backend.close()


def fp16_islands_entry() -> dict[str, Any]:
    """The report row of the PyTorch fp16 graph: a reference, not an artifact."""
    return {"backend": FP16_ISLANDS, "label": FP16_ISLANDS, "precision": "fp16", "file": None, "reference_only": True}


def run_fp16_islands(
    state_dict,
    model_size: tuple[int, int],
    cases: list[Case],
    limits: dict[str, dict[str, Limits]],
    on_output: Callable | None = None,
    execution: str = "auto",
) -> dict[str, Any]:
    """Parity of the fp16-with-fp32-islands PyTorch model (the TensorRT export graph) on CPU.

    The overflow check that needs no GPU: the same graph TensorRT builds, run
    by PyTorch with fp16 storage, against the fp32 eager model, under the fp16
    limits. On a CPU without fast native fp16 the graph runs emulated (fp32
    arithmetic, every fp16 tensor rounded to fp16: pipeline.export.fp16_emulation),
    which costs about what fp32 costs; ``execution`` ('auto', 'native',
    'emulated') chooses. Informative: it serves nothing, so it does not gate
    the bundle.
    """
    import torch

    from pipeline.export.fp16_emulation import fp16_context, fp16_execution
    from pipeline.export.mixed_precision import mixed_precision_model

    model = mixed_precision_model(state_dict, model_size)
    how = fp16_execution("cpu", execution)
    entry = {**fp16_islands_entry(), "device": "cpu", "limits_class": "fp16", "execution": how.as_dict()}

    def infer(tensor: np.ndarray) -> np.ndarray:
        with torch.no_grad(), fp16_context(how):
            return model(torch.from_numpy(tensor)).float().numpy()[0, 0]

    entry = score(entry, cases, infer, limits["fp16"], on_output)
    entry["summary"] += f" (fp16 {how.mode}: {how.reason}; CPU {how.cpu_capability})"
    return entry


def score(
    entry: dict[str, Any],
    cases: list[Case],
    infer: Callable[[np.ndarray], np.ndarray],
    class_limits: dict[str, Limits],
    on_output: Callable | None = None,
) -> dict[str, Any]:
    """Run ``infer`` on every case, compare with both references, and summarise into ``entry``.

    ``on_output(backend_name, case, output, served)`` sees every output (the report's images).
    """
    entry["results"] = []
    for case in cases:
        start = time.perf_counter()
        output = infer(case.tensor)
        latency_ms = (time.perf_counter() - start) * 1000
        served = mask_to_uint8(upsample_mask(output, case.size))
        metrics = {
            "model": mask_metrics(output, case.model_reference),
            "end_to_end": mask_metrics(served / 255.0, case.end_to_end_reference / 255.0),
        }
        problems = [f"{ref}: {p}" for ref in REFERENCES for p in failures(metrics[ref], class_limits[ref])]
        entry["results"].append(
            {
                "image": case.image.name,
                "latency_ms": latency_ms,
                "metrics": metrics,
                "passed": not problems,
                "failures": problems,
            }
        )
        if on_output is not None:
            on_output(entry["label"], case, output, served)
    bad = [r for r in entry["results"] if not r["passed"]]
    entry["status"] = "failed" if bad else "passed"
    entry["latency_ms_median"] = float(np.median([r["latency_ms"] for r in entry["results"]]))
    entry["worst"] = {
        ref: {
            name: (min if name == "iou" else max)(r["metrics"][ref][name] for r in entry["results"])
            for name in ("mean_abs", "p999_abs", "max_abs", "iou", "off_share", "nonfinite")
        }
        for ref in REFERENCES
    }
    if bad:
        first = bad[0]
        entry["summary"] = f"{len(bad)}/{len(cases)} images fail; e.g. {first['image']}: {first['failures'][0]}"
    else:
        entry["summary"] = f"all {len(cases)} images within {entry['limits_class']} limits"
    return entry


def measure_parity(
    bundle_dir: Path,
    images: list[ParityImage] | None,
    limits: dict[str, dict[str, Limits]],
    stages,
    on_output: Callable | None = None,
    fp16_islands: bool = True,
    fp16_mode: str = "auto",
) -> tuple[dict[str, Any], list[Case], str]:
    """Run parity for every artifact of the bundle; return the report, its cases and where the references came from.

    ``images`` None means the default parity set: the references stored in the
    bundle are used when it has them (no torch or transparent-background
    needed), otherwise they are computed. Nothing is written.
    """
    from pipeline.environment import build_environment
    from pipeline.parity import images as parity_images
    from pipeline.parity import references as parity_references

    stage = stages.stage
    with stage("verify bundle") as s:
        bundle = load_bundle(bundle_dir, verify=True)
        s.detail = f"{len(bundle.artifacts)} artifacts"
    state_dict = None
    with stage("references", long=True) as s:
        cases = parity_references.load(bundle) if images is None else None
        if cases is not None:
            source = REFERENCES_STORED
            s.detail = f"{len(cases)} images, {source}"
        else:
            source = REFERENCES_COMPUTED
            references = References(bundle)
            state_dict = references.state_dict
            cases = []
            for image in images if images is not None else parity_images.default_set():
                try:
                    cases.append(references.case(image, bundle.input_size))
                except ImageError as exc:
                    raise BuildError(f"parity image {image.name!r} cannot be decoded: {exc}") from None
            s.detail = f"{len(cases)} images, {source}"
    backends = []
    for artifact in bundle.artifacts:
        with stage(f"parity {artifact.name}", long=True) as s:
            result = run_backend(bundle, artifact, cases, limits, on_output)
            optional = " (optional: never served)" if result["status"] == "failed" and artifact.optional else ""
            s.detail = result["status"] + optional + f": {result.get('reason') or result.get('summary')}"
        backends.append(result)
    if fp16_islands:
        with stage("parity pytorch fp16 islands (cpu)", long=True) as s:
            result = fp16_islands_row(bundle, state_dict, cases, limits, on_output, fp16_mode)
            s.detail = f"{result['status']}: {result.get('summary') or result.get('reason')}"
        backends.append(result)
    ran = [b for b in backends if b["status"] != "skipped" and not b.get("reference_only") and not b.get("optional")]
    report = {
        "bundle": str(Path(bundle_dir).resolve()),
        "mode": bundle.mode,
        "checkpoint": bundle.manifest.checkpoint.to_json(),
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "environment": build_environment(),
        "references": source,
        "limits": {cls: {ref: asdict(lim) for ref, lim in refs.items()} for cls, refs in limits.items()},
        "images": [
            {"name": c.image.name, "note": c.image.note, "height": c.size[0], "width": c.size[1]} for c in cases
        ],
        "backends": backends,
        "passed": bool(ran) and all(b["status"] == "passed" for b in ran),
        "notes": report_notes(bundle, backends),
    }
    return report, cases, source


INT8_NOTE = (
    "{label} is optional: failing its row leaves it unserved without failing the bundle, and it is served only "
    "after passing. Its limits are the fp16 limits (interchangeable masks between the CPU and GPU endpoints)."
)
SYNTHETIC_INT8_NOTE = (
    "This checkpoint is synthetic: its activations are not the official weights', so the int8 graph's ranges "
    "and errors here say nothing about an official-weights build, which must pass this same gate before its "
    "int8 artifact is served."
)


def report_notes(bundle: Bundle, backends: list[dict[str, Any]]) -> list[str]:
    """What a reader needs beside the rows: how optional rows count, and what a synthetic checkpoint means."""
    optional = [b for b in backends if b.get("optional")]
    notes = [INT8_NOTE.format(label=b["label"]) for b in optional]
    if optional and bundle.manifest.checkpoint.kind == "synthetic":
        notes.append(SYNTHETIC_INT8_NOTE)
    return notes


def fp16_islands_row(bundle: Bundle, state_dict, cases: list[Case], limits, on_output, fp16_mode: str):
    """The PyTorch fp16 row; skipped, with the reason, where torch is not installed."""
    entry = fp16_islands_entry()
    try:
        import torch  # noqa: F401
    except ImportError:
        return {**entry, "status": "skipped", "reason": "needs torch, which is not installed here"}
    if state_dict is None:
        state_dict = checkpoint_state(bundle)[1]
    return run_fp16_islands(state_dict, bundle.input_size, cases, limits, on_output, fp16_mode)
