"""What a validation writes into the manifest: every verdict it made, and nothing it could not make."""

from __future__ import annotations

from pipeline.parity.report import record_in_manifest
from serving.bundle import read_manifest, write_manifest
from serving.manifest import ParityResult
from tests.toy_bundle import build_toy_bundle


def report(status: str, **more) -> dict:
    row = {"file": "model.onnx", "backend": "onnxruntime", "label": "onnxruntime", "status": status, **more}
    return {"created_at": "2026-12-07T12:00:00+00:00", "passed": status != "failed", "backends": [row]}


def test_a_revalidation_that_cannot_check_an_artifact_keeps_its_verdict(tmp_path):
    """A torch-free machine (the GPU step) re-validates: TorchScript is skipped there. Its earlier verdict
    stands, marked as not checked again; the report of a folder outside the bundle is not recorded."""
    bundle = build_toy_bundle(tmp_path / "toy")
    manifest = read_manifest(bundle)
    manifest.artifacts[0].parity = ParityResult(
        status="passed", summary="12/12 within fp32 limits", report="parity/report.json"
    )
    write_manifest(bundle, manifest)
    record_in_manifest(
        bundle, report("skipped", reason="needs torch, which is not installed here"), tmp_path / "elsewhere"
    )
    parity = read_manifest(bundle).artifacts[0].parity
    assert (parity.status, parity.summary, parity.report) == (
        "passed",
        "12/12 within fp32 limits",
        "parity/report.json",
    )
    assert parity.not_rechecked == (
        "not checked again at 2026-12-07T12:00:00+00:00: needs torch, which is not installed here"
    )
    validation = read_manifest(bundle).validation
    assert validation.report is None  # the temporary folder of that run is not the bundle's


def test_a_revalidation_that_checks_an_artifact_replaces_its_verdict(tmp_path):
    bundle = build_toy_bundle(tmp_path / "toy")
    manifest = read_manifest(bundle)
    manifest.artifacts[0].parity = ParityResult(status="passed")
    write_manifest(bundle, manifest)
    record_in_manifest(bundle, report("failed", summary="3/12 images fail"), bundle / "parity")
    parity = read_manifest(bundle).artifacts[0].parity
    assert (parity.status, parity.summary, parity.report) == ("failed", "3/12 images fail", "parity/report.json")
    assert parity.not_rechecked is None
    assert read_manifest(bundle).validation.status == "failed"


def test_an_interrupted_validation_says_what_it_left_and_how_to_finish(tmp_path, monkeypatch):
    """Ctrl-C during the build's parity validation: one line naming the bundle and `inspyrenet validate`."""
    import pipeline.build
    import pipeline.parity.validate
    from tests.harness import invoke_cli

    bundle = build_toy_bundle(tmp_path / "toy")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.build, "build", lambda options, stages: (bundle, read_manifest(bundle)))
    monkeypatch.setattr(pipeline.parity.validate, "validate_and_record", interrupted)
    result = invoke_cli("build", "--checkpoint", "synthetic", "--out", str(bundle))
    assert result.returncode == 130
    assert result.stderr == (
        f"interrupted during the parity validation: {bundle} holds every artifact but is not validated, "
        f"so it is not served; finish it with `inspyrenet validate {bundle}`\n"
    )
