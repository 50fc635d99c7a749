"""TorchScript backend (fp32, CPU or CUDA). The only serving path that imports torch."""

from __future__ import annotations

import warnings

import numpy as np

from serving.backends import Backend, BackendUnavailableError
from serving.bundle import Bundle
from serving.manifest import Artifact


class TorchScriptBackend(Backend):
    name = "torchscript"

    def __init__(self, bundle: Bundle, artifact: Artifact, device: str = "auto", threads: int | None = None):
        super().__init__(bundle, artifact)
        try:
            import torch
        except ImportError:
            raise BackendUnavailableError("torch is not installed") from None
        self.torch = torch
        has_cuda = torch.cuda.is_available()
        if device == "cuda" and not has_cuda:
            raise BackendUnavailableError("torch sees no CUDA device here")
        self.device = "cuda" if device in ("auto", "cuda") and has_cuda else "cpu"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated"
                self.module = torch.jit.load(str(bundle.path(artifact.main)), map_location=self.device).eval()
        except Exception as exc:  # torch.jit raises RuntimeError subclasses of many kinds
            raise BackendUnavailableError(f"torch cannot load {artifact.file}: {exc}") from None

    def _run(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            out = self.module(torch.from_numpy(batch).to(self.device))
        return out.float().cpu().numpy()

    def close(self) -> None:
        self.module = None
