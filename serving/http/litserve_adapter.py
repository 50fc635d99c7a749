"""Every use of LitServe's internals, in one place: what the server patches or reads, and why.

LitServe's public API covers the LitAPI and ``LitServer(...).run()``; the server
also needs its logging set-up replaced, its gzip middleware and default routes
removed, its worker-restart interval shortened, and its worker processes, their
set-up statuses and its shutdown event read from the main process. Each of
those names an attribute of the pinned LitServe (constraints/serve.txt);
``tests/unit/test_litserve_adapter.py`` has a test per function here that fails
when an upgrade moves or renames what it uses.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import threading
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any

from serving import logs
from serving.http import lifetime

HTTP_PROCESS_PREFIX = "LitServer-"  # LitServe names each uvicorn process LitServer-<queue id>


def import_litserve() -> Any:
    """LitServe, imported with the API key hidden from it and our log format in place of its own.

    LitServe guards every route, /health included, when LIT_SERVER_API_KEY is set at its import; Cloud
    Run's startup probe sends no key, so our gateway enforces the key (Settings has read it already).
    LitServe configures its logger when it starts (its own plain format on stdout); ours instead, so
    every line on stdout is one JSON object.
    """
    hide_api_key()
    import litserve
    import litserve.server

    litserve.server.configure_logging = logs.configure_litserve
    return litserve


def hide_api_key() -> None:
    """Take LIT_SERVER_API_KEY out of the environment (Settings has read it) before LitServe, or a process
    that imports it (the workers' forkserver), starts."""
    os.environ.pop("LIT_SERVER_API_KEY", None)


def http_processes() -> list[BaseProcess]:
    """The uvicorn processes LitServe started from this one (none before the workers are warm)."""
    return [p for p in mp.active_children() if p.name.startswith(HTTP_PROCESS_PREFIX)]


class _SpawnFrom:
    """Stands in for the ``multiprocessing`` module LitServe's server module uses: its spawn context (the
    inference workers) is ``context``; everything else (the manager, the forked HTTP processes) as before."""

    def __init__(self, context: Any) -> None:
        self._context = context

    def get_context(self, method: str | None = None) -> Any:
        return self._context if method == "spawn" else mp.get_context(method)

    def __getattr__(self, name: str) -> Any:
        return getattr(mp, name)


def workers_from(server_module: Any, context: Any) -> None:
    """LitServe starts each inference worker from ``mp.get_context("spawn")``: from ``context`` instead."""
    server_module.mp = _SpawnFrom(context)


def manager_ignores_sigterm(server: Any) -> None:
    """LitServe's manager process (its queues and shutdown event) ignores SIGTERM: a signal to the whole
    process group would otherwise kill it under the drain (``Monitoring worker crashed``, exit 1)."""
    init_manager = server._init_manager

    def init(num_api_servers: int) -> Any:
        with lifetime.forks_ignore_sigterm():
            return init_manager(num_api_servers)

    server._init_manager = init


@dataclass
class HttpStart:
    """Set once LitServe has started its HTTP processes (its workers are warm), with those processes: a
    dead one stays listed here (``mp.active_children`` forgets it as it reaps it)."""

    event: threading.Event = field(default_factory=threading.Event)
    processes: list[BaseProcess] = field(default_factory=list)


def on_http_started(server: Any) -> HttpStart:
    """Record the HTTP processes LitServe starts: from then on a SIGTERM drains instead of interrupting
    start-up, even after an HTTP process has died."""
    started = HttpStart()
    start_server = server._start_server

    def start(*args: Any, **kwargs: Any) -> Any:
        processes = start_server(*args, **kwargs)
        started.processes.extend(processes.values())
        started.event.set()
        logs.log("listening", http_pids=[p.pid for p in started.processes])
        return processes

    server._start_server = start
    return started


class _AlreadyStopped(logging.Filter):
    """LitServe's shutdown warns "Already not alive" for each HTTP process; ours has stopped them first."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().endswith("Already not alive.")


def quiet_shutdown() -> None:
    logging.getLogger("litserve.server").addFilter(_AlreadyStopped())


def set_restart_interval(server: Any, seconds: float) -> None:
    """How often LitServe looks for a dead worker to restart (its default: 2 s)."""
    server.monitor_internal = seconds


def drop_gzip(server: Any) -> None:
    """LitServe gzips every response over 1 kB; PNG, WebP and JPEG do not compress, and a 12 MP cutout
    would cost seconds of CPU."""
    from starlette.middleware.gzip import GZipMiddleware

    server.app.user_middleware = [m for m in server.app.user_middleware if m.cls is not GZipMiddleware]


def drop_routes(server: Any, paths: set[str]) -> None:
    """Remove LitServe's own routes at ``paths`` (its /health, /, /info) before ours are added."""
    server.app.router.routes = [r for r in server.app.router.routes if getattr(r, "path", None) not in paths]


def inference_workers(server: Any) -> list[BaseProcess]:
    """LitServe's inference worker processes (empty until it has started them)."""
    return list(getattr(server, "inference_workers", None) or [])


def shutting_down(server: Any) -> bool:
    event = server._shutdown_event  # None until LitServe has started its manager
    return event is not None and event.is_set()


def request_shutdown(server: Any) -> None:
    """Ask LitServe to stop its workers and manager (what its own shutdown does)."""
    try:
        if server._shutdown_event is not None:
            server._shutdown_event.set()
    except (OSError, EOFError):  # the manager has already stopped: so has LitServe
        pass


def any_worker_ready(server: Any) -> bool:
    from litserve.utils import WorkerSetupStatus

    statuses = getattr(server, "workers_setup_status", None) or {}
    return any(status == WorkerSetupStatus.READY for status in statuses.values())


def _status_key(server: Any, index: int) -> str | None:
    return next((k for k in server.workers_setup_status if k.endswith(f"_{index}")), None)


def mark_worker_starting(server: Any, index: int) -> None:
    """Worker ``index`` is being replaced: not ready until LitServe's restart reports itself warm."""
    from litserve.utils import WorkerSetupStatus

    key = _status_key(server, index)
    if key is not None:
        server.workers_setup_status[key] = WorkerSetupStatus.STARTING


def mark_worker_failed(server: Any, index: int) -> None:
    """Worker ``index`` failed to start: LitServe stops waiting for it and reports the error."""
    from litserve.utils import WorkerSetupStatus

    key = _status_key(server, index)
    if key is not None:
        server.workers_setup_status[key] = WorkerSetupStatus.ERROR
