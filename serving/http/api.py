"""The LitAPI: runs in each inference worker process.

``setup`` reads and verifies the bundle, loads the best usable backend and
warms it; ``/health`` answers 200 once a worker's setup has returned (LitServe
marks it READY). The HTTP process has already validated parameters and
streamed every accepted image into a hand-off file (``serving.http.handoff``) and
queued ``{"id": ..., "params": {...}}``.

A request that fails here (bad image) is answered with a 4xx JSON response
from ``encode_response``, never raised: with batching, LitServe would fail a
whole batch for one bad image.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import litserve as ls
import numpy as np
from PIL import Image
from starlette.responses import JSONResponse, Response

from serving.backends import Backend, BackendUnavailable
from serving.bundle import BundleError
from serving.http import handoff, lifetime, run_state
from serving.http.metrics import metrics
from serving.http.params import CutoutParams
from serving.http.settings import Settings
from serving.imaging.contract import ImageError, decode_image, preprocess
from serving.imaging.cutout import cutout_pixels, encode
from serving.loading import load_warm_backend, one_line
from serving.logs import log

API_PATH = "/v1/remove-background"


@dataclass
class Job:
    """One request on its way through the worker."""

    params: CutoutParams
    request_id: str
    image: Image.Image | None = None  # RGB
    tensor: np.ndarray | None = None
    mask: np.ndarray | None = None
    error: tuple[int, str] | None = None
    timings: dict[str, float] = field(default_factory=dict)


class Stopwatch:
    def __init__(self, job: Job, stage: str):
        self.job, self.stage = job, stage

    def __enter__(self):
        self.start = time.perf_counter()

    def __exit__(self, *exc):
        seconds = time.perf_counter() - self.start
        self.job.timings[self.stage] = seconds
        metrics().stage_seconds.labels(self.stage).observe(seconds)


class CutoutAPI(ls.LitAPI):
    def __init__(self, settings: Settings, backends: list[str], verified: set[str]):
        """``backends``: the artifacts to try in order; ``verified``: those the main process already hashed."""
        super().__init__(
            max_batch_size=settings.max_batch_size,
            batch_timeout=settings.batch_timeout,
            api_path=API_PATH,
        )
        self.settings = settings
        self.backends = list(backends)
        self.verified = set(verified)
        self.backend: Backend | None = None

    # -- startup ---------------------------------------------------------

    def setup(self, device: str) -> None:
        lifetime.die_with_main_process()
        phases: dict[str, float] = {}
        worker = run_state.worker_id()
        try:
            self.backend, self.mode = self._load(phases)
        except Exception as exc:  # every setup failure is reported with its reason, not only the expected kinds
            error = str(exc) if isinstance(exc, (BundleError, BackendUnavailable)) else one_line(exc)
            run_state.write_worker_error(worker, error)
            log("startup failed", severity="ERROR", worker=worker, error=error)
            raise
        total = time.time() - run_state.started_at()
        phases["total"] = total
        for phase, seconds in phases.items():
            log("startup phase", phase=phase, seconds=round(seconds, 3), worker=worker)
            metrics().startup_phase_seconds.labels(phase).set(seconds)
        metrics().startup_seconds.set(total)
        info = self.loaded.describe()
        metrics().backend_info.labels(info["backend"], info["device"], info["precision"], self.mode).set(1)
        run_state.write_worker_state(
            worker, {**info, "mode": self.mode, "startup_seconds": round(total, 3), "pid": os.getpid()}
        )
        log("ready", worker=worker, pid=os.getpid(), startup_seconds=round(total, 3), **info)

    @property
    def loaded(self) -> Backend:
        """The warm backend (``setup`` ran; LitServe calls nothing else before it succeeds)."""
        if self.backend is None:
            raise RuntimeError("the inference worker has no backend: setup did not finish")
        return self.backend

    def _load(self, phases: dict[str, float]) -> tuple[Backend, str]:
        sizes = (1, self.settings.max_batch_size)
        threads = self.settings.threads or None
        return load_warm_backend(self.settings, self.backends, self.verified, lambda backend: sizes, phases, threads)

    # -- requests ----------------------------------------------------------

    def decode_request(self, request: dict) -> Job:
        job = Job(params=CutoutParams.from_dict(request["params"]), request_id=request["id"])
        try:
            with Stopwatch(job, "decode"):
                data = handoff.take(job.request_id)
                if data is None:
                    job.error = (499, "cancelled before inference: the client left or the deadline passed")
                    metrics().cancelled.inc()
                    return job
                job.image = decode_image(data, self.settings.max_pixels)
                del data
            with Stopwatch(job, "preprocess"):
                job.tensor = preprocess(job.image, self.loaded.bundle.input_size)
        except ImageError as exc:
            job.error = (exc.status, str(exc))
        return job

    def unbatch(self, output: list[Job]) -> list[Job]:
        # LitAPI.batch already passes a list of Jobs through unchanged.
        return output

    def predict(self, jobs: Job | list[Job]) -> Job | list[Job]:
        batch = jobs if isinstance(jobs, list) else [jobs]
        runnable = [job for job in batch if job.error is None]
        if runnable:
            start = time.perf_counter()
            masks = self.loaded.infer(np.concatenate([job.tensor for job in runnable if job.tensor is not None]))
            seconds = time.perf_counter() - start
            metrics().batch_size.observe(len(runnable))
            for job, mask in zip(runnable, masks):
                job.mask = mask[0]
                job.timings["inference"] = seconds
                metrics().stage_seconds.labels("inference").observe(seconds)
        return jobs

    def encode_response(self, job: Job) -> Response:
        handoff.answered(job.request_id)
        if job.error is not None:
            status, detail = job.error
            return JSONResponse({"detail": detail}, status_code=status)
        params = job.params
        with Stopwatch(job, "postprocess"):
            assert job.image is not None and job.mask is not None  # predict ran: no error means both are set
            pixels, size = cutout_pixels(job.image, job.mask, params, self.settings.refine_max_pixels)
        with Stopwatch(job, "encode"):
            body = encode(pixels, params.format, params.quality)
        timing = ", ".join(f"{stage};dur={seconds * 1000:.1f}" for stage, seconds in job.timings.items())
        timing += f', size;desc="{len(body)} bytes {params.format}"'  # what the encode stage bought
        headers = {
            "X-Backend": self.loaded.name,
            "X-Inference-Ms": f"{job.timings['inference'] * 1000:.1f}",
            "X-Image-Width": str(size[0]),
            "X-Image-Height": str(size[1]),
            "Server-Timing": timing,
        }
        return Response(content=body, media_type=params.media_type, headers=headers)
