"""One registry of backends (serving/backends/__init__.py): what settings, the CLI and selection offer."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from serving.backends import (
    ARTIFACT_NAMES,
    BACKEND_NAMES,
    INT8_LABEL,
    REGISTRY,
    BackendUnavailableError,
    open_backend,
    run_problem,
    selection,
)
from serving.backends.selection import SelectionError, candidates
from serving.bundle import load_bundle
from serving.manifest import ParityResult
from serving.settings import BACKEND_CHOICES, Settings, SettingsError
from tests.toy_bundle import build_toy_bundle


def test_every_name_the_settings_accept_comes_from_the_registry():
    assert BACKEND_NAMES == ("tensorrt", "onnxruntime", "torchscript")  # auto's order: fastest first
    from serving.manifest import BACKENDS

    assert BACKENDS == BACKEND_NAMES  # what a manifest may name is what the registry serves
    assert BACKEND_CHOICES == ("auto", *BACKEND_NAMES, INT8_LABEL) == ("auto", *ARTIFACT_NAMES)
    with pytest.raises(
        SettingsError, match="backend must be one of auto, tensorrt, onnxruntime, torchscript, onnxruntime-int8"
    ):
        Settings(backend="openvino").check()
    assert all(spec.load_class().__name__ for spec in REGISTRY if spec.runtime_problem() is None)


def test_an_artifact_of_an_unknown_backend_is_refused_in_one_line(tmp_path):
    bundle = load_bundle(build_toy_bundle(tmp_path / "toy"))
    odd = bundle.artifacts[0].model_copy(update={"backend": "openvino"})
    assert run_problem(odd) == "no backend implementation for 'openvino' artifacts"
    with pytest.raises(BackendUnavailableError, match="no backend implementation for 'openvino'"):
        open_backend(bundle, odd)


def test_the_registry_opens_the_toy_onnx_model_with_the_real_shapes(tmp_path):
    bundle = load_bundle(build_toy_bundle(tmp_path / "toy"))
    ordered, skipped = candidates(bundle, "auto")
    assert [a.backend for a in ordered] == ["onnxruntime"]
    assert not skipped
    backend = open_backend(bundle, ordered[0], device="cpu", threads=1)
    masks = backend.infer(np.random.default_rng(0).normal(size=(5, 3, 384, 384)).astype(np.float32))
    assert masks.shape == (5, 1, 384, 384)
    assert masks.min() == 0.0
    assert masks.max() > 0.99  # 5 > max_batch 4: chunks


def with_int8(bundle, parity: str | None):
    """The toy bundle plus an int8 ONNX artifact (the same file) whose parity row says ``parity``."""
    fp32 = bundle.artifacts[0]
    int8 = fp32.model_copy(
        update={"label": INT8_LABEL, "precision": "int8", "device": "cpu", "optional": True, "parity": None}
    )
    if parity is not None:
        int8.parity = ParityResult(status=parity, summary=f"toy {parity}")
    fp32.parity = ParityResult(status="passed", summary="toy passed")
    return dataclasses.replace(bundle, artifacts=(fp32, int8))


def test_auto_serves_int8_on_a_cpu_runtime_only_after_it_passed(tmp_path, monkeypatch):
    bundle = load_bundle(build_toy_bundle(tmp_path / "toy"))
    monkeypatch.setattr(selection, "onnxruntime_has_gpu", lambda: False)
    ordered, skipped = candidates(with_int8(bundle, "passed"), "auto")
    assert [a.name for a in ordered] == [INT8_LABEL, "onnxruntime"]
    assert not skipped
    for parity, why in (("failed", "failed parity at build time (toy failed)"), (None, "served only after")):
        ordered, skipped = candidates(with_int8(bundle, parity), "auto")
        assert [a.name for a in ordered] == ["onnxruntime"]
        assert len(skipped) == 1
        assert skipped[0].startswith(f"{INT8_LABEL}: {why}")
        with pytest.raises(SelectionError, match=f"the {INT8_LABEL} artifact .*refusing to serve it"):
            candidates(with_int8(bundle, parity), INT8_LABEL)
    # With onnxruntime-gpu the fp32 graph runs on CUDA: int8 (CPU kernels only) comes after it.
    monkeypatch.setattr(selection, "onnxruntime_has_gpu", lambda: True)
    ordered, _ = candidates(with_int8(bundle, "passed"), "auto")
    assert [a.name for a in ordered] == ["onnxruntime", INT8_LABEL]


def test_an_int8_artifact_is_asked_for_by_its_name_and_runs_on_the_cpu_only(tmp_path):
    bundle = with_int8(load_bundle(build_toy_bundle(tmp_path / "toy")), "passed")
    assert bundle.artifact(INT8_LABEL).precision == "int8"
    assert bundle.artifact("onnxruntime").precision == "fp32"
    backend = open_backend(bundle, bundle.artifact(INT8_LABEL), device="auto", threads=1)
    assert backend.device == "cpu"
    assert backend.describe()["artifact"] == INT8_LABEL
    with pytest.raises(BackendUnavailableError, match=f"{INT8_LABEL} runs on the CPU only"):
        open_backend(bundle, bundle.artifact(INT8_LABEL), device="cuda")


@pytest.mark.parametrize("status", ["pending", "failed"])
def test_a_bundle_whose_validation_did_not_pass_is_never_served_by_default(tmp_path, status):
    """An interrupted build leaves validation pending; a failed one says failed: neither is served, and the
    one line says how to finish it; the operator's opt-in (development) serves it."""
    from serving.backends.selection import prepare_for_install
    from serving.bundle import BundleError
    from serving.manifest import Validation

    bundle = load_bundle(build_toy_bundle(tmp_path / "toy"))
    bundle.manifest.validation = Validation(status=status, reason="2/12 images fail" if status == "failed" else None)
    expected = "inspyrenet validate" if status == "pending" else "failed its parity validation (2/12 images fail)"
    with pytest.raises(SelectionError, match="INSPYRENET_ALLOW_UNVALIDATED") as refused:
        candidates(bundle, "auto")
    assert expected in str(refused.value)
    with pytest.raises(SelectionError, match="never validated|failed its parity"):
        candidates(bundle, "onnxruntime")
    with pytest.raises(BundleError, match="never validated|failed its parity"):
        prepare_for_install(bundle, prune=True)
    assert (bundle.root / "model.onnx").is_file()  # refused before anything was pruned
    assert [a.name for a in candidates(bundle, "auto", allow_unvalidated=True)[0]] == ["onnxruntime"]
    bundle.manifest.validation = Validation(status="skipped", reason="--no-validate")
    assert [a.name for a in candidates(bundle, "auto")[0]] == ["onnxruntime"]  # an explicit --no-validate build
