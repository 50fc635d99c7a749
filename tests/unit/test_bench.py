"""The bench's own arithmetic: start-up phases read from the server's log, the encoder table."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.bench.harness import startup_phases
from pipeline.bench.measure import measure_encoders

LOG = """{"time": "t", "severity": "INFO", "message": "starting", "port": 8080}
{"time": "t", "severity": "INFO", "message": "startup phase", "phase": "manifest", "seconds": 0.001, "process": "main"}
{"time": "t", "severity": "INFO", "message": "startup phase", "phase": "verify", "seconds": 0.266, "process": "main",\
 "backend": "onnxruntime"}
INFO: some line from uvicorn
{"time": "t", "severity": "INFO", "message": "startup phase", "phase": "manifest", "seconds": 0.002, "worker": "0"}
{"time": "t", "severity": "INFO", "message": "startup phase", "phase": "imports", "seconds": 0.05, "worker": "0"}
{"time": "t", "severity": "INFO", "message": "startup phase", "phase": "load", "seconds": 0.798, "worker": "0"}
{"time": "t", "severity": "INFO", "message": "startup phase", "phase": "warmup", "seconds": 1.417, "worker": "0"}
{"time": "t", "severity": "INFO", "message": "startup phase", "phase": "total", "seconds": 3.889, "worker": "0"}
{"time": "t", "severity": "INFO", "message": "startup phase", "phase": "total", "seconds": 9.0, "worker": "1"}
"""


def test_startup_phases_split_what_stays_on_a_gpu_from_the_warm_up():
    phases = startup_phases(LOG)
    assert phases["verify"] == pytest.approx(0.266)
    assert phases["load"] == pytest.approx(0.798)
    assert phases["warm-up inference"] == pytest.approx(1.417)
    assert phases["total"] == pytest.approx(3.889)  # worker 0's: the first warm worker
    assert phases["outside warm-up"] == pytest.approx(3.889 - 1.417)
    assert phases["spawn and imports"] == pytest.approx(3.889 - 0.266 - 0.798 - 1.417)
    assert startup_phases("INFO: the baseline logs no phases\n") == {}


def test_encoder_table_has_every_format_with_its_bytes():
    rgba = np.dstack([np.full((48, 64, 3), 120, np.uint8), np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))])
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG")
    table = measure_encoders({"tiny": buffer.getvalue()}, runs=1)["tiny"]
    assert set(table) == {"png", "png, Pillow zlib level 1", "webp lossless", "webp quality 90"}
    assert all(row["bytes"] > 0 and row["seconds"] >= 0 for row in table.values())


def test_int8_rows_are_ratios_of_the_same_run_and_the_floor_is_set_beside_each_start_up():
    from pipeline.bench.cpu_precision import comparison_rows

    def warm(p50: float, rss: float) -> dict:
        return {"latency": {"12mp": {"total": {"p50": p50}}}, "peak_rss_mb": rss}

    report = {
        "cpu_precision": {
            "onnxruntime": {"input": "384x384", "model_s": 2.0, "bytes": 372e6, "floor_s": 2.5},
            "onnxruntime-int8": {"input": "384x384", "model_s": 1.2, "bytes": 102e6, "floor_s": 1.0},
        },
        "warm": {"ours": {"onnxruntime": warm(3.0, 1800), "onnxruntime-int8": warm(2.4, 900)}},
        "cold_start": {
            "ours": {
                "onnxruntime": {"phases": {"outside warm-up": 5.0}},
                "onnxruntime-int8": {"phases": {"outside warm-up": 3.0}},
            }
        },
    }
    rows = comparison_rows(report)
    assert "| model time at 384x384 | 2.00 s | 1.20 s | 0.60x |" in rows
    assert "| artifact bytes | 372.00 MB | 102.00 MB | 0.27x |" in rows
    assert "| 12 MP JPEG -> PNG request p50 | 3.00 s | 2.40 s | 0.80x |" in rows
    assert "| peak RSS of the server | 1800.00 MB | 900.00 MB | 0.50x |" in rows
    assert "| onnxruntime | 5.00 s | 2.50 s | 2.00x |" in rows
    assert "| onnxruntime-int8 | 3.00 s | 1.00 s | 3.00x |" in rows
    del report["cpu_precision"]["onnxruntime-int8"]
    assert comparison_rows(report) == []  # one precision alone: nothing to compare
