"""State shared by the server's processes through a per-run directory.

LitServe's HTTP processes never see the worker's Python objects, so each
worker writes what the HTTP side reports (backend, startup time, or why it
failed) as small JSON files; metrics live in a subdirectory.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from serving.atomic_files import write_json_atomic

DIR_ENV = "INSPYRENET_RUNTIME_DIR"
STARTED_ENV = "INSPYRENET_STARTED_AT"
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare(started_at: float | None = None) -> Path:
    """Create the run directory and export its location to every process started from here."""
    root = Path(tempfile.mkdtemp(prefix="inspyrenet-run-"))
    (root / "metrics").mkdir()
    os.environ[DIR_ENV] = str(root)
    os.environ[METRICS_ENV] = str(root / "metrics")
    os.environ[STARTED_ENV] = repr(started_at if started_at is not None else time.time())
    return root


def cleanup() -> None:
    root = os.environ.get(DIR_ENV)
    if root:
        shutil.rmtree(root, ignore_errors=True)


def root() -> Path:
    return Path(os.environ[DIR_ENV])


def started_at() -> float:
    return float(os.environ.get(STARTED_ENV, time.time()))


def worker_id() -> str:
    return os.environ.get("LITSERVE_WORKER_ID", "0")


def write_worker_state(worker: str, state: dict[str, Any]) -> None:
    write_json_atomic(root() / f"worker-{worker}.json", state)


def forget_worker(worker: str) -> None:
    """The worker died: until its replacement is warm, /warmup does not count it."""
    (root() / f"worker-{worker}.json").unlink(missing_ok=True)


def write_worker_error(worker: str, error: str) -> None:
    write_json_atomic(root() / f"error-{worker}.json", {"error": error})


def _read(pattern: str) -> list[dict[str, Any]]:
    found = []
    for path in sorted(root().glob(pattern)):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    return found


def worker_states() -> list[dict[str, Any]]:
    return _read("worker-*.json")


def mark_stopping() -> None:
    """The main process has drained its HTTP processes (or was stopped during start-up): workers may end."""
    (root() / "stopping").touch()


def stopping() -> bool:
    return DIR_ENV in os.environ and (root() / "stopping").exists()


def worker_errors() -> list[str]:
    return [entry["error"] for entry in _read("error-*.json")]
