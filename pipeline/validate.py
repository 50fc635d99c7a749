"""``inspyrenet validate``: parity of every artifact, reports written, manifest updated."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from pipeline import parity_images
from pipeline.errors import BuildError
from pipeline.parity import limits_with_overrides, validate
from pipeline.parity_report import ImageSink, record_in_manifest, summary_table, write_reports
from pipeline.progress import Stages


def run_validation(bundle_dir: Path, stages: Stages, images_dir: Path | None = None,
                   report_dir: Path | None = None, thresholds: tuple[str, ...] = (),
                   fp16_islands: bool = True, fp16_mode: str = "auto") -> str | None:
    """Validate the bundle; None when every backend that ran passed, else one line saying what failed."""
    limits = limits_with_overrides(list(thresholds))
    images = parity_images.from_directory(images_dir) if images_dir else parity_images.default_set()
    if not images:
        raise BuildError(f"--images {images_dir}: no image files there")
    report_dir = Path(report_dir) if report_dir else Path(bundle_dir) / "parity"
    sink = ImageSink(report_dir)
    report, cases = validate(bundle_dir, images, limits, stages, on_output=sink.add_output,
                             fp16_islands=fp16_islands, fp16_mode=fp16_mode)
    for case in cases:
        sink.add_case(case)
    with stages.stage("write reports") as s:
        write_reports(report, sink, report_dir)
        record_in_manifest(Path(bundle_dir), report, report_dir)
        s.detail = str(report_dir / "report.html")
    Console(width=max(120, Console().width)).print(summary_table(report))
    if report["passed"]:
        return None
    failed = [f"{b['backend']} ({b['summary']})" for b in report["backends"] if b["status"] == "failed"]
    return "parity failed: " + ("; ".join(failed) or "no backend could run on this machine")
