"""Mask parity: a good bundle passes, broken artifacts fail by name and metric, reports are complete."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from tests.harness import FAST_SIZE, linked_copy, run_cli

torch = pytest.importorskip("torch")


def test_build_validates_and_records_parity(fast_bundle):
    manifest = json.loads((fast_bundle / "manifest.json").read_text())
    assert manifest["validation"]["status"] == "passed"
    for artifact in manifest["artifacts"]:
        # int8 is optional: on the synthetic checkpoint it may fail without failing the bundle (test_int8.py)
        assert artifact["parity"]["status"] == "passed" or artifact.get("optional"), artifact["parity"]
        assert artifact["parity"]["limits_class"] == artifact["precision"]  # fp32, fp16 or int8
    report = json.loads((fast_bundle / "parity" / "report.json").read_text())
    assert report["passed"] is True
    assert report["references"].startswith("computed")
    assert manifest["parity_references"]["checkpoint_sha256"] == manifest["checkpoint"]["sha256"]
    names = {image["name"] for image in report["images"]}
    assert {
        "astronaut",
        "chelsea",
        "all-black",
        "all-white",
        "tiny-16x16",
        "wide-4000x300",
        "grayscale",
        "rgba-transparent",
        "noise",
    } <= names
    for backend in report["backends"]:
        assert backend["status"] == "passed" or backend.get("optional")
        for result in backend["results"]:
            for reference in ("model", "end_to_end"):
                metrics = result["metrics"][reference]
                assert set(metrics) == {"mean_abs", "max_abs", "p999_abs", "iou", "off_share", "nonfinite"}
            assert result["latency_ms"] > 0
    assert "fp16" in report["limits"]
    assert "environment" in report


def test_html_report_references_only_existing_files(fast_bundle):
    report_dir = fast_bundle / "parity"
    text = (report_dir / "report.html").read_text()
    assert re.search(r"""Overall: <span class=['"]passed['"]>PASSED""", text)
    refs = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", text)
    assert len(refs) > 20
    for ref in refs:
        assert not ref.startswith(("http:", "https:", "//")), ref  # readable offline
        assert (report_dir / ref).is_file(), ref


@pytest.fixture(scope="module")
def one_image(tmp_path_factory) -> Path:
    """One photo: a planted fault fails on any image, and each validate run computes its references anew."""
    from pipeline import samples

    directory = tmp_path_factory.mktemp("parity-images")
    samples.photo("chelsea").save(directory / "chelsea.jpg", quality=95)
    return directory


