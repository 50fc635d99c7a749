"""``inspyrenet serve``: preflight in the main process, then LitServe.

The main process reads the manifest, picks the artifacts that may be served
and verifies the first one's sha256, so every error a user can cause (no
bundle, tampered file, backend not in the bundle, runtime not installed) is
one line and a non-zero exit before any worker starts. The workers then
load and warm the backend (``serving.http.api``).

LitServe installs no SIGTERM handler: without one, Cloud Run's SIGTERM kills
the main process and orphans the workers. Ours stops the HTTP processes first
(uvicorn finishes in-flight requests), then lets LitServe stop the workers; a
SIGTERM during start-up (no request can be in flight yet) stops at once.

A worker that dies (an OOM kill, a crashed GPU runtime) is replaced by
LitServe's ``restart_workers``; ``WorkerSupervisor`` logs why it died, has the
requests it held answered 503 at once (``serving.http.handoff``), and keeps
``/health`` at 503 until a worker is warm again.
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.connection
import signal
import threading
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from serving import logs
from serving.backends.selection import SelectionError
from serving.bundle import BundleError, load_bundle
from serving.http import handoff, lifetime, litserve_adapter, run_state
from serving.loading import ServeError, preflight
from serving.logs import log
from serving.manifest import MANIFEST_NAME
from serving.settings import Settings
from serving.store.gcs import StorageError

HTTP_DRAIN_SECONDS = 30
# What the workers' forkserver imports before the first worker starts: what unpickling the LitAPI needs
# (LitServe, FastAPI, numpy, our request path) and the CPU runtime. Nothing that could initialise CUDA.
WORKER_PRELOAD = ("serving.http.api", "onnxruntime")
WATCH_SECONDS = 0.25
MAX_FAILED_RESTARTS = 3


class StartupInterruptedError(Exception):
    """SIGTERM arrived before the server was serving."""


def _stop_serving(server) -> None:
    """Stop the HTTP processes (uvicorn finishes in-flight requests), then LitServe's workers and manager."""
    http = litserve_adapter.http_processes()
    for process in http:
        process.terminate()
    for process in http:
        process.join(timeout=HTTP_DRAIN_SECONDS)
    run_state.mark_stopping()  # nothing is in flight any more: the workers may end on SIGTERM
    litserve_adapter.request_shutdown(server)


def _install_sigterm(server, http: litserve_adapter.HttpStart, stopping: threading.Event) -> None:
    def on_sigterm(signum, frame) -> None:
        if stopping.is_set():
            return
        stopping.set()
        if not http.event.is_set():
            run_state.mark_stopping()
            raise StartupInterruptedError  # out of LitServe's wait for warm workers, in the main thread
        log("SIGTERM received: draining in-flight requests, then stopping")
        threading.Thread(target=_stop_serving, args=(server,), name="sigterm-drain", daemon=True).start()

    signal.signal(signal.SIGTERM, on_sigterm)


def _exit_cause(exitcode: int | None) -> str:
    if exitcode is None:
        return "unknown exit"
    if exitcode < 0:
        name = signal.Signals(-exitcode).name if -exitcode in signal.valid_signals() else str(-exitcode)
        return f"killed by {name}" + (" (out of memory?)" if exitcode == -signal.SIGKILL else "")
    return f"exit code {exitcode}"


