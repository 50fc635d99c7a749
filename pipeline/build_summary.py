"""The tables the CLI prints at the end of a build."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from pipeline.progress import Stages
from serving.manifest import Manifest


def build_summary(bundle_dir: Path, manifest: Manifest, stages: Stages) -> Group:
    timing = Table(title="Stages", title_justify="left")
    timing.add_column("stage")
    timing.add_column("seconds", justify="right")
    for record in stages.records:
        timing.add_row(record.name, f"{record.seconds:.1f}")
    timing.add_row(Text("total", style="bold"), Text(f"{stages.total_seconds:.1f}", style="bold"))

    files = Table(title=f"Bundle {bundle_dir}", title_justify="left")
    for column in ("file", "backend", "precision", "MB", "max |diff| vs eager"):
        files.add_column(column, justify="right" if column in ("MB", "max |diff| vs eager") else "left")
    for artifact in manifest.artifacts:
        check = artifact.export_check
        diff = f"{check.max_abs_diff:.2e}" if check is not None else "-"
        files.add_row(artifact.file, artifact.backend, artifact.precision, f"{artifact.total_bytes / 1e6:.0f}", diff)

    parts: list[Any] = [timing, files]
    if not manifest.checkpoint.production_ready:
        parts.append(
            Text(f"checkpoint {manifest.checkpoint.source}: synthetic weights, not for production", style="yellow")
        )
    return Group(*parts)
