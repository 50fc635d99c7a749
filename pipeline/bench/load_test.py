"""``inspyrenet load-test``: a burst of concurrent requests and a burst of large bodies, on this machine.

Both run against ``inspyrenet serve`` started as a fresh process with its
default settings (one worker, batch size 1, so an admission limit of 4):

- burst: ``--concurrency`` requests of a 1 MP JPEG released at once. Expected:
  only 200s and 503s; the 503s come at once, with ``Retry-After``; no
  admitted request waits longer than the admission limit's worth of
  inference times.
- large bodies: ``--bodies`` concurrent raw bodies of ``--body-mb`` MB (random
  bytes: the worker refuses them with 415 after they were streamed), with the
  admission limit raised so that every body is read. Reported: how much the
  peak resident memory of the HTTP-side processes grew.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from pipeline.bench.harness import (
    API,
    Running,
    ServerSpec,
    descendants,
    describe_machine,
    make_photo,
    memory_kb,
    our_server,
)


def _shoot(url: str, bodies: list[bytes], content_type: str) -> list[dict[str, Any]]:
    """Send every body at the same moment, one connection each; status and time of each."""
    barrier = threading.Barrier(len(bodies))

    def one(body: bytes) -> dict[str, Any]:
        with httpx.Client(timeout=300) as client:
            barrier.wait()
            start = time.perf_counter()
            try:
                response = client.post(url + API, content=body, headers={"Content-Type": content_type})
                status: int | str = response.status_code
                retry_after = response.headers.get("retry-after")
            except httpx.HTTPError as exc:
                status, retry_after = type(exc).__name__, None
            return {"status": status, "seconds": time.perf_counter() - start, "retry_after": retry_after}

    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        return list(pool.map(one, bodies))


def _summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    by_status: dict[str, list[float]] = {}
    for result in results:
        by_status.setdefault(str(result["status"]), []).append(result["seconds"])
    return {
        status: {"count": len(times), "median_s": float(np.median(times)), "max_s": float(max(times))}
        for status, times in sorted(by_status.items())
    }


def _forked_pids(server: Running) -> list[int]:
    """The main process and what it forked (HTTP processes, LitServe's manager); not the spawned workers."""
    main = Path(f"/proc/{server.process.pid}/cmdline").read_bytes()
    pids = [server.process.pid]
    for pid in descendants(server.process.pid):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes() == main:
                pids.append(pid)
        except OSError:
            continue
    return pids


def burst(bundle: Path, backend: str, concurrency: int, progress: Callable[[str], None]) -> dict[str, Any]:
    server = Running(our_server(bundle, backend))
    try:
        server.wait_healthy()
        photo = make_photo((1152, 864))
        with httpx.Client(timeout=300) as client:  # one request alone: the inference time to compare with
            start = time.perf_counter()
            client.post(server.url + API, content=photo, headers={"Content-Type": "image/jpeg"}).raise_for_status()
            alone = time.perf_counter() - start
        progress(f"burst of {concurrency} requests")
        results = _shoot(server.url, [photo] * concurrency, "image/jpeg")
    finally:
        server.stop()
    statuses = {str(r["status"]) for r in results}
    return {
        "concurrency": concurrency,
        "one_request_alone_s": alone,
        "by_status": _summary(results),
        "only_200_and_503": statuses <= {"200", "503"},
        "all_503_have_retry_after": all(r["retry_after"] for r in results if r["status"] == 503),
        "longest_200_in_requests_alone": max((r["seconds"] for r in results if r["status"] == 200), default=0) / alone,
    }


def large_bodies(
    bundle: Path, backend: str, count: int, megabytes: int, progress: Callable[[str], None]
) -> dict[str, Any]:
    spec = our_server(bundle, backend)
    spec = ServerSpec(
        spec.name,
        spec.argv,
        env={"INSPYRENET_MAX_IN_FLIGHT": str(count), "INSPYRENET_MAX_BODY_BYTES": str((megabytes + 1) * 1024 * 1024)},
    )
    server = Running(spec)
    try:
        server.wait_healthy()
        pids = _forked_pids(server)
        before = {pid: memory_kb(pid, "VmRSS") for pid in pids}
        bodies = [os.urandom(megabytes * 1024 * 1024) for _ in range(count)]
        progress(f"{count} bodies of {megabytes} MB")
        results = _shoot(server.url, bodies, "application/octet-stream")
        growth = {pid: (memory_kb(pid) - before[pid]) / 1024 for pid in pids}
    finally:
        server.stop()
    return {
        "bodies": count,
        "body_mb": megabytes,
        "by_status": _summary(results),
        "http_side_peak_growth_mb": max(growth.values()),
        "per_process_peak_growth_mb": {str(pid): round(mb, 1) for pid, mb in growth.items()},
    }


def run_load_test(
    bundle: Path, backend: str, concurrency: int, bodies: int, body_mb: int, out: Path, progress: Callable[[str], None]
) -> dict[str, Any]:
    report = {
        "machine": describe_machine(),
        "burst": burst(bundle, backend, concurrency, progress),
        "large_bodies": large_bodies(bundle, backend, bodies, body_mb, progress),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "load.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def markdown(report: dict[str, Any]) -> str:
    burst_report, large = report["burst"], report["large_bodies"]
    lines = [
        f"Burst of {burst_report['concurrency']} concurrent 1 MP requests "
        f"(one alone: {burst_report['one_request_alone_s']:.2f} s):",
        "",
        "| status | count | median s | max s |",
        "| --- | --- | --- | --- |",
    ]
    for status, row in burst_report["by_status"].items():
        lines.append(f"| {status} | {row['count']} | {row['median_s']:.2f} | {row['max_s']:.2f} |")
    lines += [
        "",
        f"Only 200 and 503: {burst_report['only_200_and_503']}; every 503 has Retry-After: "
        f"{burst_report['all_503_have_retry_after']}; the longest 200 took "
        f"{burst_report['longest_200_in_requests_alone']:.1f}x one request alone.",
        "",
        f"{large['bodies']} concurrent bodies of {large['body_mb']} MB: statuses "
        + ", ".join(f"{status} x{row['count']}" for status, row in large["by_status"].items())
        + f"; HTTP-side peak memory grew by {large['http_side_peak_growth_mb']:.0f} MB.",
    ]
    return "\n".join(lines)
