"""Prometheus metrics shared by the HTTP processes and the inference workers.

LitServe runs several processes; prometheus_client's multiprocess mode keeps
each process's samples in ``$PROMETHEUS_MULTIPROC_DIR`` and ``/metrics``
aggregates them, so counts are right with any number of workers. The server
sets that variable before any process imports prometheus_client.
"""

from __future__ import annotations

from functools import lru_cache

STAGES = ("decode", "preprocess", "inference", "postprocess", "encode")
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@lru_cache(maxsize=1)
def metrics():
    from prometheus_client import Counter, Gauge, Histogram

    class Metrics:
        requests = Counter(
            "inspyrenet_requests", "HTTP requests by route and status code", ["route", "method", "status"]
        )
        request_seconds = Histogram(
            "inspyrenet_request_seconds",
            "Whole request time in the HTTP server",
            ["route"],
            buckets=_LATENCY_BUCKETS,
        )
        stage_seconds = Histogram(
            "inspyrenet_stage_seconds",
            "Time per request stage in the inference worker",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
        )
        cancelled = Counter(
            "inspyrenet_cancelled_requests",
            "Requests skipped before inference: their client left or their deadline passed",
        )
        worker_deaths = Counter("inspyrenet_worker_deaths", "Inference workers that died and were replaced")
        batch_size = Histogram("inspyrenet_batch_size", "Images per model call", buckets=(1, 2, 4, 8, 16, 32))
        startup_seconds = Gauge(
            "inspyrenet_startup_seconds",
            "Seconds from server start until this worker was warm",
            multiprocess_mode="max",
        )
        startup_phase_seconds = Gauge(
            "inspyrenet_startup_phase_seconds",
            "Seconds per startup phase",
            ["phase"],
            multiprocess_mode="max",
        )
        backend_info = Gauge(
            "inspyrenet_backend_info",
            "The backend serving requests (value 1)",
            ["backend", "device", "precision", "mode"],
            multiprocess_mode="max",
        )

    return Metrics


def render() -> tuple[bytes, str]:
    """All processes' metrics in Prometheus text format, and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return generate_latest(registry), CONTENT_TYPE_LATEST
