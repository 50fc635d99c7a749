"""Write the parity report: report.json, report.html with its images, a terminal summary,
and each artifact's parity summary into the bundle's manifest."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import jinja2
import numpy as np
from PIL import Image
from rich.table import Table

from pipeline.parity.check import FP16_ISLANDS
from serving.atomic_files import write_bytes_atomic, write_json_atomic
from serving.bundle import read_manifest, write_manifest
from serving.manifest import ParityReferences, ParityResult, Validation

THUMB = 256
DIFF_GAIN = 25.0  # heatmap: a difference of 1/25 = 10 levels is full scale


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text)


def _thumb(img: Image.Image) -> Image.Image:
    img = img.copy()
    img.thumbnail((THUMB, THUMB), Image.Resampling.BILINEAR)
    return img


def _heatmap(diff: np.ndarray) -> Image.Image:
    scaled = np.clip(np.nan_to_num(diff, nan=1.0) * DIFF_GAIN, 0, 1)
    colored = cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)
    return Image.fromarray(cv2.cvtColor(colored, cv2.COLOR_BGR2RGB))


class ImageSink:
    """Collects the thumbnails the HTML shows, written under ``images/``."""

    def __init__(self, report_dir: Path):
        self.dir = report_dir / "images"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.files: dict[tuple[str, str], str] = {}

    def save(self, key: tuple[str, str], img: Image.Image) -> None:
        name = f"{_slug(key[0])}--{_slug(key[1])}.png"
        _thumb(img).save(self.dir / name)
        self.files[key] = f"images/{name}"

    def add_case(self, case) -> None:
        self.save((case.image.name, "input"), case.decoded)
        self.save((case.image.name, "reference"), Image.fromarray(case.end_to_end_reference, "L"))

    def add_output(self, backend: str, case, output, served: np.ndarray) -> None:
        self.save((case.image.name, backend), Image.fromarray(served, "L"))
        diff = np.abs(served.astype(np.float32) - case.end_to_end_reference.astype(np.float32)) / 255.0
        self.save((case.image.name, f"{backend}-diff"), _heatmap(diff))


def _number(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("pipeline.parity", "templates"),
    autoescape=True,  # names, notes and reasons come from files and errors: never markup
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_TEMPLATES.filters["number"] = _number


def render_html(report: dict[str, Any], sink: ImageSink) -> str:
    """report.html (templates/report.html.j2): the verdict, each backend, the limits, then every image."""
    ran = [b for b in report["backends"] if b["status"] != "skipped"]  # with the fp16-islands row
    images = []
    for image in report["images"]:
        name = image["name"]
        figures = [
            {"src": sink.files[(name, key)], "caption": caption}
            for key, caption in (("input", "input"), ("reference", "Remover (reference)"))
        ]
        for b in ran:
            for key, caption in ((b["label"], f"{b['label']} mask"), (f"{b['label']}-diff", "diff")):
                if (name, key) in sink.files:
                    figures.append({"src": sink.files[(name, key)], "caption": caption})
        rows = []
        for b in ran:
            result = next(r for r in b["results"] if r["image"] == name)
            for ref in ("model", "end_to_end"):
                failed = any(f.startswith(ref) for f in result["failures"])
                rows.append(
                    {
                        "label": b["label"],
                        "reference": ref,
                        "metrics": result["metrics"][ref],
                        "latency_ms": result["latency_ms"],
                        "verdict": "failed" if failed else "passed",
                    }
                )
        images.append({**image, "figures": figures, "rows": rows})
    first_limits = next(iter(next(iter(report["limits"].values())).values()))
    return _TEMPLATES.get_template("report.html.j2").render(
        report=report,
        verdict="passed" if report["passed"] else "failed",
        images=images,
        limit_names=list(first_limits),
        full_scale_levels=f"{255 / DIFF_GAIN:.0f}",
    )


def write_reports(report: dict[str, Any], sink: ImageSink, report_dir: Path) -> None:
    write_json_atomic(report_dir / "report.json", report)
    write_bytes_atomic(report_dir / "report.html", render_html(report, sink).encode("utf-8"))


def record_in_manifest(
    bundle_dir: Path, report: dict[str, Any], report_dir: Path, references: ParityReferences | None = None
) -> None:
    """Each artifact's parity summary goes into the manifest, so the server can refuse a failed one.

    ``references``: the stored parity references' record (pipeline.parity.references), when new.
    """
    manifest = read_manifest(bundle_dir)
    # Only a report inside the bundle is recorded: a folder elsewhere (a temporary one) is gone later.
    inside = Path(report_dir).resolve().is_relative_to(Path(bundle_dir).resolve())
    report_path = os.path.relpath(report_dir / "report.json", bundle_dir) if inside else None
    by_file = {b["file"]: b for b in report["backends"] if b.get("file")}
    for artifact in manifest.artifacts:
        result = by_file.get(artifact.file)
        if result is None:
            continue
        earlier = artifact.parity
        if result["status"] == "skipped" and earlier is not None and earlier.status in ("passed", "failed"):
            # Not checked here (a torch-free machine cannot run TorchScript): its verdict stands, marked.
            why = result.get("reason") or "not run"
            earlier.not_rechecked = f"not checked again at {report['created_at']}: {why}"
            continue
        artifact.parity = ParityResult(
            status=result["status"],
            summary=result.get("summary") or result.get("reason"),
            limits_class=result.get("limits_class"),
            checked_at=report["created_at"],
            device=result.get("device"),
            references=report.get("references"),
            report=report_path,
        )
    validation = Validation(
        status="passed" if report["passed"] else "failed",
        checked_at=report["created_at"],
        references=report.get("references"),
        report=report_path,
    )
    islands = next((b for b in report["backends"] if b["backend"] == FP16_ISLANDS), None)
    if islands is not None and islands["status"] != "skipped":
        validation.fp16_islands = {
            "status": islands["status"],
            "summary": islands["summary"],
            "device": islands["device"],
            "worst_model_max_abs": islands["worst"]["model"]["max_abs"],
            "execution": islands["execution"],
            "note": "the TensorRT fp16 graph run by PyTorch (fp16 storage; see execution); informative, gates nothing",
        }
    elif islands is not None:
        validation.fp16_islands = {"status": "skipped", "reason": islands["reason"]}
    manifest.validation = validation
    if references is not None:
        manifest.parity_references = references
    write_manifest(bundle_dir, manifest)


def summary_table(report: dict[str, Any]) -> Table:
    table = Table(title=f"Mask parity: {'PASSED' if report['passed'] else 'FAILED'}", title_justify="left")
    for column in ("backend", "status", "worst max|d| model", "worst p99.9 e2e", "worst IoU e2e", "ms", "note"):
        table.add_column(column)
    for b in report["backends"]:
        worst = b.get("worst")
        style = {"passed": "green", "failed": "red", "skipped": "yellow"}[b["status"]]
        table.add_row(
            b["label"],
            f"[{style}]{b['status']}[/{style}]" + (" (optional)" if b.get("optional") else ""),
            _number(worst["model"]["max_abs"]) if worst else "-",
            _number(worst["end_to_end"]["p999_abs"]) if worst else "-",
            _number(worst["end_to_end"]["iou"]) if worst else "-",
            f"{b['latency_ms_median']:.0f}" if "latency_ms_median" in b else "-",
            b.get("summary") or b.get("reason") or "",
        )
    return table
