"""``batch``: every image under SRC to a cutout under DST, with the server's code path.

The flow, per task of a Cloud Run Job (or one local run)::

    list SRC -> images, sorted -> this task's shard
      -> read + decode + preprocess   (ReadStage: ``workers`` threads, a bounded window ahead)
      -> inference, in batches        (InferStage: this thread or CPU lanes; the model loads meanwhile)
      -> post-process + encode + write with its record   (WriteStage: ``workers`` threads, bounded)
    -> summary JSON under DST/.inspyrenet-batch/ and on stdout

The stages are ``serving.batch.stages``; this module plans the run, prepares and finishes one image, and
sums up.

Decoding, post-processing and encoding are ``serving.imaging.contract`` and
``serving.imaging.cutout``, the functions the API runs, so an output is byte-for-byte
the API's answer for the same image and parameters (at the same batch size:
see ``default_batch_size``). Memory is bounded by the windows, not by the
number of images. An image that cannot be used is listed with its reason and
the batch goes on; a storage or model failure stops the task (exit 1), and a
rerun redoes nothing that was finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from serving.backends import Backend
from serving.batch.listing import (
    Shard,
    Source,
    collisions,
    images,
    listing_digest,
    output_path,
    take_shard,
)
from serving.batch.locations import LocationError, SourceUnreadableError, open_location, overlap, safe_relative
from serving.batch.stages import InferStage, ReadStage, WriteStage
from serving.bundle import load_bundle
from serving.imaging.contract import ImageError, UnsupportedImageError, decode_image, preprocess
from serving.imaging.cutout import cutout_pixels, encode
from serving.loading import load_warm_backend, one_line, preflight
from serving.logs import log
from serving.params import CutoutParams
from serving.settings import Settings

SUMMARY_NAME = "summary-task-{index}-of-{count}.json"
PROGRESS_SECONDS = 10.0


@dataclass(frozen=True)
class BatchOptions:
    source: str
    destination: str
    params: CutoutParams
    shard: Shard
    workers: int = 0  # threads reading and writing; 0: the CPU count, at most 8
    batch_size: int = 0  # 0: default_batch_size(backend)
    cpu_lanes: int = 1  # images in inference at once on the CPU, each on its share of the cores


@dataclass
class Prepared:
    """An image decoded and preprocessed, on its way to the model."""

    source: Source
    output: str
    record: dict[str, str]
    image: Any  # PIL image, RGB
    tensor: np.ndarray | None


@dataclass
class Outcome:
    path: str
    status: str  # done | skipped | failed | ignored
    reason: str = ""


@dataclass
class Tally:
    """What the task did so far; shared by the threads."""

    assigned: int
    done: int = 0
    skipped: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    ignored: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, outcome: Outcome) -> None:
        with self.lock:
            if outcome.status == "done":
                self.done += 1
            elif outcome.status == "skipped":
                self.skipped += 1
            else:
                entries = self.failed if outcome.status == "failed" else self.ignored
                entries.append({"path": outcome.path, "reason": outcome.reason})

    @property
    def finished(self) -> int:
        return self.done + self.skipped + len(self.failed) + len(self.ignored)


def default_batch_size(backend: Backend) -> int:
    """The artifact's largest batch on a GPU; 1 on the CPU.

    On the CPU, ONNX Runtime is no faster batched (docs/performance.md, "batch
    against serve"), and a batch moves each mask by up to 4e-5, enough to change an alpha value by one
    level here and there: at batch size 1 an output is byte-for-byte what the
    API (which runs one request at a time on Cloud Run) returns.
    """
    return backend.max_batch if backend.device == "cuda" else 1


def fingerprint(path: str, version: str, params: CutoutParams, model: str) -> str:
    """What an output depends on: the source (path and version), the parameters and the model."""
    text = json.dumps({"source": path, "version": version, "params": params.to_dict(), "model": model}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


class Progress:
    """A progress bar on a terminal; JSON lines otherwise (Cloud Logging reads them)."""

    def __init__(self, tally: Tally, label: str, interactive: bool | None = None):
        self.tally, self.label = tally, label
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self.started = time.monotonic()
        self.last = 0.0
        self.bar = None
        if self.interactive:
            from rich.progress import BarColumn, MofNCompleteColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            self.bar = Bar(
                "{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                transient=True,
                redirect_stderr=False,
            )
            self.bar.start()
            self.task = self.bar.add_task(label, total=tally.assigned)

    def update(self, outcome: Outcome | None = None) -> None:
        if outcome is not None and outcome.status == "failed":
            log("image failed", severity="WARNING", path=outcome.path, reason=outcome.reason)
        if self.bar is not None:
            self.bar.update(self.task, completed=self.tally.finished)
            return
        now = time.monotonic()
        if now - self.last >= PROGRESS_SECONDS:
            self.last = now
            self.line()

    def line(self) -> None:
        tally = self.tally
        log(
            "batch progress",
            task=self.label,
            finished=tally.finished,
            of=tally.assigned,
            done=tally.done,
            skipped=tally.skipped,
            failed=len(tally.failed),
            seconds=round(time.monotonic() - self.started, 1),
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
        else:
            self.line()


class BatchRun:
    """One task: its plan, its pipeline and its summary."""

    def __init__(self, settings: Settings, options: BatchOptions):
        self.settings, self.options, self.params = settings, options, options.params
        self.source = open_location(options.source)
        self.destination = open_location(options.destination)
        if overlap(self.source, self.destination):
            raise LocationError(
                f"{self.source} and {self.destination} overlap: outputs would be read as "
                "images, or overwrite them; choose a DST outside SRC"
            )
        self.workers = options.workers or min(8, os.cpu_count() or 2)
        self.lanes = options.cpu_lanes
        # More than one lane: each inference gets its share of the cores (ONNX Runtime's threads).
        self.threads = max(1, len(os.sched_getaffinity(0)) // self.lanes) if self.lanes > 1 else None
        self.bundle = load_bundle(settings.artifacts, verify=False)
        self.model = f"{self.bundle.mode}-{self.bundle.manifest.checkpoint.sha256[:12]}"
        self.params_text = json.dumps(self.params.to_dict(), sort_keys=True)

    # -- the plan ----------------------------------------------------------

    def plan(self) -> tuple[list[Source], dict[str, str], dict[str, Any]]:
        """This task's sources, the output-name clashes of the whole listing, and the listing's description."""
        self.source.check_source()
        listing = self.source.list_sources()
        candidates = images(listing)
        mine = take_shard(candidates, self.options.shard)
        described = {"files": len(listing), "images": len(candidates), "sha256": listing_digest(candidates)}
        return mine, collisions(candidates, self.params.format), described

    # -- the stages --------------------------------------------------------

    def prepare(self, source: Source, clashes: dict[str, str]) -> Prepared | Outcome:
        """Read, skip if done, decode and preprocess one source; any trouble with the image is an Outcome."""
        path = source.path
        if not safe_relative(path):
            return Outcome(path, "failed", "the name is not a plain relative path; refusing it")
        if path in clashes:
            return Outcome(path, "failed", f"its output name is also that of {clashes[path]}; rename one of them")
        output = output_path(path, self.params.format)
        if source.version and self._done(output, path, source.version):  # Cloud Storage: no download needed
            return Outcome(path, "skipped")
        if source.size > self.settings.max_body_bytes:
            return Outcome(
                path,
                "failed",
                f"{source.size} bytes, over the limit of {self.settings.max_body_bytes} (INSPYRENET_MAX_BODY_BYTES)",
            )
        try:
            data, version = self.source.read(source)
        except SourceUnreadableError as exc:
            return Outcome(path, "failed", str(exc))
        if not source.version and self._done(output, path, version):
            return Outcome(path, "skipped")
        try:
            image = decode_image(data, self.settings.max_pixels)
            tensor = preprocess(image, self.bundle.input_size)
        except UnsupportedImageError as exc:
            extensionless = PurePosixPath(path).suffix == ""  # listed for its content, which is not an image
            return Outcome(path, "ignored" if extensionless else "failed", str(exc))
        except ImageError as exc:
            return Outcome(path, "failed", str(exc))
        except Exception as exc:  # a decoder's own bug must not stop the batch either
            return Outcome(path, "failed", one_line(exc))
        record = {
            "inspyrenet-source": path,
            "inspyrenet-source-version": version,
            "inspyrenet-fingerprint": fingerprint(path, version, self.params, self.model),
            "inspyrenet-model": self.model,
            "inspyrenet-params": self.params_text,
        }
        return Prepared(source, output, record, image, tensor)

    def _done(self, output: str, path: str, version: str) -> bool:
        record = self.destination.record(output)
        return record is not None and record.get("inspyrenet-fingerprint") == fingerprint(
            path, version, self.params, self.model
        )

    def finish(self, item: Prepared, mask: np.ndarray, backend_label: str) -> Outcome:
        pixels, _ = cutout_pixels(item.image, mask, self.params, self.settings.refine_max_pixels)
        body = encode(pixels, self.params.format, self.params.quality)
        self.destination.write(
            item.output, body, self.params.media_type, {**item.record, "inspyrenet-backend": backend_label}
        )
        return Outcome(item.source.path, "done")

    # -- the pipeline ------------------------------------------------------

    def run(self, interactive: bool | None = None) -> dict[str, Any]:
        started_at, started = time.time(), time.monotonic()
        shard = self.options.shard
        mine, clashes, listing = self.plan()
        self.destination.prepare_outputs()
        # Every choice a user makes is checked here; the sha256 is checked by the loader, while the first
        # images are read (a file that fails it is skipped for the next artifact, as in the server).
        usable, verified = preflight(replace(self.settings, verify=False))
        tally = Tally(assigned=len(mine))
        progress = Progress(tally, f"task {shard}", interactive)
        phases: dict[str, float] = {}
        state: dict[str, Any] = {}
        with (
            ThreadPoolExecutor(1, thread_name_prefix="load") as loader,
            ThreadPoolExecutor(self.workers, thread_name_prefix="read") as readers,
            ThreadPoolExecutor(self.workers, thread_name_prefix="write") as writers,
        ):
            # The model loads while the first images are read and decoded.
            loading = loader.submit(
                load_warm_backend, self.settings, usable, verified, self._warm_sizes, phases, self.threads
            )
            try:
                self._pipeline(mine, clashes, loading, readers, writers, tally, progress, state)
            except BaseException:
                for executor in (readers, writers):
                    executor.shutdown(wait=True, cancel_futures=True)
                raise
            finally:
                progress.close()
        seconds = time.monotonic() - started
        backend = state.get("backend")
        return {
            "task": {"index": shard.index, "count": shard.count},
            "source": str(self.source),
            "destination": str(self.destination),
            "listing": listing,
            "assigned": tally.assigned,
            "done": tally.done,
            "skipped": tally.skipped,
            "failed": tally.failed,
            "ignored": tally.ignored,
            "seconds": round(seconds, 3),
            "images_per_second": round(tally.done / seconds, 3) if seconds > 0 else None,
            "startup_seconds": {k: round(v, 3) for k, v in phases.items()},
            "backend": backend.describe() if backend else None,
            "batch_size": state.get("batch_size"),
            "cpu_lanes": state.get("lanes"),
            "workers": self.workers,
            "model": self.model,
            "params": self.params.to_dict(),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started_at)),
        }

    def _pipeline(
        self,
        mine: list[Source],
        clashes: dict[str, str],
        loading: Future,
        readers: ThreadPoolExecutor,
        writers: ThreadPoolExecutor,
        tally: Tally,
        progress: Progress,
        state: dict[str, Any],
    ) -> None:
        """Read ahead, infer in batches (the model loads while the first images are read), write behind."""
        errors: list[BaseException] = []  # from the lanes and writers; the first one stops the task

        def record(outcome: Outcome) -> None:
            tally.add(outcome)
            progress.update(outcome)

        reader = ReadStage(iter(mine), lambda source: readers.submit(self.prepare, source, clashes), 2 * self.workers)
        writer = WriteStage(writers, self.finish, 2 * self.workers, record, errors)
        backend: Backend | None = None
        batch_size = 1
        with InferStage(self.lanes, writer, errors) as infer:
            while reader.has_more() and not errors:
                batch = reader.next_batch(batch_size, record, lambda result: isinstance(result, Outcome))
                if not batch:
                    continue
                if backend is None:
                    backend, batch_size, infer.lanes = self._backend(loading, state)
                    reader.ahead = infer.lanes * (2 * batch_size) + 2 * self.workers
                    reader.refill()
                infer.run(backend, batch)
        writer.drain()
        if errors:
            raise errors[0]

    def batch_size(self, backend: Backend) -> int:
        size = self.options.batch_size or default_batch_size(backend)
        return max(1, min(size, backend.max_batch))

    def _warm_sizes(self, backend: Backend) -> tuple[int, ...]:
        """Warm up on a GPU, at the batch size this run uses (an engine that cannot run it is skipped for
        the next artifact). On the CPU the first image is the warm-up: a probe would cost a whole
        inference (1.7 s here) and tell nothing the first image does not."""
        return (self.batch_size(backend),) if backend.device == "cuda" else ()

    def _backend(self, loading: Future, state: dict[str, Any]) -> tuple[Backend, int, int]:
        """The loaded backend, the batch size and the number of lanes to run it with."""
        backend, _mode = loading.result()
        lanes = self.lanes if backend.device == "cpu" else 1
        state.update(backend=backend, batch_size=self.batch_size(backend), lanes=lanes)
        return backend, state["batch_size"], lanes


def summary_name(shard: Shard) -> str:
    return SUMMARY_NAME.format(index=shard.index, count=shard.count)


def run_batch(settings: Settings, options: BatchOptions, interactive: bool | None = None) -> tuple[dict, str]:
    """Run one task; return its summary and where the summary was written."""
    batch = BatchRun(settings, options)
    summary = batch.run(interactive)
    where = batch.destination.write_summary(summary_name(options.shard), summary)
    return summary, where
