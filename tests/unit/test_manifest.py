"""The typed bundle contract (serving/manifest.py): what the writer writes is what every reader reads."""

from __future__ import annotations

import json

import pytest

from serving.bundle import BundleError, load_bundle, read_manifest
from tests.toy_bundle import build_toy_bundle


@pytest.fixture
def bundle_dir(tmp_path):
    return build_toy_bundle(tmp_path / "toy")


def edit_manifest(bundle_dir, change) -> None:
    path = bundle_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_a_manifest_read_and_written_again_is_unchanged(bundle_dir):
    raw = json.loads((bundle_dir / "manifest.json").read_text())
    raw["artifacts"][0]["builder_detail"] = {"kept": True}  # a key this reader does not name
    (bundle_dir / "manifest.json").write_text(json.dumps(raw))
    manifest = read_manifest(bundle_dir)
    assert manifest.to_json() == raw
    assert "parity" not in manifest.to_json()["artifacts"][0]  # never set: left out, not written as null


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda m: m.update(schema_version=2), "schema version 2, this reader understands 1"),
        (lambda m: m.update(kind="something-else"), "not an InSPyReNet bundle manifest"),
        (lambda m: m["artifacts"][0].update(bytes="many"), "artifacts.0.bytes"),
        (lambda m: m["artifacts"][0].update(sha256="not-a-digest"), "artifacts.0.sha256"),
        (lambda m: m["input"].update(shape=[1, 2]), "input.shape"),
        (lambda m: m.pop("checkpoint"), "checkpoint: field required"),
        (lambda m: m["artifacts"][0].update(backend="onnxruntimex"), "unknown backend 'onnxruntimex'"),
    ],
)
def test_a_bad_manifest_is_refused_in_one_line_that_names_the_field(bundle_dir, change, words):
    edit_manifest(bundle_dir, change)
    with pytest.raises(BundleError) as error:
        load_bundle(bundle_dir)
    message = str(error.value)
    assert words in message
    assert "\n" not in message
    assert str(bundle_dir / "manifest.json") in message


def test_the_readers_see_typed_fields(bundle_dir):
    bundle = load_bundle(bundle_dir)
    artifact = bundle.artifact("onnxruntime")
    assert bundle.input_size == (384, 384)
    assert bundle.mode == "fast"
    assert artifact.servable
    assert artifact.name == "onnxruntime"
    assert artifact.max_batch == 4
    assert artifact.total_bytes == (bundle_dir / "model.onnx").stat().st_size
    assert bundle.manifest.version_key == "fast-000000000000-20260101T000000Z"
