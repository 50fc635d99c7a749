"""JSON-lines logging to stdout (Cloud Logging reads ``severity`` and ``message``)."""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Any


def log(message: str, severity: str = "INFO", **fields: Any) -> None:
    record = {
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
        "severity": severity,
        "message": message,
        **fields,
    }
    sys.stdout.write(json.dumps(record, default=str) + "\n")
    sys.stdout.flush()
