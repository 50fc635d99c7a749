"""``inspyrenet serve``: preflight in the main process, then LitServe.

The main process reads the manifest, picks the artifacts that may be served
and verifies the first one's sha256, so every error a user can cause (no
bundle, tampered file, backend not in the bundle, runtime not installed) is
one line and a non-zero exit before any worker starts. The workers then
load and warm the backend (``serving.api``).

LitServe installs no SIGTERM handler: without one, Cloud Run's SIGTERM kills
the main process and orphans the workers. Ours stops the HTTP processes first
(uvicorn finishes in-flight requests), then lets LitServe stop the workers.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from pathlib import Path

from serving import runtime
from serving.backends import cannot_run
from serving.bundle import MANIFEST_NAME, BundleError, load_bundle
from serving.logs import log
from serving.selection import SelectionError, candidates, missing_files
from serving.settings import Settings
from serving.storage import StorageError

HTTP_DRAIN_SECONDS = 30


class ServeError(Exception):
    """The server cannot start; the message is one line."""


def preflight(settings: Settings) -> tuple[list[str], set[str]]:
    """Backends to try in order and those already verified; raise ServeError if none may be served."""
    start = time.perf_counter()
    bundle = load_bundle(settings.artifacts, verify=False)
    ordered, skipped = candidates(bundle, settings.backend)
    for reason in skipped:
        log("artifact skipped", severity="WARNING", reason=reason)
    log("startup phase", phase="manifest", seconds=round(time.perf_counter() - start, 3), process="main")
    usable, verified, reasons = [], set(), list(skipped)
    for artifact in ordered:
        missing = missing_files(bundle, artifact)
        reason = f"not in the bundle directory: {', '.join(missing)}" if missing else cannot_run(artifact)
        if reason is None and not verified and settings.verify:
            start = time.perf_counter()
            try:
                bundle.verify(artifact)
                verified.add(artifact.backend)
                log("startup phase", phase="verify", seconds=round(time.perf_counter() - start, 3),
                    process="main", backend=artifact.backend)
            except BundleError as exc:
                reason = str(exc)
        if reason is None:
            usable.append(artifact.backend)
        else:
            reasons.append(f"{artifact.backend}: {reason}")
            log("artifact skipped", severity="WARNING", backend=artifact.backend, reason=reason)
    if not usable:
        raise ServeError(f"no usable artifact in {settings.artifacts}: " + "; ".join(reasons))
    return usable, verified


def _install_sigterm(server) -> None:
    def drain() -> None:
        http = [p for p in mp.active_children() if p.name.startswith("LitServer-")]
        for process in http:
            process.terminate()  # uvicorn: stop accepting, finish in-flight requests
        for process in http:
            process.join(timeout=HTTP_DRAIN_SECONDS)
        if server._shutdown_event is not None:  # None until LitServe has started its manager
            server._shutdown_event.set()  # LitServe's own shutdown path: workers, queues, manager

    def on_sigterm(signum, frame) -> None:
        log("SIGTERM received: draining in-flight requests, then stopping")
        threading.Thread(target=drain, name="sigterm-drain", daemon=True).start()

    signal.signal(signal.SIGTERM, on_sigterm)


def _build_server(settings: Settings, usable: list[str], verified: set[str]):
    # LitServe guards every route, /health included, when LIT_SERVER_API_KEY is
    # set at its import. Cloud Run's startup probe sends no key, so the key is
    # enforced by our gateway on the inference route only.
    os.environ.pop("LIT_SERVER_API_KEY", None)
    import litserve as ls
    from fastapi.middleware.cors import CORSMiddleware
    from starlette.middleware.gzip import GZipMiddleware

    from serving.api import API_PATH, CutoutAPI
    from serving.http import CutoutGateway, prometheus, warmup

    api = CutoutAPI(settings, backends=usable, verified=verified)
    server = ls.LitServer(
        api,
        accelerator="cpu",  # a label only: the backend picks the GPU itself, and "auto" would import torch
        workers_per_device=settings.workers,
        timeout=settings.request_timeout,
    )
    # LitServe gzips every response over 1 kB; PNG/WebP/JPEG do not compress and
    # a 12 MP cutout would cost seconds of CPU.
    server.app.user_middleware = [m for m in server.app.user_middleware if m.cls is not GZipMiddleware]
    server.app.add_middleware(
        CutoutGateway, api_path=API_PATH, max_body_bytes=settings.max_body_bytes, api_key=settings.api_key
    )
    if settings.cors_origins:
        server.app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Content-Type", "X-API-Key"],
            expose_headers=["X-Backend", "X-Inference-Ms", "X-Total-Ms", "X-Image-Width", "X-Image-Height",
                            "Server-Timing"],
            max_age=600,
        )
    server.app.add_api_route("/warmup", warmup, methods=["POST", "GET"])
    server.app.add_api_route("/metrics", prometheus, methods=["GET"])
    return server


def pull_if_missing(settings: Settings) -> None:
    """No baked bundle but INSPYRENET_ARTIFACTS_URI set: pull it first (the slow path)."""
    if (Path(settings.artifacts) / MANIFEST_NAME).is_file() or not settings.artifacts_uri:
        return
    from serving.store import pull

    start = time.perf_counter()
    log("no baked bundle: pulling from Cloud Storage (slow path)", severity="WARNING",
        uri=settings.artifacts_uri, target=str(settings.artifacts))
    try:
        pull(settings.artifacts_uri, Path(settings.artifacts), reports=False)
    except StorageError as exc:
        raise ServeError(f"cannot pull {settings.artifacts_uri}: {exc}") from None
    log("startup phase", phase="pull", seconds=round(time.perf_counter() - start, 3), process="main")


def run(settings: Settings) -> None:
    started = time.time()
    log("starting", artifacts=str(settings.artifacts), backend=settings.backend, port=settings.port,
        workers=settings.workers, max_batch_size=settings.max_batch_size)
    pull_if_missing(settings)
    try:
        usable, verified = preflight(settings)
    except (BundleError, SelectionError) as exc:
        raise ServeError(str(exc)) from None
    runtime.prepare(started)
    try:
        server = _build_server(settings, usable, verified)
        _install_sigterm(server)
        try:
            server.run(
                host=settings.host,
                port=settings.port,
                log_level=settings.log_level,
                generate_client_file=False,
                access_log=False,
            )
        except RuntimeError as exc:
            errors = runtime.worker_errors() or [str(exc)]
            for child in mp.active_children():
                child.terminate()
            raise ServeError(errors[0]) from None
    finally:
        runtime.cleanup()
    log("stopped", uptime_seconds=round(time.time() - started, 1))
