"""ONNX Runtime backend: CPU everywhere, CUDA when onnxruntime-gpu and a GPU are present."""

from __future__ import annotations

import numpy as np

from serving.backends import Backend, BackendUnavailableError
from serving.bundle import Bundle
from serving.manifest import Artifact


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, bundle: Bundle, artifact: Artifact, device: str = "auto", threads: int | None = None):
        super().__init__(bundle, artifact)
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailableError("onnxruntime is not installed") from None
        available = ort.get_available_providers()
        if artifact.device == "cpu":  # an int8 graph: its kernels are the CPU provider's
            if device == "cuda":
                raise BackendUnavailableError(f"{artifact.name} runs on the CPU only")
            available = [p for p in available if p != "CUDAExecutionProvider"]
        if device == "cuda" and "CUDAExecutionProvider" not in available:
            raise BackendUnavailableError("onnxruntime has no CUDA execution provider here")
        use_cuda = device in ("auto", "cuda") and "CUDAExecutionProvider" in available
        if use_cuda:
            preload_cuda_libraries(ort)
        # TF32 off: the artifact is fp32 and was validated under the fp32 limits (the engine route clears TF32 too).
        cuda = ("CUDAExecutionProvider", {"use_tf32": "0"})
        providers = [cuda, "CPUExecutionProvider"] if use_cuda else ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(bundle.path(artifact.main)), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise BackendUnavailableError(f"onnxruntime cannot load {artifact.file}: {exc}") from None
        self.device = "cuda" if "CUDAExecutionProvider" in self.session.get_providers() else "cpu"
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: batch})[0]

    def close(self) -> None:
        self.session = None


def preload_cuda_libraries(ort) -> None:
    """Load the CUDA 12 and cuDNN 9 libraries of the nvidia-*-cu12 wheels before the CUDA provider needs them.

    The serving image has no system CUDA: onnxruntime-gpu's [cuda,cudnn] extras
    install the libraries as wheels, which the dynamic loader does not search.
    onnxruntime >= 1.21 documents ``preload_dlls()`` for this; without a GPU
    the CUDA provider still fails to start and the session runs on the CPU.
    """
    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls(directory="")
