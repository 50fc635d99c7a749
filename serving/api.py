"""The LitAPI: runs in each inference worker process.

``setup`` reads and verifies the bundle, loads the best usable backend and
warms it; ``/health`` answers 200 once a worker's setup has returned (LitServe
marks it READY). The HTTP process has already validated parameters and
streamed every accepted image into a hand-off file (``serving.handoff``) and
queued ``{"id": ..., "params": {...}}``.

A request that fails here (bad image) is answered with a 4xx JSON response
from ``encode_response``, never raised: with batching, LitServe would fail a
whole batch for one bad image.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import litserve as ls
import numpy as np
from starlette.responses import JSONResponse, Response

from serving import handoff, lifetime, runtime
from serving.backends import Backend, BackendUnavailable, import_runtime, open_backend
from serving.bundle import BundleError, load_bundle
from serving.cutout import compose, encode, final_alpha, output_size, resize_image
from serving.image import ImageError, decode_image, preprocess, upsample_mask
from serving.logs import log
from serving.metrics import metrics
from serving.params import CutoutParams
from serving.settings import Settings

API_PATH = "/v1/remove-background"


@dataclass
class Job:
    """One request on its way through the worker."""

    params: CutoutParams
    request_id: str
    image: object = None  # PIL image, RGB
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


def _one_line(exc: BaseException) -> str:
    """An unexpected exception as one log-friendly line: its type and the first line of its message."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


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
        worker = runtime.worker_id()
        try:
            self.backend, self.mode = self._load(phases)
        except Exception as exc:  # every setup failure is reported with its reason, not only the expected kinds
            error = str(exc) if isinstance(exc, (BundleError, BackendUnavailable)) else _one_line(exc)
            runtime.write_worker_error(worker, error)
            log("startup failed", severity="ERROR", worker=worker, error=error)
            raise
        total = time.time() - runtime.started_at()
        phases["total"] = total
        for phase, seconds in phases.items():
            log("startup phase", phase=phase, seconds=round(seconds, 3), worker=worker)
            metrics().startup_phase_seconds.labels(phase).set(seconds)
        metrics().startup_seconds.set(total)
        info = self.backend.describe()
        metrics().backend_info.labels(info["backend"], info["device"], info["precision"], self.mode).set(1)
        runtime.write_worker_state(
            worker, {**info, "mode": self.mode, "startup_seconds": round(total, 3), "pid": os.getpid()}
        )
        log("ready", worker=worker, pid=os.getpid(), startup_seconds=round(total, 3), **info)

    def _load(self, phases: dict[str, float]) -> tuple[Backend, str]:
        start = time.perf_counter()
        bundle = load_bundle(self.settings.artifacts, verify=False)
        phases["manifest"] = time.perf_counter() - start
        failures = []
        for artifact in (bundle.artifact(name) for name in self.backends):
            try:
                start = time.perf_counter()
                if self.settings.verify and artifact.backend not in self.verified:
                    bundle.verify(artifact)
                phases["verify"] = time.perf_counter() - start
                start = time.perf_counter()
                import_runtime(artifact)
                phases["imports"] = time.perf_counter() - start
                start = time.perf_counter()
                backend = open_backend(bundle, artifact, device="auto")
                phases["load"] = time.perf_counter() - start
            except Exception as exc:  # any failure to open an artifact (a corrupt file, a runtime error) skips it
                reason = str(exc) if isinstance(exc, (BundleError, BackendUnavailable)) else _one_line(exc)
                failures.append(f"{artifact.backend}: {reason}")
                log("artifact skipped", severity="WARNING", backend=artifact.backend, reason=reason)
                continue
            start = time.perf_counter()
            problem = self._warm_up(backend)
            phases["warmup"] = time.perf_counter() - start
            if problem is None:
                return backend, bundle.mode
            backend.close()
            failures.append(f"{artifact.backend}: warm-up failed: {problem}")
            log("artifact skipped", severity="WARNING", backend=artifact.backend, reason=f"warm-up failed: {problem}")
        raise BackendUnavailable(f"no usable artifact in {Path(self.settings.artifacts)}: " + "; ".join(failures))

    def _warm_up(self, backend: Backend) -> str | None:
        """Run the model once at every batch size a request can meet; why that failed, or None.

        A backend that loads but cannot run (a GPU kernel that fails, out of
        memory at the first enqueue) is skipped like one that does not load.
        """
        height, width = backend.bundle.input_size
        probe = np.zeros((1, 3, height, width), dtype=np.float32)
        try:
            outputs = [backend.infer(probe)]
            if self.settings.max_batch_size > 1:
                outputs.append(backend.infer(np.repeat(probe, self.settings.max_batch_size, axis=0)))
        except Exception as exc:  # any runtime failure means: do not serve this artifact
            return _one_line(exc)
        if not all(np.isfinite(out).all() for out in outputs):
            return "the warm-up output is not finite"
        return None

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
                job.tensor = preprocess(job.image, self.backend.bundle.input_size)
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
            masks = self.backend.infer(np.concatenate([job.tensor for job in runnable]))
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
            size = output_size(job.image.size, params.max_size)
            alpha = final_alpha(upsample_mask(job.mask, (size[1], size[0])), params)
            pixels = compose(resize_image(job.image, size), alpha, params, self.settings.refine_max_pixels)
        with Stopwatch(job, "encode"):
            body = encode(pixels, params.format, params.quality)
        timing = ", ".join(f"{stage};dur={seconds * 1000:.1f}" for stage, seconds in job.timings.items())
        timing += f', size;desc="{len(body)} bytes {params.format}"'  # what the encode stage bought
        headers = {
            "X-Backend": self.backend.name,
            "X-Inference-Ms": f"{job.timings['inference'] * 1000:.1f}",
            "X-Image-Width": str(size[0]),
            "X-Image-Height": str(size[1]),
            "Server-Timing": timing,
        }
        return Response(content=body, media_type=params.media_type, headers=headers)
