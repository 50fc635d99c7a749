"""The server's processes live and die together.

- Every child asks Linux to SIGKILL it when the main process dies
  (``PR_SET_PDEATHSIG``), so a SIGKILLed or OOM-killed main process leaves no
  HTTP process serving the port and no worker holding the GPU.
- A forked HTTP process starts with SIGTERM's default action instead of the
  main process's handler, so a SIGTERM that reaches it before uvicorn has
  installed its own handler stops it at once.
- The main process alone decides when the rest stop: a SIGTERM sent to the
  whole process group (``timeout``, ``kill -- -PGID``, systemd) also reaches
  LitServe's manager, which ignores it (``forks_ignore_sigterm``), and the
  inference worker, which goes on answering what the HTTP processes drain and
  ends only once the main process has marked the run stopping
  (``worker_sigterm_waits_for_the_main_process``).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from serving.http import run_state

MAIN_PID_ENV = "INSPYRENET_MAIN_PID"
_PR_SET_PDEATHSIG = 1
_forker = [0]  # the pid that forked: a forked child reads its copy
_fork_sigterm = [signal.SIG_DFL]  # what a forked child does on SIGTERM until it installs its own handler


def register_main_process() -> None:
    """Called once by the main process before it starts any child."""
    os.environ[MAIN_PID_ENV] = str(os.getpid())
    os.register_at_fork(before=_remember_forker, after_in_child=_after_fork_in_child)


def _remember_forker() -> None:
    _forker[0] = os.getpid()


def _after_fork_in_child() -> None:
    signal.signal(signal.SIGTERM, _fork_sigterm[0])
    die_with_parent(_forker[0])


@contextmanager
def forks_ignore_sigterm() -> Iterator[None]:
    """Children forked inside ignore SIGTERM (LitServe's manager: the main process shuts it down last)."""
    _fork_sigterm[0] = signal.SIG_IGN
    try:
        yield
    finally:
        _fork_sigterm[0] = signal.SIG_DFL


def worker_sigterm_waits_for_the_main_process() -> None:
    """For a spawned worker: a SIGTERM ends it only once the main process has marked the run stopping
    (its HTTP processes have drained); before that (a signal to the whole group) it goes on serving."""

    def on_sigterm(signum, frame) -> None:
        if run_state.stopping():
            os._exit(0)

    signal.signal(signal.SIGTERM, on_sigterm)


def start_worker_forkserver(preload: tuple[str, ...]) -> Any:
    """The forkserver the inference workers are forked from, started now with ``preload`` imported.

    A spawned worker is a fresh Python that imports LitServe, FastAPI, numpy and the runtime again
    before it can load the model; the forkserver does those imports while the main process checks the
    bundle and builds the server, so a worker starts with them done. It is a fresh Python too (no thread,
    no CUDA, nothing of this process), so its forks are as safe for CUDA as spawned workers, as long as
    ``preload`` initialises no GPU (no torch, no TensorRT). Started with SIGTERM ignored, which it and its
    workers inherit: a SIGTERM to the whole group must not end them under the drain (the workers install
    their own handler, ``worker_sigterm_waits_for_the_main_process``). It ends when this process does.
    """
    import multiprocessing as mp
    from multiprocessing import forkserver

    context = mp.get_context("forkserver")
    context.set_forkserver_preload(list(preload))
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGTERM, previous)
    return context


def die_with_main_process() -> None:
    """For a worker (forked by the forkserver, or spawned): be SIGKILLed when its parent dies (the main
    process, or the forkserver, which ends with it); exit now if the main process has already died."""
    main = os.environ.get(MAIN_PID_ENV, "")
    if main.isdigit() and int(main) != os.getpid():
        die_with_parent(os.getppid())
        if not _alive(int(main)):
            os._exit(1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def die_with_parent(parent: int) -> None:
    """Be SIGKILLed when ``parent`` dies; exit now if it already has."""
    if not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died before the request took effect
        os._exit(1)
