"""Request images handed from the HTTP processes to the inference workers as files.

The HTTP process streams each accepted image into ``<run dir>/requests/<id>``
and queues only ``{"id": ..., "params": ...}``: an upload is never joined,
base64-encoded, JSON-parsed or pickled in the HTTP process, and LitServe's
queue carries a few hundred bytes per request.

A worker *takes* a request by renaming its file into ``taken/<pid>/``, one
atomic step, so a request whose file is gone was cancelled (its client went
away, or its deadline passed) and is never run. The marker stays, emptied,
until the worker has answered. When a worker dies the main process writes
``dead/<pid>``, and an HTTP process that finds its request's marker under a
dead pid answers it at once instead of waiting for a response that will not
come.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

from serving.http import run_state

_ID = re.compile(r"^[0-9a-f]{32}$")


def prepare() -> None:
    """Create the hand-off folders in the run directory (main process, before any child starts)."""
    for name in ("requests", "taken", "dead"):
        (run_state.root() / name).mkdir(exist_ok=True)


def new_id() -> str:
    return uuid.uuid4().hex


def _request(request_id: str) -> Path:
    if not _ID.match(request_id):
        raise ValueError(f"not a request id: {request_id!r}")
    return run_state.root() / "requests" / request_id


def _marker(pid: int, request_id: str) -> Path:
    return run_state.root() / "taken" / str(pid) / request_id


# -- HTTP process ------------------------------------------------------------


class Upload:
    """One request's image, written in chunks; visible to workers only once committed."""

    def __init__(self, request_id: str):
        self.path = _request(request_id)
        self._part = self.path.with_name(f".{request_id}.part")
        self._handle = open(self._part, "xb")  # noqa: SIM115 - written chunk by chunk, closed by commit or discard
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self._handle.write(chunk)
        self.size += len(chunk)

    def commit(self) -> None:
        self._handle.close()
        os.rename(self._part, self.path)

    def discard(self) -> None:
        self._handle.close()
        self._part.unlink(missing_ok=True)


def cancel(request_id: str) -> bool:
    """No worker may start this request now; True if none had taken it (it costs a worker nothing more)."""
    try:
        _request(request_id).unlink()
        return True
    except FileNotFoundError:
        return False


def held_by_dead_worker(request_id: str) -> int | None:
    """The pid of a dead worker that had taken this request, or None."""
    for name in os.listdir(run_state.root() / "dead"):  # empty unless a worker has died
        marker = _marker(int(name), request_id)
        if marker.exists():
            marker.unlink(missing_ok=True)
            return int(name)
    return None


# -- inference worker ----------------------------------------------------------


def take(request_id: str) -> bytes | None:
    """The request's image, now held by this process; None if the request was cancelled."""
    marker = _marker(os.getpid(), request_id)
    marker.parent.mkdir(exist_ok=True)
    try:
        os.rename(_request(request_id), marker)
    except FileNotFoundError:
        return None
    data = marker.read_bytes()
    os.truncate(marker, 0)  # the bytes live in this process now; the empty marker says who holds them
    return data


def answered(request_id: str) -> None:
    _marker(os.getpid(), request_id).unlink(missing_ok=True)


# -- main process --------------------------------------------------------------


def mark_dead(pid: int) -> None:
    (run_state.root() / "dead" / str(pid)).touch()
