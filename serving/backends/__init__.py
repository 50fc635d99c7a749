"""Backends: one small interface over TensorRT, TorchScript and ONNX Runtime artifacts.

Each backend module imports its runtime lazily, so importing this package
costs nothing and never imports torch.
"""

from __future__ import annotations

import importlib
import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from serving.bundle import Bundle
from serving.errors import UserError
from serving.manifest import Artifact


class BackendUnavailableError(UserError):
    """This machine cannot run the artifact; the message says why."""


class Backend(ABC):
    """Runs the model: (N, 3, H, W) float32 normalised images -> (N, 1, H, W) float32 masks."""

    name: str = ""

    def __init__(self, bundle: Bundle, artifact: Artifact, device: str = "auto", threads: int | None = None):
        """Subclasses load the artifact on ``device``; ``threads`` caps one inference's CPU threads where the
        runtime has such a setting."""
        self.bundle = bundle
        self.artifact = artifact
        self.max_batch = max(1, artifact.max_batch)
        self.device = "cpu"
        # Parts of the warm-up a backend times itself (seconds by name), reported as start-up phases.
        self.startup_phases: dict[str, float] = {}

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
            "artifact": self.artifact.name,
            "device": self.device,
            "precision": self.artifact.precision,
            "file": self.artifact.file,
            "max_batch": self.max_batch,
        }

    def close(self) -> None:  # noqa: B027 - optional: only runtimes that hold resources override it
        """Release the runtime's resources."""


@dataclass(frozen=True)
class BackendSpec:
    """One backend: the artifacts it runs, the runtime it needs, where its class lives."""

    name: str
    runtime_modules: tuple[str, ...]  # any one of them installed is enough
    implementation: str  # "module:Class", imported only when an artifact is opened
    machine_check: str | None = None  # "module:function(artifact) -> why not, or None", before loading

    def load_class(self) -> type[Backend]:
        module, _, attribute = self.implementation.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def runtime_problem(self) -> str | None:
        if not any(importlib.util.find_spec(name) is not None for name in self.runtime_modules):
            return f"{' or '.join(self.runtime_modules)} is not installed"
        return None

    def machine_problem(self, artifact: Artifact) -> str | None:
        if self.machine_check is None:
            return None
        module, _, attribute = self.machine_check.partition(":")
        return getattr(importlib.import_module(module), attribute)(artifact)


# Every backend, fastest first: the order ``auto`` tries a bundle's artifacts in.
REGISTRY: tuple[BackendSpec, ...] = (
    BackendSpec(
        "tensorrt",
        ("tensorrt_lean", "tensorrt"),
        "serving.backends.tensorrt:TensorRTBackend",
        machine_check="serving.backends.tensorrt:machine_problem",
    ),
    BackendSpec("onnxruntime", ("onnxruntime",), "serving.backends.onnx_runtime:OnnxRuntimeBackend"),
    BackendSpec("torchscript", ("torch",), "serving.backends.torchscript:TorchScriptBackend"),
)
BACKEND_NAMES: tuple[str, ...] = tuple(spec.name for spec in REGISTRY)
# An artifact is asked for by its name: its backend, or its label when a backend has a second servable one.
INT8_LABEL = "onnxruntime-int8"  # the int8 ONNX graph for ONNX Runtime's CPU provider
ARTIFACT_NAMES: tuple[str, ...] = (*BACKEND_NAMES, INT8_LABEL)


def spec_for(name: str) -> BackendSpec | None:
    return next((spec for spec in REGISTRY if spec.name == name), None)


def preference(name: str) -> int:
    """Rank of a backend in ``auto``'s order (unknown names last)."""
    return BACKEND_NAMES.index(name) if name in BACKEND_NAMES else len(BACKEND_NAMES)


def runtime_problem(artifact: Artifact) -> str | None:
    """Why this machine cannot even try the artifact (its runtime is not installed), without importing it."""
    spec = spec_for(artifact.backend)
    if spec is None:
        return f"no backend implementation for {artifact.backend!r} artifacts"
    return spec.runtime_problem()


def run_problem(artifact: Artifact) -> str | None:
    """Why this machine cannot run the artifact, as far as can be told before loading it.

    For TensorRT that includes the engine's target against this GPU and
    runtime (no CUDA context is created, the plan is not read).
    """
    spec = spec_for(artifact.backend)
    if spec is None:
        return f"no backend implementation for {artifact.backend!r} artifacts"
    return spec.runtime_problem() or spec.machine_problem(artifact)


def import_runtime(artifact: Artifact) -> None:
    """Import the artifact's runtime (the slow part of loading a backend, timed on its own)."""
    spec = spec_for(artifact.backend)
    for name in spec.runtime_modules if spec else ():
        try:
            importlib.import_module(name)
            return
        except ImportError:
            continue


def open_backend(bundle: Bundle, artifact: Artifact, device: str = "auto", threads: int | None = None) -> Backend:
    """Load ``artifact`` with its runtime on ``device`` (auto | cpu | cuda).

    ``threads``: CPU threads one inference may use (ONNX Runtime's intra-op
    threads; None: the runtime's default, every core). Runtimes without such a
    setting ignore it.

    Raises BackendUnavailableError when this machine lacks the runtime or device.
    The caller verifies the artifact's files first.
    """
    spec = spec_for(artifact.backend)
    if spec is None:
        raise BackendUnavailableError(f"no backend implementation for {artifact.backend!r} artifacts")
    return spec.load_class()(bundle, artifact, device, threads=threads)