class WorkerSupervisor(threading.Thread):
    """Watches LitServe's inference workers and HTTP processes from the main process.

    LitServe restarts a dead worker. On a death: the cause is logged, the
    requests the worker held are marked lost (their HTTP processes answer 503),
    and its status goes back to STARTING so ``/health`` is 503 until a worker is
    warm. A worker that dies during start-up is an error LitServe reports; after
    ``MAX_FAILED_RESTARTS`` replacements in a row fail, the server stops with
    the last reason. Nothing replaces an HTTP process: when one dies unasked the
    port is dead, so the server stops at once with that reason (exit 1), and the
    platform starts a new instance.
    """

    def __init__(self, server: Any, http: litserve_adapter.HttpStart, stopping: threading.Event) -> None:
        super().__init__(name="worker-supervisor", daemon=True)
        self.server = server
        self.http = http.processes
        self.stopping = stopping  # set by the SIGTERM handler: deaths from then on are the stop's own
        self.failure: str | None = None
        self._seen: set[int | None] = set()
        self._failed_restarts = 0

    def run(self) -> None:
        try:
            while not litserve_adapter.shutting_down(self.server) and self.failure is None:
                workers = litserve_adapter.inference_workers(self.server)
                watched = [p for p in [*workers, *self.http] if p.pid is not None and p.pid not in self._seen]
                if not watched:
                    time.sleep(WATCH_SECONDS)
                    continue
                ready = multiprocessing.connection.wait([p.sentinel for p in watched], timeout=WATCH_SECONDS)
                for process in watched:
                    if process.sentinel not in ready or litserve_adapter.shutting_down(self.server):
                        continue
                    self._seen.add(process.pid)
                    if process in self.http:
                        self._on_http_death(process)
                    else:
                        self._on_death(workers.index(process), process)
        except Exception:  # noqa: BLE001 - LitServe's manager is gone (its proxies fail in several ways): stopping
            return

    def _on_http_death(self, process: BaseProcess) -> None:
        process.join(timeout=1)
        if self.stopping.wait(timeout=WATCH_SECONDS):  # a SIGTERM to the whole group reached it first
            return
        self.failure = f"the HTTP process {process.name} died ({_exit_cause(process.exitcode)}): the port is dead"
        log("stopping: " + self.failure, severity="ERROR", pid=process.pid)
        _stop_serving(self.server)

    def _on_death(self, index: int, process: BaseProcess) -> None:
        process.join(timeout=1)
        cause = _exit_cause(process.exitcode)
        was_serving = any(state.get("pid") == process.pid for state in run_state.worker_states())
        if process.pid is not None:  # a process that was watched has started, so it has a pid
            handoff.mark_dead(process.pid)
        run_state.forget_worker(str(index))
        if was_serving:
            self._failed_restarts = 0
            litserve_adapter.mark_worker_starting(self.server, index)
            log(
                "inference worker died: replacing it", severity="ERROR", worker=str(index), pid=process.pid, cause=cause
            )
            _count_death()
            return
        errors = run_state.worker_errors()
        reason = errors[-1] if errors else f"worker {index} died during start-up: {cause}"
        self._failed_restarts += 1
        log(
            "inference worker failed to start",
            severity="ERROR",
            worker=str(index),
            pid=process.pid,
            cause=cause,
            reason=reason,
            failures=self._failed_restarts,
        )
        if not litserve_adapter.http_processes():  # the first start: LitServe stops waiting on an ERROR, reports it
            run_state.write_worker_error(str(index), reason)
            litserve_adapter.mark_worker_failed(self.server, index)
        elif self._failed_restarts >= MAX_FAILED_RESTARTS:
            self.failure = f"the inference worker failed to start {self._failed_restarts} times in a row: {reason}"
            log("stopping: " + self.failure, severity="ERROR")
            _stop_serving(self.server)


def _count_death() -> None:
    from serving.http.metrics import metrics

    metrics().worker_deaths.inc()


def _build_server(
    settings: Settings, usable: list[str], verified: set[str], model: dict | None = None, workers: Any = None
):
    """The LitServer with our gateway and routes; ``model``: what GET /info answers (``model_description``);
    ``workers``: the multiprocessing context the inference workers start from (LitServe's spawn if None)."""
    ls = litserve_adapter.import_litserve()  # uvicorn's processes get our log format through log_config
    if workers is not None:
        litserve_adapter.workers_from(ls.server, workers)
    from fastapi.middleware.cors import CORSMiddleware

    from serving.http.admission import Admission
    from serving.http.api import API_PATH, CutoutAPI
    from serving.http.gateway import CutoutGateway, info_route, prometheus, warmup

    api = CutoutAPI(settings, backends=usable, verified=verified)
    server = ls.LitServer(
        api,
        accelerator="cpu",  # a label only: the backend picks the GPU itself, and "auto" would import torch
        workers_per_device=settings.workers,
        timeout=settings.request_timeout,
        restart_workers=True,
        disable_openapi_url=not settings.docs,  # also turns off /docs and /redoc
    )
    litserve_adapter.set_restart_interval(server, WATCH_SECONDS)
    litserve_adapter.manager_ignores_sigterm(server)
    litserve_adapter.quiet_shutdown()
    _replace_health_route(server)
    litserve_adapter.drop_gzip(server)
    server.app.add_middleware(
        CutoutGateway, api_path=API_PATH, settings=settings, admission=Admission(settings.in_flight_limit)
    )
    if settings.cors_origins:
        server.app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Content-Type", "X-API-Key"],
            expose_headers=[
                "X-Backend",
                "X-Inference-Ms",
                "X-Total-Ms",
                "X-Image-Width",
                "X-Image-Height",
                "Server-Timing",
                "Retry-After",  # a cross-origin client reads it to wait out a 503 (clients/web)
                # POST /v1.0/removebg's (remove.bg's own)
                "X-Width",
                "X-Height",
                "X-Type",
                "X-Credits-Charged",
                "X-Foreground-Top",
                "X-Foreground-Left",
                "X-Foreground-Width",
                "X-Foreground-Height",
            ],
            max_age=600,
        )
    server.app.add_api_route("/warmup", warmup, methods=["POST", "GET"], include_in_schema=False)
    server.app.add_api_route("/metrics", prometheus, methods=["GET"], include_in_schema=False)
    if model is not None:
        server.app.add_api_route("/info", info_route(model), methods=["GET"], include_in_schema=False)
    return server


