"""JSON-lines logging to stdout (Cloud Logging reads ``severity`` and ``message``)."""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Any, TextIO


_default_stream: TextIO | None = None


def send_to(stream: TextIO | None) -> None:
    """Where ``log`` writes by default (None: stdout); ``batch`` keeps stdout for its summary."""
    global _default_stream
    _default_stream = stream


def log(message: str, severity: str = "INFO", *, stream: TextIO | None = None, **fields: Any) -> None:
    """One JSON line on ``stream`` (else the default of ``send_to``, else stdout)."""
    record = {
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
        "severity": severity,
        "message": message,
        **fields,
    }
    stream = stream or _default_stream or sys.stdout
    stream.write(json.dumps(record, default=str) + "\n")
    stream.flush()
