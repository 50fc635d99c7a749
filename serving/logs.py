"""JSON-lines logging through ``logging``: ours, LitServe's and uvicorn's lines in one format.

Cloud Logging reads ``severity`` and ``message`` from each line on stdout. One
formatter (``JsonFormatter``) writes every record; ``configure`` puts it on our
logger, LitServe's and uvicorn's (``uvicorn_log_config`` hands the same set-up
to the uvicorn processes LitServe starts). ``log(message, **fields)`` is how our
code logs: the fields become keys of the line.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any, TextIO

LOGGER_NAME = "inspyrenet"
LIBRARY_LOGGERS = ("litserve", "uvicorn", "uvicorn.error", "uvicorn.access")
_FIELDS = "inspyrenet_fields"

logger = logging.getLogger(LOGGER_NAME)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, severity, message, the logger's name for libraries, our fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "severity": record.levelname,
            "message": record.getMessage(),
        }
        if record.name != LOGGER_NAME:
            entry["logger"] = record.name
        entry.update(getattr(record, _FIELDS, {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is when a record comes, as ``print`` does."""

    @property
    def stream(self) -> TextIO:
        return sys.stdout

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def _handler(stream: TextIO | None) -> logging.Handler:
    handler = logging.StreamHandler(stream) if stream is not None else _StdoutHandler()
    handler.setFormatter(JsonFormatter())
    return handler


def configure(level: str | int = "INFO", stream: TextIO | None = None) -> None:
    """Our logger (every record) and the libraries' (at ``level``) write JSON lines to ``stream`` (stdout)."""
    for name in (LOGGER_NAME, *LIBRARY_LOGGERS):
        target = logging.getLogger(name)
        for old in target.handlers[:]:
            target.removeHandler(old)
        target.addHandler(_handler(stream))
        target.propagate = False
        target.setLevel(logging.DEBUG if name == LOGGER_NAME else _level(level))


def configure_litserve(level: str | int = "INFO", use_rich: bool = False, **_: Any) -> None:
    """Stands in for LitServe's ``configure_logging`` (which ``LitServer.run`` calls): our format, not its own."""
    configure(level, _explicit_stream())


def uvicorn_log_config(level: str | int = "INFO") -> dict[str, Any]:
    """uvicorn's ``log_config``: its loggers write through ``JsonFormatter`` too."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}
    loggers = {
        name: {"handlers": ["json"], "level": _level(level), "propagate": False}
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {"json": handler},
        "loggers": loggers,
    }


def send_to(stream: TextIO | None) -> None:
    """Where log lines go from now on (None: stdout); ``batch`` keeps stdout for its summary."""
    configure(logging.getLogger("litserve").level or "INFO", stream)


def log(message: str, severity: str = "INFO", **fields: Any) -> None:
    """One JSON line: ``message`` at ``severity`` (INFO, WARNING, ERROR...) with ``fields`` as keys."""
    if not logger.handlers:  # a process that did not configure logging (a spawned worker): stdout
        configure()
    logger.log(_level(severity), message, extra={_FIELDS: fields})


def _level(level: str | int) -> int:
    if isinstance(level, int):
        return level
    value = logging.getLevelName(level.upper())
    return value if isinstance(value, int) else logging.INFO


def _explicit_stream() -> TextIO | None:
    """The stream ``send_to`` chose, or None (stdout)."""
    handler = logger.handlers[0] if logger.handlers else None
    if handler is None or isinstance(handler, _StdoutHandler) or not isinstance(handler, logging.StreamHandler):
        return None
    return handler.stream