def _replace_health_route(server) -> None:
    """/health: 200 while at least one worker is warm (LitServe's wants all of them); LitServe's "/" and
    /info (its server configuration) off: /info is ours, the model's input size (``gateway.info_route``)."""
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse

    async def health(request: Request) -> PlainTextResponse:
        if litserve_adapter.any_worker_ready(server):
            states = run_state.worker_states()  # what serves, and on which device: "ok tensorrt cuda"
            served = [states[0].get("artifact", states[0]["backend"]), states[0]["device"]] if states else []
            return PlainTextResponse(" ".join(["ok", *served]))
        return PlainTextResponse("not ready", status_code=503)

    litserve_adapter.drop_routes(server, {"/health", "/", "/info"})
    server.app.add_route("/health", health, methods=["GET"], include_in_schema=False)


def pull_if_missing(settings: Settings) -> None:
    """No baked bundle but INSPYRENET_ARTIFACTS_URI set: pull it first (the slow path)."""
    if (Path(settings.artifacts) / MANIFEST_NAME).is_file() or not settings.artifacts_uri:
        return
    from serving.store.bundles import pull

    start = time.perf_counter()
    log(
        "no baked bundle: pulling from Cloud Storage (slow path)",
        severity="WARNING",
        uri=settings.artifacts_uri,
        target=str(settings.artifacts),
    )
    try:
        pull(settings.artifacts_uri, Path(settings.artifacts), reports=False)
    except StorageError as exc:
        raise ServeError(f"cannot pull {settings.artifacts_uri}: {exc}") from None
    log("startup phase", phase="pull", seconds=round(time.perf_counter() - start, 3), process="main")


def run(settings: Settings) -> None:
    started = time.time()
    log(
        "starting",
        artifacts=str(settings.artifacts),
        backend=settings.backend,
        port=settings.port,
        workers=settings.workers,
        max_batch_size=settings.max_batch_size,
    )
    pull_if_missing(settings)
    run_state.prepare(started)  # the environment the forkserver, and so every worker, starts with
    handoff.prepare()
    lifetime.register_main_process()
    try:
        litserve_adapter.hide_api_key()
        workers = lifetime.start_worker_forkserver(WORKER_PRELOAD)  # imports beside the preflight
        try:
            usable, verified = preflight(settings)
            bundle = load_bundle(settings.artifacts, verify=False)
        except (BundleError, SelectionError) as exc:
            raise ServeError(str(exc)) from None
        from serving.http.gateway import model_description
        from serving.http.header_timeout import with_header_timeout

        model = model_description(bundle.mode, bundle.input_size)
        server = _build_server(settings, usable, verified, model, workers)
        stopping = threading.Event()
        http = litserve_adapter.on_http_started(server)
        supervisor = WorkerSupervisor(server, http, stopping)
        try:
            _install_sigterm(server, http, stopping)
            supervisor.start()
            server.run(
                host=settings.host,
                port=settings.port,
                log_level=settings.log_level,
                generate_client_file=False,
                access_log=False,
                log_config=logs.uvicorn_log_config(settings.log_level),
                http=with_header_timeout(settings.header_timeout),  # h11: httptools has no header size limit
                h11_max_incomplete_event_size=settings.max_header_bytes,
            )
        except StartupInterruptedError:
            _end_children()
            log("SIGTERM during start-up: stopped", uptime_seconds=round(time.time() - started, 1))
            return
        except RuntimeError as exc:
            errors = run_state.worker_errors() or [str(exc)]
            _end_children()
            raise ServeError(errors[0]) from None
        if supervisor.failure:
            raise ServeError(supervisor.failure)
    finally:
        run_state.cleanup()
    log("stopped", uptime_seconds=round(time.time() - started, 1))


def _end_children() -> None:
    children = mp.active_children()
    for child in children:
        child.terminate()
    for child in children:
        child.join(timeout=5)
        if child.is_alive():
            child.kill()