def bundle_with_torchscript(fast_bundle: Path, tmp_path: Path, module: torch.nn.Module) -> Path:
    """A copy of the bundle whose TorchScript file is replaced (manifest updated, so integrity holds)."""
    from pipeline.export.formats import export_torchscript
    from serving.bundle import sha256_file

    copy = linked_copy(fast_bundle, tmp_path / "bundle")
    (copy / "model.ts").unlink()
    example = torch.zeros(1, 3, *FAST_SIZE)
    export_torchscript(module.eval(), example, copy / "model.ts")
    manifest = json.loads((copy / "manifest.json").read_text())
    for artifact in manifest["artifacts"]:
        if artifact["backend"] == "torchscript":
            artifact["sha256"] = sha256_file(copy / "model.ts")
            artifact["bytes"] = (copy / "model.ts").stat().st_size
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def validate_fails_on_torchscript(bundle: Path, images: Path, metric_words: tuple[str, ...]):
    # The PyTorch fp16 islands row checks the checkpoint, not the artifact: tests/integration/test_mixed_precision.py
    result = run_cli("validate", str(bundle), "--images", str(images), "--no-fp16-islands")
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads((bundle / "parity" / "report.json").read_text())
    by_label = {b["label"]: b for b in report["backends"]}
    assert by_label["onnxruntime"]["status"] == "passed"
    assert by_label["onnxruntime-fp16"]["status"] == "passed"
    failed = by_label["torchscript"]
    assert failed["status"] == "failed"
    every_failure = " ".join(f for result in failed["results"] for f in result["failures"])
    assert any(word in every_failure for word in metric_words), every_failure
    assert re.search(r"(mean_abs|p999_abs|max_abs|iou|off_share|nonfinite) ", failed["summary"])
    assert "torchscript" in result.stdout
    assert "failed" in result.stdout  # the terminal table
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: parity failed: torchscript (")
    assert "onnxruntime" not in error
    manifest = json.loads((bundle / "manifest.json").read_text())
    parity = {a["file"]: a["parity"]["status"] for a in manifest["artifacts"] if not a.get("optional")}
    assert parity == {"model.ts": "failed", "model.onnx": "passed", "model.fp16.onnx": "passed"}
    return failed


def test_artifact_from_another_checkpoint_fails(fast_bundle, tmp_path, one_image):
    from pipeline.checkpoint.synthetic import synthetic_state_dict
    from pipeline.export.model import export_model

    other = export_model(synthetic_state_dict(seed=1), FAST_SIZE)
    copy = bundle_with_torchscript(fast_bundle, tmp_path, other)
    failed = validate_fails_on_torchscript(copy, one_image, ("iou", "max_abs", "mean_abs", "p999_abs"))
    assert failed["worst"]["model"]["max_abs"] > 0.1


def test_artifact_with_perturbed_weights_fails(fast_bundle, tmp_path, one_image, eager_model):
    import copy as copying

    perturbed = copying.deepcopy(eager_model)
    with torch.no_grad():
        weight = perturbed.network.decoder.conv3.conv.weight
        weight.mul_(1.02)  # 2% on one decoder layer
    copy = bundle_with_torchscript(fast_bundle, tmp_path, perturbed)
    validate_fails_on_torchscript(copy, one_image, ("mean_abs", "max_abs", "p999_abs", "off_share"))


class NaNCorner(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image):
        out = self.model(image)
        corner = torch.zeros_like(out)
        corner[..., :8, :8] = float("nan")
        return out + corner


def test_artifact_that_outputs_nan_fails(fast_bundle, tmp_path, one_image, eager_model):
    copy = bundle_with_torchscript(fast_bundle, tmp_path, NaNCorner(eager_model))
    failed = validate_fails_on_torchscript(copy, one_image, ("nonfinite",))
    assert failed["worst"]["model"]["nonfinite"] == 64


def test_server_never_picks_an_artifact_that_failed_parity(fast_bundle, tmp_path):
    from serving.backends.selection import SelectionError, candidates
    from serving.bundle import load_bundle

    copy = linked_copy(fast_bundle, tmp_path / "bundle")
    manifest = json.loads((copy / "manifest.json").read_text())
    for artifact in manifest["artifacts"]:
        if artifact["backend"] == "onnxruntime":
            artifact["parity"] = {"status": "failed", "summary": "2/12 images fail"}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    bundle = load_bundle(copy, verify=False)
    chosen, skipped = candidates(bundle, "auto")
    assert [a.backend for a in chosen] == ["torchscript"]
    assert skipped
    assert "onnxruntime" in skipped[0]
    assert "failed parity" in skipped[0]
    with pytest.raises(SelectionError, match="failed parity"):
        candidates(bundle, "onnxruntime")
    result = run_cli("serve", "--artifacts", str(copy), "--backend", "onnxruntime", "--port", "18999")
    assert result.returncode == 1
    assert "failed parity" in result.stderr
    assert "Traceback" not in result.stderr


def test_stored_references_match_the_model(fast_bundle, eager_model):
    """The GPU engine step validates with the references the CPU build stored (no torch, no Remover:
    tests/integration/test_engine_step_install.py runs it)."""
    from pipeline.parity.references import load
    from serving.bundle import load_bundle

    cases = load(load_bundle(fast_bundle, verify=False))
    assert len(cases) == 12
    assert cases[0].model_reference.shape == FAST_SIZE
    with torch.no_grad():
        eager = eager_model(torch.from_numpy(cases[0].tensor)).numpy()[0, 0]
    assert float(np.abs(cases[0].model_reference - eager).max()) < 1e-5  # uint16 storage: under 8e-6


def test_tampered_stored_references_are_refused(fast_bundle, tmp_path):
    copy = linked_copy(fast_bundle, tmp_path / "bundle")
    masks = copy / "parity" / "references" / "masks.npz"
    data = bytearray(masks.read_bytes())
    data[len(data) // 2] ^= 0xFF
    masks.write_bytes(bytes(data))
    for command in (("validate", str(copy), "--no-fp16-islands"), ("verify", str(copy))):
        result = run_cli(*command)
        assert result.returncode == 1, command
        assert "Traceback" not in result.stderr, command
        assert "does not match its sha256" in result.stderr.strip().splitlines()[-1], command
