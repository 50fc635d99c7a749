"""The CPU backup service's figures: warm request latency per bundle mode, and what an image costs.

Each bundle is served the way deploy/cloudrun/service-cpu.yaml serves it (ONNX Runtime, one
worker, batch size 1, INSPYRENET_THREADS), and a 12 MP and a 1 MP JPEG are each sent ``runs``
times after a first request (JPEG in, RGBA PNG out, the client's time). With one request per
instance at a time, an image costs its seconds of the instance: seconds x (vCPUs x the vCPU-second
price + GiB x the GiB-second price), prices from deploy/prices.json (pipeline/costs.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from pipeline.bench.harness import Running, describe_machine, make_photo, our_server, post_photo
from pipeline.bench.measure import percentiles
from pipeline.costs import Prices, instance_usd_per_second
from serving.atomic_files import write_json_atomic
from serving.bundle import load_bundle

SIZES = {"12mp": (4000, 3000), "1mp": (1155, 866)}


def measure(bundle: Path, threads: int, runs: int, progress: Callable[[str], None]) -> dict[str, Any]:
    spec = our_server(bundle, "onnxruntime")
    spec.env.update({"INSPYRENET_THREADS": str(threads), "INSPYRENET_WORKERS": "1", "INSPYRENET_MAX_BATCH_SIZE": "1"})
    mode = load_bundle(bundle, verify=False).mode
    server = Running(spec)
    try:
        healthy = server.wait_healthy()
        latency = {}
        with httpx.Client(timeout=900) as client:
            for size, pixels in SIZES.items():
                photo = make_photo(pixels)
                post_photo(client, server.url, photo)  # the first request of a size warms its buffers
                totals = []
                for run in range(runs):
                    progress(f"{mode}: {size} {run + 1}/{runs}")
                    totals.append(post_photo(client, server.url, photo)[0])
                latency[size] = percentiles(totals)
        return {
            "mode": mode,
            "bundle": str(bundle),
            "threads": threads,
            "health_s": healthy,
            "latency_s": latency,
            "peak_rss_mb": server.peak_rss_mb(),  # the instance's memory limit must hold it
        }
    finally:
        server.stop()


def run_cpu_service_bench(
    bundles: list[Path],
    threads: int,
    runs: int,
    prices: Prices,
    vcpus: int,
    memory_gib: float,
    out: Path,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    per_second = instance_usd_per_second(prices, vcpus, memory_gib, gpus=0)
    results = []
    for bundle in bundles:
        result = measure(bundle, threads, runs, progress)
        result["usd_per_image"] = {size: per_second * lat["p50"] for size, lat in result["latency_s"].items()}
        results.append(result)
    report = {
        "machine": describe_machine(),
        "runs": runs,
        "instance": {"vcpus": vcpus, "memory_gib": memory_gib, "usd_per_second": per_second},
        "prices": prices.source,
        "results": results,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "cpu-service.json", report)
    return report


def markdown(report: dict[str, Any]) -> str:
    instance = report["instance"]
    lines = [
        f"CPU: {report['machine']['cpu']} ({report['machine']['cores']} cores); medians of {report['runs']} runs; "
        f"cost for a {instance['vcpus']} vCPU / {instance['memory_gib']:g} GiB instance "
        f"(${instance['usd_per_second'] * 3600:.3f} an hour)",
        "",
        "| mode | threads | start to /health | 12 MP p50 / p90 | 1 MP p50 / p90 | peak memory | $ per 12 MP image "
        "| $ per 1,000 1 MP images |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["results"]:
        big, small = r["latency_s"]["12mp"], r["latency_s"]["1mp"]
        lines.append(
            f"| {r['mode']} | {r['threads']} | {r['health_s']:.1f} s | {big['p50']:.2f} / {big['p90']:.2f} s | "
            f"{small['p50']:.2f} / {small['p90']:.2f} s | {r['peak_rss_mb'] / 1024:.1f} GB | "
            f"${r['usd_per_image']['12mp']:.5f} | "
            f"${1000 * r['usd_per_image']['1mp']:.3f} |"
        )
    return "\n".join(lines)


def median_seconds(report: dict[str, Any], mode: str, size: str) -> float:
    """A measured p50 of ``mode`` at ``size`` from a report (pipeline/costs.py reads it)."""
    for result in report["results"]:
        if result["mode"] == mode:
            return float(result["latency_s"][size]["p50"])
    raise KeyError(f"no {mode} bundle in the CPU service report")
