"""TensorRT backend: a prebuilt fp16 plan run by the TensorRT runtime, without torch.

The lean runtime (``tensorrt_lean``, ~46 MB) is preferred; the full
``tensorrt`` package is accepted for plans it can open (not version-compatible
ones: this project's plans exclude the lean runtime, and only a lean runtime of
their version opens them, ``tensorrt_target``). Device memory comes from the CUDA runtime
bindings (cuda-python). Buffers are allocated once, for the artifact's
largest batch; each call copies in, runs on the backend's own stream and
copies out. Each batch size gets its own execution context, its input shape
set once (all contexts share one scratch block: they run one at a time).
The first call at a batch size (the warm-up's) runs the engine plainly, which
does TensorRT's deferred set-up, then captures that context's enqueue as a CUDA
graph, uploaded at once; later calls replay it, so each call runs the engine
once. A graph is never replayed on a context whose shape changed since the
capture (set INSPYRENET_TRT_CUDA_GRAPHS=0 to turn graphs off). The seconds of
the first runs and of the captures are the warm-up's parts in the start-up
phases (``startup_phases``).

Before the plan is deserialised, the manifest's target (compute capability,
TensorRT version, compatibility flags) is compared with this machine; a
mismatch raises BackendUnavailableError with the reason, so ``auto`` falls back.
"""

from __future__ import annotations

import ctypes
import logging
import os
import time
from typing import Any

import numpy as np

from serving.backends import Backend, BackendUnavailableError
from serving.backends.tensorrt_target import Machine, target_problem
from serving.bundle import Bundle
from serving.manifest import Artifact

log = logging.getLogger(__name__)

RUNTIMES = ("tensorrt_lean", "tensorrt")


def import_tensorrt():
    """(module, name) of the first TensorRT runtime that imports."""
    import importlib

    problems = []
    for name in RUNTIMES:
        try:
            return importlib.import_module(name), name
        except ImportError as exc:
            problems.append(f"{name}: {exc}")
    raise BackendUnavailableError("no TensorRT runtime is installed (" + "; ".join(problems) + ")")


def import_cudart():
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python before 12.6
        except ImportError:
            raise BackendUnavailableError(
                "the CUDA runtime bindings (cuda-python / cuda-bindings) are not installed"
            ) from None
    return cudart


