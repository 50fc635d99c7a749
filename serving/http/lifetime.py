"""The server's processes live and die together.

- Every child asks Linux to SIGKILL it when the main process dies
  (``PR_SET_PDEATHSIG``), so a SIGKILLed or OOM-killed main process leaves no
  HTTP process serving the port and no worker holding the GPU.
- A forked HTTP process starts with SIGTERM's default action instead of the
  main process's handler, so a SIGTERM that reaches it before uvicorn has
  installed its own handler stops it at once.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

MAIN_PID_ENV = "INSPYRENET_MAIN_PID"
_PR_SET_PDEATHSIG = 1
_forker = [0]  # the pid that forked: a forked child reads its copy


def register_main_process() -> None:
    """Called once by the main process before it starts any child."""
    os.environ[MAIN_PID_ENV] = str(os.getpid())
    os.register_at_fork(before=_remember_forker, after_in_child=_after_fork_in_child)


def _remember_forker() -> None:
    _forker[0] = os.getpid()


def _after_fork_in_child() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    die_with_parent(_forker[0])


def die_with_main_process() -> None:
    """For a spawned worker: be SIGKILLed when the main process dies."""
    main = os.environ.get(MAIN_PID_ENV, "")
    if main.isdigit() and int(main) != os.getpid():
        die_with_parent(int(main))


def die_with_parent(parent: int) -> None:
    """Be SIGKILLed when ``parent`` dies; exit now if it already has."""
    if not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died before the request took effect
        os._exit(1)
