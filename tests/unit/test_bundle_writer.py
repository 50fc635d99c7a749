"""The bundle writer: a failed build leaves the previous bundle and no staging behind."""

from __future__ import annotations

import pytest


def test_bundle_writer_discards_a_failed_build(tmp_path):
    from pipeline.bundle_writer import BundleWriter
    from tests.toy_bundle import toy_manifest

    out = tmp_path / "bundle"
    with BundleWriter(out) as writer:
        writer.path("model.bin").write_bytes(b"v1")
        writer.commit(toy_manifest([writer.artifact("model.bin", "onnxruntime", "fp32", "any")]))
    before = (out / "manifest.json").read_bytes()

    def export_that_fails() -> None:
        with BundleWriter(out) as writer:
            writer.path("model.bin").write_bytes(b"v2, never published")
            raise RuntimeError("export failed")

    with pytest.raises(RuntimeError, match="export failed"):
        export_that_fails()
    assert (out / "manifest.json").read_bytes() == before
    assert (out / "model.bin").read_bytes() == b"v1"
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]  # no staging left behind