def gpu_identity(cudart, device: int = 0) -> tuple[tuple[int, int] | None, str]:
    """(compute capability, name) of ``device``, or (None, why) when CUDA has no usable GPU."""
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or count == 0:
        return None, f"no CUDA GPU ({getattr(err, 'name', err)})"
    attr = cudart.cudaDeviceAttr
    _, major = cudart.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMajor, device)
    _, minor = cudart.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMinor, device)
    _, props = cudart.cudaGetDeviceProperties(device)
    name = props.name.decode(errors="replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
    return (int(major), int(minor)), name


def probe(artifact: Artifact):
    """(tensorrt module, runtime name, cudart, machine, problem) for ``artifact`` on this machine."""
    trt, runtime_name = import_tensorrt()
    cudart = import_cudart()
    cc, gpu_name = gpu_identity(cudart)
    machine = Machine(runtime_name, str(trt.__version__), cc, gpu_name if cc else "")
    return trt, runtime_name, cudart, target_problem(artifact.target or {}, machine)


def machine_problem(artifact: Artifact) -> str | None:
    """Why this machine cannot run the engine (runtime, bindings, GPU, target), or None."""
    try:
        return probe(artifact)[3]
    except BackendUnavailableError as exc:
        return str(exc)


class ShapeContext:
    """An execution context fixed to one batch size, and the CUDA graph captured on it.

    A captured graph belongs to the shapes and state of the context it was
    captured on, so a context's input shape is set once, when it is made, and
    never changed: each batch size the backend meets gets its own context.
    """

    def __init__(self, context, batch: int, graph=None):
        self.context = context
        self.batch = batch
        self.graph = graph


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, bundle: Bundle, artifact: Artifact, device: str = "auto", threads: int | None = None):
        super().__init__(bundle, artifact)
        if device == "cpu":
            raise BackendUnavailableError("TensorRT runs on a CUDA GPU, and the cpu device was asked for")
        trt, runtime_name, cudart, problem = probe(artifact)
        self._cudart = cudart
        if problem:
            raise BackendUnavailableError(problem)
        self._trt = trt
        self.device = "cuda"
        self.runtime_name = runtime_name
        self._buffers: list[int] = []
        self._host: list[int] = []
        self._contexts: dict[int, ShapeContext] = {}
        self._use_graphs = os.environ.get("INSPYRENET_TRT_CUDA_GRAPHS", "1") != "0"
        self.stream: Any = None
        self._check(cudart.cudaSetDevice(0), "select the GPU")

        self._logger = trt.Logger(trt.Logger.ERROR)  # lives as long as the runtime that logs to it
        self.runtime = trt.Runtime(self._logger)
        if hasattr(self.runtime, "engine_host_code_allowed"):  # the lean and the full runtime both have it
            # Version-compatible plans may carry host code; the bundle's sha256 was verified before this point.
            self.runtime.engine_host_code_allowed = True
        self.engine = self.runtime.deserialize_cuda_engine(bundle.path(artifact.main).read_bytes())
        if self.engine is None:
            raise BackendUnavailableError(
                f"TensorRT could not deserialise {artifact.file} (corrupt or incompatible plan)"
            )
        self.input_name, self.output_name = self._io_names(artifact)
        self._allocate()
        self._shape_context(1)  # a context that cannot be made fails the load, not the first request

    @staticmethod
    def _io_names(artifact: Artifact) -> tuple[str, str]:
        io = artifact.io or {}
        return io.get("input", {}).get("name", "image"), io.get("output", {}).get("name", "mask")

    def _check(self, result, what: str):
        err = result[0] if isinstance(result, tuple) else result
        if err != self._cudart.cudaError_t.cudaSuccess:
            raise BackendUnavailableError(f"CUDA failed to {what}: {getattr(err, 'name', err)}")
        return result[1] if isinstance(result, tuple) and len(result) > 1 else None

    def _allocate(self) -> None:
        """The buffers every context shares: input, output, pinned host copies, and one scratch block.

        The contexts run one at a time on the backend's one stream, so they share
        the engine's scratch memory (sized for its largest profile) instead of each
        holding its own.
        """
        cudart = self._cudart
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        if sorted(names) != sorted([self.input_name, self.output_name]):
            raise BackendUnavailableError(
                f"engine I/O tensors {names} do not match the manifest ({self.input_name}, {self.output_name})"
            )
        height, width = self.bundle.input_size
        self.in_shape = (self.max_batch, 3, height, width)
        self.out_shape = (self.max_batch, 1, height, width)
        self.in_bytes = int(np.prod(self.in_shape)) * 4
        self.out_bytes = int(np.prod(self.out_shape)) * 4
        self.stream = self._check(cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking), "create a stream")
        self.d_in = self._device(self.in_bytes)
        self.d_out = self._device(self.out_bytes)
        self.scratch_bytes = int(self.engine.device_memory_size_v2)
        self.d_scratch = self._device(max(self.scratch_bytes, 1))
        self.h_in_ptr, self.h_in = self._pinned(self.in_shape)
        self.h_out_ptr, self.h_out = self._pinned(self.out_shape)

    def _shape_context(self, n: int) -> ShapeContext:
        """The context for batch size ``n``, made on first use: shape, buffers and scratch set once."""
        found = self._contexts.get(n)
        if found is not None:
            return found
        strategy = self._trt.ExecutionContextAllocationStrategy.USER_MANAGED
        context = self.engine.create_execution_context(strategy)
        if context is None:
            raise BackendUnavailableError("TensorRT could not create an execution context")
        context.set_device_memory(self.d_scratch, self.scratch_bytes)
        height, width = self.bundle.input_size
        if not context.set_input_shape(self.input_name, (n, 3, height, width)):
            raise ValueError(f"the engine does not accept a batch of {n}")
        for name, pointer in ((self.input_name, self.d_in), (self.output_name, self.d_out)):
            if not context.set_tensor_address(name, pointer):
                raise BackendUnavailableError(f"TensorRT refused the device buffer of tensor {name!r}")
        self._contexts[n] = ShapeContext(context, n)
        return self._contexts[n]

    def _device(self, nbytes: int) -> int:
        pointer = int(self._check(self._cudart.cudaMalloc(nbytes), f"allocate {nbytes} bytes on the GPU"))
        self._buffers.append(pointer)
        return pointer

    def _pinned(self, shape: tuple[int, ...]) -> tuple[int, np.ndarray]:
        count = int(np.prod(shape))
        pointer = int(self._check(self._cudart.cudaMallocHost(count * 4), "allocate pinned host memory"))
        self._host.append(pointer)
        array = np.ctypeslib.as_array((ctypes.c_float * count).from_address(pointer)).reshape(shape)
        return pointer, array

    def _enqueue(self, shaped: ShapeContext) -> None:
        if shaped.graph is None:
            self._execute(shaped)
            return
        self._check(self._cudart.cudaGraphLaunch(shaped.graph, self.stream), "launch the CUDA graph")

    def _execute(self, shaped: ShapeContext) -> None:
        if not shaped.context.execute_async_v3(int(self.stream)):
            raise RuntimeError(f"TensorRT execution failed at batch {shaped.batch}")

    def _capture(self, shaped: ShapeContext):
        """Capture one enqueue of ``shaped``'s context as a CUDA graph; None (and graphs off) when that fails.

        The capture is always ended and the captured graph always destroyed (only
        its instantiated executable is kept), whichever step fails.
        """
        cudart = self._cudart
        capturing, graph, executable = False, None, None
        try:
            self._check(cudart.cudaStreamSynchronize(self.stream), "synchronise")
            mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
            self._check(cudart.cudaStreamBeginCapture(self.stream, mode), "begin graph capture")
            capturing = True
            self._execute(shaped)
            capturing = False
            graph = self._check(cudart.cudaStreamEndCapture(self.stream), "end graph capture")
            executable = self._check(cudart.cudaGraphInstantiate(graph, 0), "instantiate the graph")
            self._check(cudart.cudaGraphUpload(executable, self.stream), "upload the graph")  # not at 1st launch
        except (BackendUnavailableError, RuntimeError) as exc:
            if capturing:  # execution failed inside the capture: end it, drop whatever was captured
                _, partial = cudart.cudaStreamEndCapture(self.stream)
                if partial:
                    cudart.cudaGraphDestroy(partial)
            log.warning("CUDA graph capture failed at batch %d (%s); running without graphs", shaped.batch, exc)
            self._use_graphs = False
            return None
        finally:
            if graph is not None:
                cudart.cudaGraphDestroy(graph)
        return executable

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """One call: the engine runs once. The first call at a batch size (the warm-up's) runs it plainly,
        which does TensorRT's deferred set-up (not capturable) and gives this call's answer, then captures
        the graph the next calls replay."""
        cudart = self._cudart
        n = len(batch)
        start = time.perf_counter()
        shaped = self._shape_context(n)
        first = shaped.graph is None and self._use_graphs
        in_bytes, out_bytes = self.in_bytes // self.max_batch * n, self.out_bytes // self.max_batch * n
        self.h_in[:n] = batch
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(cudart.cudaMemcpyAsync(self.d_in, self.h_in_ptr, in_bytes, h2d, self.stream), "copy in")
        self._enqueue(shaped)
        self._check(cudart.cudaMemcpyAsync(self.h_out_ptr, self.d_out, out_bytes, d2h, self.stream), "copy out")
        self._check(cudart.cudaStreamSynchronize(self.stream), "synchronise")
        out = self.h_out[:n].copy()
        if first:
            captured = time.perf_counter()
            self._add_phase("first_runs", captured - start)
            shaped.graph = self._capture(shaped)
            self._add_phase("graph_captures", time.perf_counter() - captured)
        return out

    def _add_phase(self, name: str, seconds: float) -> None:
        self.startup_phases[name] = self.startup_phases.get(name, 0.0) + seconds

    def describe(self) -> dict:
        return {
            **super().describe(),
            "runtime": self.runtime_name,
            "cuda_graphs": self._use_graphs,
            "contexts": sorted(self._contexts),
        }

    def close(self) -> None:
        cudart = self._cudart
        for shaped in self._contexts.values():
            if shaped.graph is not None:
                cudart.cudaGraphExecDestroy(shaped.graph)
        self._contexts.clear()
        self.engine = None
        for pointer in self._buffers:
            cudart.cudaFree(pointer)
        for pointer in self._host:
            cudart.cudaFreeHost(pointer)
        self._buffers, self._host = [], []
        if self.stream is not None:
            cudart.cudaStreamDestroy(self.stream)
            self.stream = None
