"""``inspyrenet bench``: our server against the stack it replaces, on this machine, in one run.

Both sides are real HTTP servers started as fresh processes:

- ours: ``inspyrenet serve`` on the bundle, one backend at a time;
- baseline: ``pipeline.bench.baseline_server``, what the current API does
  (``Remover`` built in the process, ``process(type='rgba')``, Pillow PNG),
  with empty numba and transparent-background caches (a new container:
  ``fresh``) and with warm ones (``warm``).

Measured: cold start (spawn -> /health 200 -> first response, median of
``--runs``), warm latency by stage for 1 MP and 12 MP JPEGs (p50/p90/p99),
throughput at concurrency 1, 4 and 16, and the peak RSS of each server's
process tree. Ratios are baseline / ours.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.bench import cpu_precision
from pipeline.bench.harness import SIZES, baseline_server, describe_machine, make_photo, our_server
from pipeline.bench.measure import measure_cold_start, measure_encoders, measure_warm
from pipeline.bench.report import chart, markdown, ratios


def run_bench(
    bundle: Path,
    checkpoint: Path,
    backends: list[str],
    runs: int,
    out: Path,
    progress: Callable[[str], None],
    with_baseline: bool = True,
) -> dict[str, Any]:
    from serving.bundle import load_bundle

    manifest = load_bundle(bundle, verify=True).manifest
    mode = manifest.mode
    photos = {name: make_photo(size) for name, size in SIZES.items()}
    warm_cache = Path(tempfile.mkdtemp(prefix="bench-warm-cache-"))
    report: dict[str, Any] = {
        "machine": describe_machine(),
        "mode": mode,
        "runs": runs,
        "checkpoint": manifest.checkpoint.source,
        "photos": {name: f"{w}x{h} JPEG q90" for name, (w, h) in SIZES.items()},
        "cold_start": {"ours": {}},
        "warm": {"ours": {}},
    }
    try:
        for backend in backends:
            report["cold_start"]["ours"][backend] = measure_cold_start(
                our_server(bundle, backend), photos["12mp"], runs, progress
            )
        warm_spec = baseline_server(mode, checkpoint, fresh=False, warm_cache=warm_cache)
        if with_baseline:
            measure_cold_start(warm_spec, photos["12mp"], 1, progress)  # fills the warm caches
            report["cold_start"]["baseline_warm"] = measure_cold_start(warm_spec, photos["12mp"], runs, progress)
            report["cold_start"]["baseline_fresh"] = measure_cold_start(
                baseline_server(mode, checkpoint, fresh=True, warm_cache=warm_cache), photos["12mp"], runs, progress
            )
        for backend in backends:
            report["warm"]["ours"][backend] = measure_warm(our_server(bundle, backend), photos, runs, progress)
        if with_baseline:
            report["warm"]["baseline"] = measure_warm(warm_spec, photos, runs, progress)
            report["warm"]["baseline"].pop("cutouts", None)
    finally:
        shutil.rmtree(warm_cache, ignore_errors=True)
    report["cpu_precision"] = cpu_precision.measure(bundle, backends, runs, progress)
    cutouts: dict[str, Any] = {}
    for result in report["warm"]["ours"].values():
        cutouts = result.pop("cutouts", cutouts)
    progress("encoders")
    report["encoders"] = measure_encoders(cutouts, runs)
    report["ratios"] = ratios(report) if with_baseline else []
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "bench.md").write_text(markdown(report) + "\n")
    if report["ratios"]:
        chart(report, out / "bench.png")
    return report
