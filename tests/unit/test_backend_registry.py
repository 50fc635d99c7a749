"""One registry of backends (serving/backends/__init__.py): what settings, the CLI and selection offer."""

from __future__ import annotations

import numpy as np
import pytest

from serving.backends import BACKEND_NAMES, REGISTRY, BackendUnavailable, open_backend, run_problem
from serving.backends.selection import candidates
from serving.bundle import load_bundle
from serving.http.settings import BACKEND_CHOICES, Settings, SettingsError
from tests.toy_bundle import build_toy_bundle


def test_every_name_the_settings_accept_comes_from_the_registry():
    assert BACKEND_NAMES == ("tensorrt", "onnxruntime", "torchscript")  # auto's order: fastest first
    assert BACKEND_CHOICES == ("auto", *BACKEND_NAMES)
    with pytest.raises(SettingsError, match="backend must be one of auto, tensorrt, onnxruntime, torchscript"):
        Settings(backend="openvino").check()
    assert all(spec.load_class().__name__ for spec in REGISTRY if spec.runtime_problem() is None)


def test_an_artifact_of_an_unknown_backend_is_refused_in_one_line(tmp_path):
    bundle = load_bundle(build_toy_bundle(tmp_path / "toy"))
    odd = bundle.artifacts[0].model_copy(update={"backend": "openvino"})
    assert run_problem(odd) == "no backend implementation for 'openvino' artifacts"
    with pytest.raises(BackendUnavailable, match="no backend implementation for 'openvino'"):
        open_backend(bundle, odd)


def test_the_registry_opens_the_toy_onnx_model_with_the_real_shapes(tmp_path):
    bundle = load_bundle(build_toy_bundle(tmp_path / "toy"))
    ordered, skipped = candidates(bundle, "auto")
    assert [a.backend for a in ordered] == ["onnxruntime"] and not skipped
    backend = open_backend(bundle, ordered[0], device="cpu", threads=1)
    masks = backend.infer(np.random.default_rng(0).normal(size=(5, 3, 384, 384)).astype(np.float32))
    assert masks.shape == (5, 1, 384, 384) and masks.min() == 0.0 and masks.max() > 0.99  # 5 > max_batch 4: chunks
