"""Backends: one small interface over TensorRT, TorchScript and ONNX Runtime artifacts.

Each backend module imports its runtime lazily, so importing this package
costs nothing and never imports torch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from serving.bundle import Artifact, Bundle


class BackendUnavailable(Exception):
    """This machine cannot run the artifact; the message says why."""


class Backend(ABC):
    """Runs the model: (N, 3, H, W) float32 normalised images -> (N, 1, H, W) float32 masks."""

    name: str = ""

    def __init__(self, bundle: Bundle, artifact: Artifact):
        self.bundle = bundle
        self.artifact = artifact
        self.max_batch = max(1, artifact.max_batch)
        self.device = "cpu"

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run any number of samples, in chunks the artifact accepts."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.ndim != 4 or batch.shape[1:] != (3, *self.bundle.input_size):
            raise ValueError(f"expected (N, 3, {self.bundle.input_size}) input, got {batch.shape}")
        chunks = [self._run(batch[i : i + self.max_batch]) for i in range(0, len(batch), self.max_batch)]
        return np.concatenate(chunks) if len(chunks) > 1 else chunks[0]

    @abstractmethod
    def _run(self, batch: np.ndarray) -> np.ndarray: ...

    def describe(self) -> dict:
        return {
            "backend": self.name,
            "device": self.device,
            "precision": self.artifact.precision,
            "file": self.artifact.file,
            "max_batch": self.max_batch,
        }

    def close(self) -> None:
        """Release the runtime's resources."""


RUNTIME_MODULES = {
    "onnxruntime": ("onnxruntime",),
    "torchscript": ("torch",),
    "tensorrt": ("tensorrt_lean", "tensorrt"),
}


def runtime_missing(artifact: Artifact) -> str | None:
    """Why this machine cannot even try the artifact (its runtime is not installed), without importing it."""
    import importlib.util

    modules = RUNTIME_MODULES.get(artifact.backend)
    if modules is None:
        return f"no backend implementation for {artifact.backend!r} artifacts"
    if not any(importlib.util.find_spec(name) is not None for name in modules):
        return f"{' or '.join(modules)} is not installed"
    return None


def cannot_run(artifact: Artifact) -> str | None:
    """Why this machine cannot run the artifact, as far as can be told before loading it.

    For TensorRT that includes the engine's target against this GPU and
    runtime (no CUDA context is created, the plan is not read).
    """
    reason = runtime_missing(artifact)
    if reason is None and artifact.backend == "tensorrt":
        from serving.backends.tensorrt import machine_problem

        reason = machine_problem(artifact)
    return reason


def import_runtime(artifact: Artifact) -> None:
    """Import the artifact's runtime (the slow part of loading a backend, timed on its own)."""
    import importlib

    for name in RUNTIME_MODULES.get(artifact.backend, ()):
        try:
            importlib.import_module(name)
            return
        except ImportError:
            continue


def open_backend(bundle: Bundle, artifact: Artifact, device: str = "auto", threads: int | None = None) -> Backend:
    """Load ``artifact`` with its runtime on ``device`` (auto | cpu | cuda).

    ``threads``: CPU threads one inference may use (ONNX Runtime's intra-op
    threads; None: the runtime's default, every core). The other runtimes
    ignore it.

    Raises BackendUnavailable when this machine lacks the runtime or device.
    The caller verifies the artifact's files first.
    """
    if artifact.backend == "onnxruntime":
        from serving.backends.onnx_runtime import OnnxRuntimeBackend as cls
    elif artifact.backend == "torchscript":
        from serving.backends.torchscript import TorchScriptBackend as cls
    elif artifact.backend == "tensorrt":
        from serving.backends.tensorrt import TensorRTBackend as cls
    else:
        raise BackendUnavailable(f"no backend implementation for {artifact.backend!r} artifacts")
    if artifact.backend == "onnxruntime":
        return cls(bundle, artifact, device, threads=threads)
    return cls(bundle, artifact, device)
