"""fp32 against int8 on ONNX Runtime's CPU provider, in the bench's run: model time, bytes, start-up floor.

- model time: the median of ``runs`` session runs on one photo at the bundle's input size, in this
  process, after one warm run (the session options the server uses, every core);
- floor: a fresh process that imports numpy and onnxruntime and opens the artifact's session with the
  server's options, nothing else; seconds from spawn to the open session (median of ``runs``). The
  server's start-up outside warm-up (spawn, imports, verify, load) is set beside it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

# The floor's whole program: what any ONNX Runtime server must do before its first inference.
FLOOR_PROGRAM = """
import sys, time
import numpy
import onnxruntime as ort
options = ort.SessionOptions()
options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
options.log_severity_level = 3
ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
print(time.time() - float(sys.argv[2]))
"""


def session_options():
    """The ONNX Runtime options of serving.backends.onnx_runtime, every core."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options


def model_time(model: Path, tensor: np.ndarray, runs: int) -> float:
    """Median seconds of one inference of ``tensor`` (after a warm run)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), session_options(), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: tensor}
    session.run(None, feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def startup_floor(model: Path, runs: int) -> float:
    """Median seconds from spawning a fresh Python to an open session of ``model`` (FLOOR_PROGRAM)."""
    samples = []
    for _ in range(runs):
        started = time.time()
        out = subprocess.run(
            [sys.executable, "-c", FLOOR_PROGRAM, str(model), repr(started)],
            capture_output=True,
            text=True,
            check=True,
        )
        samples.append(float(out.stdout.strip().splitlines()[-1]))
    return float(np.median(samples))


def measure(bundle_dir: Path, names: list[str], runs: int, progress) -> dict[str, Any]:
    """Per ONNX Runtime artifact among ``names``: model time, bytes, precision and the start-up floor."""
    from pipeline import samples
    from serving.bundle import load_bundle
    from serving.imaging.contract import preprocess

    bundle = load_bundle(bundle_dir, verify=False)
    tensor = preprocess(samples.photo("astronaut"), bundle.input_size)
    height, width = bundle.input_size
    results = {}
    for name in names:
        artifact = bundle.artifact(name)
        if artifact is None or artifact.backend != "onnxruntime":
            continue
        model = bundle.path(artifact.main)
        progress(f"{name}: model time at {height}x{width}")
        seconds = model_time(model, tensor, runs)
        progress(f"{name}: start-up floor")
        results[name] = {
            "precision": artifact.precision,
            "bytes": artifact.total_bytes,
            "input": f"{height}x{width}",
            "model_s": seconds,
            "floor_s": startup_floor(model, runs),
            "parity": artifact.parity.status if artifact.parity else None,
        }
    return results


def comparison_rows(report: dict[str, Any], fp32: str = "onnxruntime", int8: str = "onnxruntime-int8") -> list[str]:
    """Markdown rows: int8 against fp32 (ratio int8 / fp32) and each one's start-up against its floor."""
    cpu = report.get("cpu_precision", {})
    if fp32 not in cpu or int8 not in cpu:
        return []
    a, b = cpu[fp32], cpu[int8]
    warm_a, warm_b = report["warm"]["ours"].get(fp32), report["warm"]["ours"].get(int8)
    cold = report["cold_start"]["ours"]
    rows = [
        ("model time at " + a["input"], a["model_s"], b["model_s"], "s"),
        ("artifact bytes", a["bytes"] / 1e6, b["bytes"] / 1e6, "MB"),
    ]
    if warm_a and warm_b:
        rows.append(
            (
                "12 MP JPEG -> PNG request p50",
                warm_a["latency"]["12mp"]["total"]["p50"],
                warm_b["latency"]["12mp"]["total"]["p50"],
                "s",
            )
        )
        rows.append(("peak RSS of the server", warm_a["peak_rss_mb"], warm_b["peak_rss_mb"], "MB"))
    lines = [
        f"| {int8} vs {fp32} (CPU) | {fp32} | {int8} | int8 / fp32 |",
        "| --- | --- | --- | --- |",
        *(f"| {m} | {x:.2f} {u} | {y:.2f} {u} | {y / x:.2f}x |" for m, x, y, u in rows),
        "",
        "| start-up outside warm-up vs the floor | server | floor | server / floor |",
        "| --- | --- | --- | --- |",
    ]
    for name in (fp32, int8):
        phases = cold.get(name, {}).get("phases", {})
        if "outside warm-up" in phases:
            server, floor = phases["outside warm-up"], cpu[name]["floor_s"]
            lines.append(f"| {name} | {server:.2f} s | {floor:.2f} s | {server / floor:.2f}x |")
    return lines
