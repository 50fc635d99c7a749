"""``inspyrenet validate``: parity of every artifact, reports written, manifest updated."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from pipeline.errors import BuildError
from pipeline.parity import images as parity_images
from pipeline.parity import references as parity_references
from pipeline.parity.check import REFERENCES_COMPUTED, limits_with_overrides, measure_parity
from pipeline.parity.report import ImageSink, record_in_manifest, summary_table, write_reports
from pipeline.progress import Stages


def validate_and_record(
    bundle_dir: Path,
    stages: Stages,
    images_dir: Path | None = None,
    report_dir: Path | None = None,
    thresholds: tuple[str, ...] = (),
    fp16_islands: bool = True,
    fp16_mode: str = "auto",
) -> str | None:
    """Validate the bundle; None when every backend that ran passed, else one line saying what failed.

    With the default image set, the references stored in the bundle are used
    when present (and said so); otherwise they are computed and stored, so a
    later run (the GPU engine step) needs neither torch nor transparent-background.
    """
    limits = limits_with_overrides(list(thresholds))
    images = parity_images.from_directory(images_dir) if images_dir else None
    if images is not None and not images:
        raise BuildError(f"--images {images_dir}: no image files there")
    report_dir = Path(report_dir) if report_dir else Path(bundle_dir) / "parity"
    sink = ImageSink(report_dir)
    report, cases, source = measure_parity(
        bundle_dir, images, limits, stages, on_output=sink.add_output, fp16_islands=fp16_islands, fp16_mode=fp16_mode
    )
    stages.console.print(f"parity references: {source}", highlight=False)
    for case in cases:
        sink.add_case(case)
    with stages.stage("write reports") as s:
        write_reports(report, sink, report_dir)
        stored = None
        if images is None and source == REFERENCES_COMPUTED:
            stored = parity_references.save(Path(bundle_dir), cases, report["checkpoint"]["sha256"])
        record_in_manifest(Path(bundle_dir), report, report_dir, stored)
        s.detail = str(report_dir / "report.html")
    Console(width=max(120, Console().width)).print(summary_table(report))
    if report["passed"]:
        return None
    failed = [
        f"{b['label']} ({b['summary']})"
        for b in report["backends"]
        if b["status"] == "failed" and not b.get("reference_only") and not b.get("optional")
    ]
    return "parity failed: " + ("; ".join(failed) or "no backend could run on this machine")
