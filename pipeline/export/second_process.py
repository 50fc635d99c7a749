"""Run one export in a second process while this one does the others.

The dynamo ONNX exporter is single-threaded Python: the fp32 graph and the
fp16-with-fp32-islands graph, exported one after the other, leave a core idle
for minutes (docs/performance.md, "Building the fast bundle", has the times). Exported side by side
they take the time of the longer one.

The child is spawned (no fork of a process that holds torch's thread pools),
dies with its parent (a killed build leaves no exporter behind), and sends back
either its result or one error line: only a ``BuildError`` crosses back, so
the CLI prints it like any other.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import signal
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from pipeline.errors import BuildError

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (elsewhere: nothing to do)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _run(send: Connection, function: Callable[..., Any], args: tuple) -> None:
    _die_with_parent()
    start = time.perf_counter()
    try:
        value = function(*args)
    except BuildError as exc:
        send.send(("error", str(exc), time.perf_counter() - start))
    except BaseException as exc:  # anything else: its type and first line, as the CLI would print it
        first_line = (str(exc).splitlines() or [""])[0]
        send.send(("error", f"{type(exc).__name__}: {first_line}", time.perf_counter() - start))
    else:
        send.send(("ok", value, time.perf_counter() - start))
    finally:
        send.close()


class SecondProcess:
    """``function(*args)`` started now in a spawned process; ``result()`` waits for it.

    ``function`` and its arguments must be picklable (a module-level function).
    """

    def __init__(self, function: Callable[..., Any], *args: Any):
        context = multiprocessing.get_context("spawn")
        self._receive, send = context.Pipe(duplex=False)
        self._process = context.Process(target=_run, args=(send, function, args), daemon=True)
        self._process.start()
        send.close()
        self.seconds: float | None = None  # how long the function ran in the child

    def result(self) -> Any:
        """The function's return value; a BuildError with its message if it failed or the process died."""
        try:
            status, value, self.seconds = self._receive.recv()
        except EOFError:
            self._process.join()
            raise BuildError(f"the export process died (exit code {self._process.exitcode})") from None
        finally:
            self._receive.close()
        self._process.join()
        if status == "error":
            raise BuildError(value)
        return value

    def stop(self) -> None:
        """Stop the child if it still runs (the build failed elsewhere)."""
        if self._process.is_alive():
            self._process.kill()
        self._process.join()
