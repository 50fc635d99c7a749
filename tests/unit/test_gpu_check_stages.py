"""The GPU check's stage runner: an error is recorded and the other stages still run."""

from __future__ import annotations

import json


def test_a_failing_stage_is_recorded_and_the_others_still_run(tmp_path):
    """Each stage's error goes into the JSON, which is on disk after every stage."""
    from pipeline.gpu_check import run_stages

    out = tmp_path / "summary.json"
    seen_on_disk = []

    def broken():
        raise RuntimeError("engine build exploded\nsecond line")

    def after():
        seen_on_disk.append(json.loads(out.read_text()))
        return {"ok": True}

    summary = run_stages([("first", lambda: {"value": 1}), ("broken", broken), ("after", after)], {}, out)
    assert summary["broken"]["error"] == "RuntimeError: engine build exploded"
    assert summary["after"]["ok"] is True
    assert summary["first"]["value"] == 1
    assert seen_on_disk[0]["broken"]["error"].startswith("RuntimeError")
    assert "after" not in seen_on_disk[0]
    assert json.loads(out.read_text())["after"]["ok"] is True
