"""What ``inspyrenet bench`` measures on a running server: cold starts, warm requests by stage and
throughput, and the response encoders on real cutouts."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import httpx
import numpy as np

from pipeline.bench.harness import Running, ServerSpec, post_photo

CONCURRENCY = (1, 4, 16)


def percentiles(values: list[float]) -> dict[str, float]:
    return {f"p{q}": float(np.percentile(values, q)) for q in (50, 90, 99)}


def measure_cold_start(spec: ServerSpec, photo: bytes, runs: int, progress: Callable[[str], None]) -> dict[str, Any]:
    samples: list[dict[str, Any]] = []
    for run in range(runs):
        progress(f"{spec.name}: cold start {run + 1}/{runs}")
        server = Running(spec)
        try:
            healthy = server.wait_healthy()
            with httpx.Client(timeout=600) as client:
                post_photo(client, server.url, photo)
            samples.append(
                {
                    "health_s": healthy,
                    "first_response_s": time.perf_counter() - server.started,
                    "phases": server.startup_phases(),
                }
            )
        finally:
            server.stop()
    result: dict[str, Any] = {
        key: float(np.median([s[key] for s in samples])) for key in ("health_s", "first_response_s")
    }
    phases = [s["phases"] for s in samples if s["phases"]]
    if phases:
        result["phases"] = {name: float(np.median([p[name] for p in phases])) for name in phases[0]}
    return result | {"runs": samples}


def measure_warm(
    spec: ServerSpec, photos: dict[str, bytes], runs: int, progress: Callable[[str], None]
) -> dict[str, Any]:
    # Throughput wants every concurrent request admitted, not answered 503 (the baseline ignores this).
    admit_all = {"INSPYRENET_MAX_IN_FLIGHT": str(max(CONCURRENCY))}
    server = Running(replace(spec, env={**spec.env, **admit_all}))
    try:
        server.wait_healthy()
        result: dict[str, Any] = {"latency": {}, "throughput_rps": {}}
        with httpx.Client(timeout=900) as client:
            for size, photo in photos.items():
                post_photo(client, server.url, photo)  # first request of a size warms caches
                totals: list[float] = []
                stages: dict[str, list[float]] = {}
                for run in range(runs):
                    progress(f"{spec.name}: warm {size} {run + 1}/{runs}")
                    elapsed, timing, body = post_photo(client, server.url, photo)
                    result.setdefault("cutouts", {})[size] = body
                    totals.append(elapsed)
                    for name, seconds in timing.items():
                        stages.setdefault(name, []).append(seconds)
                result["latency"][size] = {
                    "total": percentiles(totals),
                    "stages": {k: percentiles(v) for k, v in stages.items()},
                }
        photo = photos["1mp"]
        for concurrency in CONCURRENCY:
            progress(f"{spec.name}: throughput at concurrency {concurrency}")
            count = max(2 * concurrency, 8)
            with httpx.Client(timeout=900, limits=httpx.Limits(max_connections=concurrency)) as client:
                start = time.perf_counter()
                with ThreadPoolExecutor(max_workers=concurrency) as pool:
                    list(pool.map(lambda _: post_photo(client, server.url, photo), range(count)))
                result["throughput_rps"][str(concurrency)] = count / (time.perf_counter() - start)
        result["peak_rss_mb"] = server.peak_rss_mb()
        return result
    finally:
        server.stop()


def measure_encoders(cutouts: dict[str, bytes], runs: int) -> dict[str, dict[str, dict[str, float]]]:
    """Bytes and encode time (median) of each response format on real cutouts, in this process."""
    import io

    from PIL import Image

    from serving.imaging.cutout import encode

    def pillow_png(img: Image.Image) -> bytes:  # the encoder the server used before serving.imaging.png
        buffer = io.BytesIO()
        img.save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()

    formats: dict[str, Callable[[Image.Image], bytes]] = {
        "png": lambda img: encode(np.asarray(img), "png"),
        "png, Pillow zlib level 1": pillow_png,
        "webp lossless": lambda img: encode(np.asarray(img), "webp"),
        "webp quality 90": lambda img: encode(np.asarray(img), "webp", 90),
    }
    table: dict[str, dict[str, dict[str, float]]] = {}
    for size, body in cutouts.items():
        img = Image.open(io.BytesIO(body))
        img.load()
        table[size] = {}
        for name, function in formats.items():
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                data = function(img)
                times.append(time.perf_counter() - start)
            table[size][name] = {"seconds": float(np.median(times)), "bytes": len(data)}
    return table
