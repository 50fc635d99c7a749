"""Build progress on the terminal: a line per stage with its duration, a live bar for long stages."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


@dataclass
class StageRecord:
    name: str
    seconds: float = 0.0
    detail: str = ""
    ok: bool = False


class Stages:
    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True, soft_wrap=True)
        self.records: list[StageRecord] = []

    @contextmanager
    def stage(self, name: str, long: bool = False) -> Iterator[StageRecord]:
        """Time a stage; ``long`` shows a live bar while it runs. Set ``record.detail`` to annotate."""
        record = StageRecord(name)
        self.records.append(record)
        start = time.perf_counter()
        try:
            if long:
                with Progress(
                    SpinnerColumn(),
                    TextColumn("{task.description}"),
                    BarColumn(),
                    TimeElapsedColumn(),
                    console=self.console,
                    transient=True,
                    disable=not self.console.is_terminal,
                ) as bar:
                    bar.add_task(name, total=None)
                    yield record
            else:
                yield record
            record.ok = True
        finally:
            record.seconds = time.perf_counter() - start
            # A failed stage prints nothing here: the error that stopped it is the one line to read.
            if record.ok:
                detail = f"  {record.detail}" if record.detail else ""
                self.console.print(f"[green]ok[/green] {name:<22} {record.seconds:7.1f} s{detail}", highlight=False)

    @property
    def total_seconds(self) -> float:
        return sum(r.seconds for r in self.records)
