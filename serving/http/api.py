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

import base64
import os
import time
from dataclasses import dataclass, field

import litserve as ls
import numpy as np
from PIL import Image
from starlette.responses import JSONResponse, Response

from serving.backends import Backend, BackendUnavailableError
from serving.bundle import BundleError
from serving.http import handoff, lifetime, removebg, run_state
from serving.http.metrics import metrics
from serving.imaging.contract import ImageError, decode_image, preprocess
from serving.imaging.cutout import cutout_pixels, encode
from serving.imaging.removebg import NoForegroundError, fit_megapixels, removebg_result
from serving.loading import load_warm_backend, one_line
from serving.logs import log
from serving.params import CUTOUT_PATH, CutoutParams
from serving.removebg_params import RemoveBgParams
from serving.settings import Settings

API_PATH = CUTOUT_PATH


@dataclass
class Job:
    """One request on its way through the worker: ours, or remove.bg's (``kind="removebg"``)."""

    params: CutoutParams | RemoveBgParams
    request_id: str
    kind: str = "cutout"
    wants_json: bool = False  # remove.bg's JSON answer (Accept: application/json)
    image: Image.Image | None = None  # RGB
    background: Image.Image | None = None  # remove.bg's bg_image_file / bg_image_url
    tensor: np.ndarray | None = None
    mask: np.ndarray | None = None
    error: tuple[int, str, str | None] | None = None  # status, detail, remove.bg's error code
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
        lifetime.worker_sigterm_waits_for_the_main_process()
        phases: dict[str, float] = {}
        worker = run_state.worker_id()
        try:
            self.backend, self.mode = self._load(phases)
        except Exception as exc:  # every setup failure is reported with its reason, not only the expected kinds
            error = str(exc) if isinstance(exc, (BundleError, BackendUnavailableError)) else one_line(exc)
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
        kind = request.get("kind", "cutout")
        params = (
            RemoveBgParams.from_dict(request["params"])
            if kind == "removebg"
            else CutoutParams.from_dict(request["params"])
        )
        job = Job(params=params, request_id=request["id"], kind=kind, wants_json=bool(request.get("json")))
        try:
            with Stopwatch(job, "decode"):
                data = handoff.take(job.request_id)
                if data is None:
                    job.error = (499, "cancelled before inference: the client left or the deadline passed", None)
                    metrics().cancelled.inc()
                    return job
                job.image = decode_image(data, self.settings.max_pixels)
                del data
                if isinstance(params, RemoveBgParams):
                    job.image = fit_megapixels(job.image, params.megapixels)
                    job.background = self._background(params)
            with Stopwatch(job, "preprocess"):
                job.tensor = preprocess(job.image, self.loaded.bundle.input_size)
        except ImageError as exc:
            job.error = (exc.status, str(exc), None)
        return job

    def _background(self, params: RemoveBgParams) -> Image.Image | None:
        """remove.bg's background image, from its own hand-off file."""
        if params.bg_image is None:
            return None
        data = handoff.take(params.bg_image)
        handoff.answered(params.bg_image)
        if data is None:
            raise ImageError("the background image was cancelled with its request")
        try:
            return decode_image(data, self.settings.max_pixels)
        except ImageError as exc:
            exc.args = (f"bg_image: {exc}",)
            raise

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
        if job.kind == "removebg":
            return self._removebg_response(job)
        if job.error is not None:
            status, detail, _ = job.error
            return JSONResponse({"detail": detail}, status_code=status)
        params = job.params
        assert isinstance(params, CutoutParams)
        with Stopwatch(job, "postprocess"):
            assert job.image is not None
            assert job.mask is not None  # predict ran: no error means both are set
            pixels, size = cutout_pixels(job.image, job.mask, params, self.settings.refine_max_pixels)
        with Stopwatch(job, "encode"):
            body = encode(pixels, params.format, params.quality)
        headers = {
            "X-Backend": self.loaded.name,
            "X-Inference-Ms": f"{job.timings['inference'] * 1000:.1f}",
            "X-Image-Width": str(size[0]),
            "X-Image-Height": str(size[1]),
            "Server-Timing": _server_timing(job, f"{len(body)} bytes {params.format}"),
        }
        return Response(content=body, media_type=params.media_type, headers=headers)

    def _removebg_response(self, job: Job) -> Response:
        """remove.bg's answer: the image (or JSON with it in base64) and its X- headers; errors in its shape."""
        params = job.params
        assert isinstance(params, RemoveBgParams)
        if job.error is None:
            assert job.image is not None
            assert job.mask is not None  # predict ran: no error means both are set
            try:
                with Stopwatch(job, "postprocess"):
                    result = removebg_result(
                        job.image, job.mask, params, self.settings.refine_max_pixels, job.background
                    )
            except NoForegroundError as exc:
                job.error = (exc.status, str(exc), "unknown_foreground")
            except ImageError as exc:
                job.error = (exc.status, str(exc), None)
        if job.error is not None:
            status, detail, code = job.error
            return removebg.error_response(status, detail, code)
        box = result.foreground
        headers = {
            "X-Width": str(result.width),
            "X-Height": str(result.height),
            "X-Foreground-Top": str(box.top),
            "X-Foreground-Left": str(box.left),
            "X-Foreground-Width": str(box.width),
            "X-Foreground-Height": str(box.height),
            "X-Credits-Charged": "0",
            "X-Backend": self.loaded.name,
            "X-Inference-Ms": f"{job.timings['inference'] * 1000:.1f}",
            "X-Shadow": "not applied" if params.add_shadow else "not requested",
            "Server-Timing": _server_timing(job, f"{len(result.body)} bytes {result.media_type}"),
        }
        if params.type_level != "none":
            headers["X-Type"] = params.type if params.type != "auto" else "other"  # no classifier: the asked type
        if params.ignored:
            headers["X-Ignored-Parameters"] = ",".join(params.ignored)
        if not job.wants_json:
            return Response(content=result.body, media_type=result.media_type, headers=headers)
        data = {
            "result_b64": base64.b64encode(result.body).decode("ascii"),
            "foreground_top": box.top,
            "foreground_left": box.left,
            "foreground_width": box.width,
            "foreground_height": box.height,
        }
        return JSONResponse({"data": data}, headers=headers)


def _server_timing(job: Job, size: str) -> str:
    timing = ", ".join(f"{stage};dur={seconds * 1000:.1f}" for stage, seconds in job.timings.items())
    return timing + f', size;desc="{size}"'  # what the encode stage bought
